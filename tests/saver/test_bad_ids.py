"""Ids every store can keep, and typed errors for ids no store can keep.

A thread id or namespace that is not valid Unicode text (a lone surrogate)
and a checkpoint id with a NUL character raise the typed error before anything
is written; any other text (NUL in a thread id or namespace, emoji, `:` or
`{}`) makes a correct round trip, `list(None)` included. Every case runs on
every store, sync and async.
"""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import (
    ContextEngineSaver,
    InvalidConfigError,
    InvalidNamespaceError,
    InvalidThreadIdError,
)
from tests.conftest import make_saver, make_sync_saver
from tests.saver.test_bad_input import run_sync

LONE = "\ud800"


def cfg(thread: str, ns: str = "", cid: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if cid is not None:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def checkpoint(cid: str | None = None, value: Any = 1) -> Any:
    cp = empty_checkpoint()
    if cid is not None:
        cp["id"] = cid
    cp["channel_values"] = {"v": value}
    cp["channel_versions"] = {"v": "1"}
    return cp


async def run(saver: ContextEngineSaver, use_async: bool, name: str, *args: Any) -> Any:
    """Call the sync method, or await the async one (listings consumed)."""
    if name == "list":
        if use_async:
            return [t async for t in saver.alist(*args)]
        return list(saver.list(*args))
    if use_async:
        return await getattr(saver, "a" + name)(*args)
    return getattr(saver, name)(*args)


def bad_calls(thread: str, ns: str, cid: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Every saver call that takes a thread id, namespace or checkpoint id."""
    return [
        ("put", (cfg(thread, ns), checkpoint(cid), {}, {"v": "1"})),
        ("put_writes", (cfg(thread, ns, cid or "c1"), [("v", 2)], "task")),
        ("get_tuple", (cfg(thread, ns, cid),)),
        ("list", (cfg(thread, ns, cid),)),
    ]


CASES = {
    "lone surrogate thread id": (LONE, "", None, InvalidThreadIdError),
    "lone surrogate namespace": ("t", LONE, None, InvalidNamespaceError),
    "NUL in checkpoint id": ("t", "", "c\x001", InvalidConfigError),
    "lone surrogate checkpoint id": ("t", "", f"c{LONE}", InvalidConfigError),
}


async def _unkeepable_id_raises(
    saver: ContextEngineSaver, use_async: bool, case: tuple[Any, ...]
) -> None:
    thread, ns, cid, error = case
    calls = bad_calls(thread, ns, cid)
    if thread == LONE:
        calls += [
            ("delete_thread", (thread,)),
            ("copy_thread", (thread, "t2")),
            ("copy_thread", ("t2", thread)),
            ("prune", ([thread],)),
        ]
    for name, args in calls:
        with pytest.raises(error):
            await run(saver, use_async, name, *args)
    assert await run(saver, use_async, "list", None) == []


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_an_id_no_store_can_keep_raises_before_anything_is_written_sync(
    sync_saver: ContextEngineSaver, case: tuple[Any, ...]
) -> None:
    run_sync(_unkeepable_id_raises(sync_saver, False, case))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_an_id_no_store_can_keep_raises_before_anything_is_written_async(
    saver: ContextEngineSaver, case: tuple[Any, ...]
) -> None:
    await _unkeepable_id_raises(saver, True, case)


GOOD = {
    "NUL in thread id": ("t\x00x", ""),
    "NUL in namespace": ("t", "n\x00s"),
    "emoji and marks": ("\U0001f9f5 thread", "ns\u00e9:{x}"),
    "surrogate pair as one character": ("\U00010000", "\U0010ffff"),
}


@pytest.mark.parametrize("ids", GOOD.values(), ids=GOOD.keys())
def test_any_other_text_makes_a_correct_round_trip_sync(
    sync_saver: ContextEngineSaver, ids: tuple[str, str]
) -> None:
    run_sync(_round_trip(sync_saver, False, ids))


@pytest.mark.parametrize("ids", GOOD.values(), ids=GOOD.keys())
async def test_any_other_text_makes_a_correct_round_trip_async(
    saver: ContextEngineSaver, ids: tuple[str, str]
) -> None:
    await _round_trip(saver, True, ids)


async def _round_trip(
    saver: ContextEngineSaver, use_async: bool, ids: tuple[str, str]
) -> None:
    thread, ns = ids
    stored = await run(
        saver, use_async, "put", cfg(thread, ns), checkpoint(None, "x"), {}, {"v": "1"}
    )
    await run(saver, use_async, "put_writes", stored, [("v", 2)], "task")
    got = await run(saver, use_async, "get_tuple", cfg(thread, ns))
    assert got is not None
    assert got.config == stored
    assert got.checkpoint["channel_values"] == {"v": "x"}
    assert [w[1:] for w in got.pending_writes] == [("v", 2)]
    listed = await run(saver, use_async, "list", None)
    assert [t.config for t in listed] == [stored]
    every_ns = {"configurable": {"thread_id": thread}}
    assert [t.config for t in await run(saver, use_async, "list", every_ns)] == [stored]
    await run(saver, use_async, "delete_thread", thread)
    assert await run(saver, use_async, "list", None) == []


async def _lone_user_id_raises(saver: ContextEngineSaver, use_async: bool) -> None:
    """With session tracking, a user id (config or metadata) no store can keep
    raises before the checkpoint or the writes are stored."""
    bad_conf = cfg("u") | {
        "configurable": {**cfg("u")["configurable"], "user_id": LONE}
    }
    with pytest.raises(InvalidConfigError, match="user_id"):
        await run(saver, use_async, "put", bad_conf, checkpoint(), {}, {"v": "1"})
    with pytest.raises(InvalidConfigError, match="user_id"):
        await run(
            saver, use_async, "put", cfg("u"), checkpoint(), {"user_id": LONE}, {}
        )
    assert await run(saver, use_async, "list", None) == []
    stored = await run(saver, use_async, "put", cfg("u"), checkpoint(), {}, {"v": "1"})
    bad_writes = {**stored, "configurable": {**stored["configurable"], "user_id": LONE}}
    with pytest.raises(InvalidConfigError, match="user_id"):
        await run(saver, use_async, "put_writes", bad_writes, [("__error__", "x")], "t")
    got = await run(saver, use_async, "get_tuple", stored)
    assert got is not None and got.pending_writes == []


def test_a_user_id_no_store_can_keep_raises_before_anything_is_written_sync(
    store_name: str,
) -> None:
    with make_sync_saver(store_name, track_sessions=True) as saver:
        run_sync(_lone_user_id_raises(saver, False))


async def test_a_user_id_no_store_can_keep_raises_before_anything_is_written_async(
    store_name: str,
) -> None:
    async with make_saver(store_name, track_sessions=True) as saver:
        await _lone_user_id_raises(saver, True)
