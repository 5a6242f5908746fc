"""Thread listing: newest activity first, metadata filters, complete and stable
pages, deletes and copies, thousands of threads, cost per thread visited, and
threads that only the ClickHouse archive still holds."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from aiecs_checkpoint import (
    ContextEngineSaver,
    InvalidConfigError,
    InvalidCursorError,
    ThreadInfo,
)
from aiecs_checkpoint.saver.threads import encode_cursor
from aiecs_checkpoint.stores import thread_model as model
from aiecs_checkpoint.stores.memory import checkpoints as memory_store
from tests.conftest import (
    _redis_param,
    archive_settings,
    engine_for,
    make_saver,
    make_sync_saver,
)
from tests.saver.test_serde import aes
from tests.servers import find_free_port
from tests.stores.clickhouse.test_archive import _forget_hot
from tests.stores.redis.test_redis import SendCounter


def cfg(thread: str, ns: str = "") -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}


def tick() -> None:
    """Let the clock move on, so the next write has a later activity time."""
    time.sleep(0.003)


def put(
    saver: ContextEngineSaver, thread: str, metadata: dict[str, Any], ns: str = ""
) -> dict[str, Any]:
    """One small checkpoint on top of the thread's latest in `ns`."""
    latest = saver.get_tuple(cfg(thread, ns))
    config = latest.config if latest is not None else cfg(thread, ns)
    return dict(saver.put(config, empty_checkpoint(), metadata, {}))


async def aput(
    saver: ContextEngineSaver, thread: str, metadata: dict[str, Any], ns: str = ""
) -> dict[str, Any]:
    latest = await saver.aget_tuple(cfg(thread, ns))
    config = latest.config if latest is not None else cfg(thread, ns)
    return dict(await saver.aput(config, empty_checkpoint(), metadata, {}))


def walk(
    saver: ContextEngineSaver, limit: int, filter: dict[str, Any] | None = None
) -> list[list[ThreadInfo]]:
    """Every page, following the cursor from the top."""
    pages: list[list[ThreadInfo]] = []
    before: ThreadInfo | None = None
    while True:
        page = saver.list_threads(filter, limit=limit, before=before)
        if not page:
            return pages
        pages.append(page)
        before = page[-1]


async def awalk(
    saver: ContextEngineSaver, limit: int, filter: dict[str, Any] | None = None
) -> list[list[ThreadInfo]]:
    pages: list[list[ThreadInfo]] = []
    cursor: str | None = None
    while True:
        page = await saver.alist_threads(filter, limit=limit, before=cursor)
        if not page:
            return pages
        pages.append(page)
        cursor = page[-1].cursor


def ids(infos: list[ThreadInfo]) -> list[str]:
    return [i.thread_id for i in infos]


def latest_of(info: ThreadInfo) -> tuple[Any, ...]:
    """What a `ThreadInfo` says about the thread's latest checkpoint."""
    return (
        info.thread_id,
        info.checkpoint_id,
        info.checkpoint_ns,
        info.created_at,
        info.step,
        info.metadata,
        info.config,
    )


class State(TypedDict):
    n: int


def graph(saver: ContextEngineSaver) -> Any:
    g = StateGraph(State)
    g.add_node("inc", lambda s: {"n": s["n"] + 1})
    g.add_edge(START, "inc")
    g.add_edge("inc", END)
    return g.compile(checkpointer=saver)


def run_config(thread: str, user: str, team: str) -> Any:
    return {
        "configurable": {"thread_id": thread, "user_id": user},
        "metadata": {"team": team},
    }


# -- every store ----------------------------------------------------------------------


async def test_threads_are_listed_newest_activity_first_with_their_latest_checkpoint(
    saver: ContextEngineSaver,
) -> None:
    g = graph(saver)
    for thread, user in (("a", "u1"), ("b", "u2"), ("c", "u1")):
        await g.ainvoke({"n": 0}, run_config(thread, user, "red"))
        tick()
    await g.ainvoke({"n": 5}, run_config("a", "u1", "blue"))
    page = await saver.alist_threads()
    assert ids(page) == ["a", "c", "b"]
    for info in page:
        latest = await saver.aget_tuple(cfg(info.thread_id))
        assert latest is not None
        assert info.checkpoint_id == latest.checkpoint["id"]
        assert info.checkpoint_ns == ""
        assert info.metadata == latest.metadata
        assert info.step == latest.metadata["step"]
        assert info.created_at == datetime.fromisoformat(latest.checkpoint["ts"])
        assert info.created_at.tzinfo == timezone.utc
        assert info.config == latest.config
    assert [i.step for i in page] == [4, 1, 1]  # "a" ran twice
    assert page[0].metadata["team"] == "blue" and page[0].metadata["user_id"] == "u1"
    assert [i.updated_at for i in page] == sorted(
        (i.updated_at for i in page), reverse=True
    )


async def test_latest_is_the_root_namespace_checkpoint_else_any_namespace(
    saver: ContextEngineSaver,
) -> None:
    root = await aput(saver, "mixed", {"step": 3, "where": "root"})
    tick()
    await aput(saver, "mixed", {"step": 0, "where": "child"}, ns="child:1")
    tick()
    only_sub = await aput(saver, "subgraph-only", {"step": 7}, ns="child:2")
    page = await saver.alist_threads()
    assert ids(page) == ["subgraph-only", "mixed"]
    assert page[0].checkpoint_ns == "child:2" and page[0].config == only_sub
    assert page[1].config == root and page[1].metadata["where"] == "root"
    assert page[1].step == 3


async def test_filter_matches_the_latest_checkpoints_metadata_from_run_config(
    saver: ContextEngineSaver,
) -> None:
    g = graph(saver)
    await g.ainvoke({"n": 0}, run_config("t1", "u1", "red"))
    await g.ainvoke({"n": 0}, run_config("t2", "u2", "red"))
    await g.ainvoke({"n": 0}, run_config("t3", "u1", "blue"))
    await g.ainvoke({"n": 0}, run_config("moved", "u1", "red"))
    await g.ainvoke({"n": 0}, run_config("moved", "u2", "red"))  # latest is u2's
    assert sorted(ids(await saver.alist_threads({"user_id": "u1"}))) == ["t1", "t3"]
    both = await saver.alist_threads({"user_id": "u1", "team": "red"})
    assert ids(both) == ["t1"]
    assert await saver.alist_threads({"user_id": "nobody"}) == []
    assert len(await saver.alist_threads({})) == 4


async def test_filtered_pages_are_complete_and_walk_every_match_exactly_once(
    saver: ContextEngineSaver,
) -> None:
    threads = [f"p{i:03d}" for i in range(45)]
    for i, t in enumerate(threads):
        await aput(saver, t, {"step": i, "user_id": "u1" if i % 3 == 0 else "u2"})
    matching = [t for i, t in enumerate(threads) if i % 3 == 0][::-1]
    pages = await awalk(saver, 4, {"user_id": "u1"})
    assert [len(p) for p in pages] == [4, 4, 4, 3]
    assert [t for p in pages for t in ids(p)] == matching
    everything = await awalk(saver, 7)
    assert [t for p in everything for t in ids(p)] == threads[::-1]


async def test_sync_and_async_listing_return_the_same_pages(
    saver: ContextEngineSaver,
) -> None:
    for i in range(20):
        await aput(saver, f"s{i:02d}", {"step": i, "user_id": f"u{i % 2}"})
    for filter in (None, {"user_id": "u1"}):
        assert walk(saver, 3, filter) == await awalk(saver, 3, filter)
    first = saver.list_threads(limit=5)
    assert await saver.alist_threads(limit=5, before=first[-1].cursor) == (
        saver.list_threads(limit=5, before=first[-1])
    )


async def test_deleted_pruned_and_run_deleted_threads_disappear(
    saver: ContextEngineSaver,
) -> None:
    for t in ("keep", "deleted", "pruned", "kept-latest", "run-deleted"):
        await aput(saver, t, {"step": 0, "run_id": f"run-{t}"})
        await aput(saver, t, {"step": 1, "run_id": f"run-{t}"})
    kept_latest = await saver.aget_tuple(cfg("kept-latest"))
    assert kept_latest is not None
    await saver.adelete_thread("deleted")
    await saver.aprune(["pruned"], strategy="delete")
    await saver.aprune(["kept-latest"], strategy="keep_latest")
    await saver.adelete_for_runs(["run-run-deleted"])
    page = await saver.alist_threads()
    assert sorted(ids(page)) == ["keep", "kept-latest"]
    kept = next(i for i in page if i.thread_id == "kept-latest")
    assert kept.checkpoint_id == kept_latest.checkpoint["id"]
    assert sorted(ids(saver.list_threads())) == ["keep", "kept-latest"]


async def test_a_copied_thread_appears_with_the_sources_latest_checkpoint(
    saver: ContextEngineSaver,
) -> None:
    source = await aput(saver, "source", {"step": 4, "user_id": "u1"})
    tick()
    await aput(saver, "other", {"step": 0})
    tick()
    await saver.acopy_thread("source", "target")
    page = await saver.alist_threads()
    assert ids(page) == ["target", "other", "source"]
    assert page[0].checkpoint_id == source["configurable"]["checkpoint_id"]
    assert page[0].metadata == page[2].metadata and page[0].step == 4
    assert ids(await saver.alist_threads({"user_id": "u1"})) == ["target", "source"]


async def test_a_walk_never_repeats_a_thread_written_while_it_pages(
    saver: ContextEngineSaver,
) -> None:
    """Documented semantics: threads written during a walk move to the top; the
    walk lists each thread at most once and every unchanged thread exactly once."""
    threads = [f"w{i}" for i in range(9)]
    for t in threads:
        await aput(saver, t, {"step": 0})
        tick()
    first = await saver.alist_threads(limit=3)
    assert ids(first) == ["w8", "w7", "w6"]
    await aput(saver, "w7", {"step": 1})  # already listed
    tick()
    await aput(saver, "w2", {"step": 1})  # not listed yet
    tick()
    await aput(saver, "new", {"step": 0})
    rest: list[str] = []
    before: ThreadInfo | None = first[-1]
    while page := await saver.alist_threads(limit=3, before=before):
        rest += ids(page)
        before = page[-1]
    assert rest == ["w5", "w4", "w3", "w1", "w0"]
    assert ids(await saver.alist_threads(limit=3)) == ["new", "w2", "w7"]


async def test_filters_apply_to_metadata_stored_encrypted(store_name: str) -> None:
    async with make_saver(store_name, serde=aes()) as saver:
        for i in range(6):
            await aput(saver, f"e{i}", {"step": i, "user_id": f"secret-u{i % 2}"})
        page = await saver.alist_threads({"user_id": "secret-u1"}, limit=2)
        assert ids(page) == ["e5", "e3"]
        rest = saver.list_threads({"user_id": "secret-u1"}, before=page[-1])
        assert ids(rest) == ["e1"] and rest[0].step == 1
        stored = saver.engine.run(saver.engine.checkpoints.latest_rows(["e1"]))[0][0]
        assert stored is not None and b"secret-u1" not in stored.metadata[1]


# -- scale and cost -------------------------------------------------------------------

SCALE = {
    "memory": 3000,
    "redis": 2500,
    "cluster": 2000,
    "memory+archive": 400,
    "redis+archive": 400,
}


def test_thousands_of_threads_page_through_completely_with_a_filter(
    store_name: str,
) -> None:
    n = SCALE[store_name]
    with make_sync_saver(store_name) as saver:
        threads = [f"bulk{i:05d}" for i in range(n)]
        for i, t in enumerate(threads):
            md = {"step": i, "user_id": "u1" if i % 7 == 0 else f"x{i % 5}"}
            saver.put(cfg(t), empty_checkpoint(), md, {})
        pages = walk(saver, 50, {"user_id": "u1"})
        matching = [t for i, t in enumerate(threads) if i % 7 == 0][::-1]
        assert [t for p in pages for t in ids(p)] == matching
        assert all(len(p) == 50 for p in pages[:-1])
        assert all(i.metadata["user_id"] == "u1" for p in pages for i in p)
        everything = walk(saver, 1000)
        assert [t for p in everything for t in ids(p)] == threads[::-1]


REDIS_STORES = [_redis_param("redis"), _redis_param("cluster")]


@pytest.mark.parametrize("store", REDIS_STORES)
def test_redis_listing_round_trips_do_not_grow_with_checkpoints_per_thread(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_sync_saver(store) as saver:
        for i in range(10):
            saver.put(cfg(f"small{i}"), empty_checkpoint(), {"step": 0}, {})
        for i in range(10):
            for step in range(40):
                put(saver, f"big{i}", {"step": step})
        saver.list_threads(limit=10)  # scripts loaded
        counter = SendCounter(monkeypatch)
        big = saver.list_threads(limit=10)
        big_calls, counter.count = counter.count, 0
        small = saver.list_threads(limit=10, before=big[-1])
        assert ids(big) == [f"big{i}" for i in range(9, -1, -1)]
        assert ids(small) == [f"small{i}" for i in range(9, -1, -1)]
        assert big[0].step == 39
        # one registry page, then the page's latest rows: one call, or one per
        # thread on a Cluster (each thread lives in its own slot)
        expected = 1 + (10 if store == "cluster" else 1)
        assert big_calls == counter.count == expected


def test_memory_listing_reads_one_row_per_thread_and_never_a_threads_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with make_sync_saver("memory") as saver:
        for step in range(500):
            put(saver, "long", {"step": step})
        for i in range(20):
            saver.put(cfg(f"short{i:02d}"), empty_checkpoint(), {"step": 0}, {})
        store = saver.engine.checkpoints
        assert isinstance(store, memory_store.MemoryStore)
        ns = store._threads["long"][""]

        class NoScanIds(list[str]):
            def __iter__(self) -> Iterator[str]:
                raise AssertionError("listing iterated a thread's checkpoint ids")

        class CountedRows(dict[str, Any]):
            reads = 0

            def __getitem__(self, key: str) -> Any:
                CountedRows.reads += 1
                return super().__getitem__(key)

            def values(self) -> Any:
                raise AssertionError("listing scanned a thread's checkpoints")

        ns.ids = NoScanIds(ns.ids)
        ns.rows = CountedRows(ns.rows)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("listing went through per-checkpoint reads")

        monkeypatch.setattr(model, "resolve", refuse)
        monkeypatch.setattr(memory_store.MemoryStore, "list", refuse)
        everything = [t for p in walk(saver, 4) for t in ids(p)]
        assert len(everything) == 21 and "long" in everything
        assert CountedRows.reads == 1


# -- the archive ----------------------------------------------------------------------

HOT = ["memory", _redis_param("redis")]


def archived_engine(hot: str) -> tuple[Any, str]:
    prefix = f"l{uuid.uuid4().hex[:8]}"
    if hot == "memory":
        return engine_for("memory+archive"), prefix
    return engine_for(f"{hot}+archive", key_prefix=prefix), prefix


@pytest.mark.parametrize("hot", HOT)
async def test_threads_only_in_the_archive_are_listed_after_the_hot_store_lost_them(
    hot: str,
) -> None:
    engine, prefix = archived_engine(hot)
    with ContextEngineSaver(engine) as saver:
        for i in range(6):
            put(saver, f"old{i}", {"step": i, "user_id": f"u{i % 2}"})
            tick()
        before = saver.list_threads()
        assert engine.archive.flush(10)
        _forget_hot(engine, prefix)
        # the same threads, order and checkpoints; `updated_at` is now the
        # archive's record of the same writes (`archived_at`, within a ms or so)
        assert list(map(latest_of, saver.list_threads())) == list(
            map(latest_of, before)
        )
        for i in range(3):
            put(saver, f"new{i}", {"step": i, "user_id": f"u{i % 2}"})
            tick()
        expected = [f"new{i}" for i in (2, 1, 0)] + [
            f"old{i}" for i in range(5, -1, -1)
        ]
        assert [t for p in walk(saver, 2) for t in ids(p)] == expected
        assert [t for p in walk(saver, 2, {"user_id": "u1"}) for t in ids(p)] == [
            "new1",
            "old5",
            "old3",
            "old1",
        ]
        assert await awalk(saver, 2, {"user_id": "u1"}) == walk(
            saver, 2, {"user_id": "u1"}
        )
        old3 = next(i for i in before if i.thread_id == "old3")
        assert saver.get_tuple(cfg("old3")) is not None  # restored into the hot store
        listed = saver.list_threads()
        assert ids(listed) == expected
        again = next(i for i in listed if i.thread_id == "old3")
        assert again.checkpoint_id == old3.checkpoint_id
        assert again.metadata == old3.metadata


@pytest.mark.parametrize("hot", HOT)
def test_deleted_threads_are_not_listed_from_the_archive(
    hot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, prefix = archived_engine(hot)
    with ContextEngineSaver(engine) as saver:
        for t in ("gone", "pruned", "stays", "late-delete"):
            put(saver, t, {"step": 0, "run_id": f"r-{t}"})
        assert engine.archive.flush(10)
        saver.delete_thread("gone")
        saver.prune(["pruned"], strategy="delete")
        assert engine.archive.flush(10)
        _forget_hot(engine, prefix)
        assert sorted(ids(saver.list_threads())) == ["late-delete", "stays"]
        # a delete the archive has not applied yet (another process's outbox is
        # behind): the hot store's deletion mark keeps it out of the listing
        tier = engine.checkpoints.tier
        monkeypatch.setattr(tier, "replace", lambda *a, **k: None)
        saver.delete_thread("late-delete")
        assert engine.archive.flush(10)
        assert ids(saver.list_threads()) == ["stays"]


def test_listing_falls_back_to_the_hot_store_when_the_archive_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = archive_settings(
        host="127.0.0.1", port=find_free_port(), close_timeout=0.2
    )
    engine = engine_for("memory", archive=settings)
    with ContextEngineSaver(engine) as saver:
        # put without reading first: a thread the hot store lacks cannot be
        # read while the archive is down (StoreError)
        saver.put(cfg("a"), empty_checkpoint(), {"step": 0}, {})
        tick()
        saver.put(cfg("b"), empty_checkpoint(), {"step": 0}, {})
        with caplog.at_level(logging.WARNING, logger="aiecs_checkpoint.archive"):
            assert ids(saver.list_threads()) == ["b", "a"]
        assert engine.archive is not None
        assert engine.archive.counters.failed_reads >= 1
        assert any("without the archive" in r.message for r in caplog.records)


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, True, 2.5, "10", None])
async def test_a_non_positive_or_non_int_limit_is_a_typed_error(limit: Any) -> None:
    async with make_saver("memory") as saver:
        with pytest.raises(InvalidConfigError, match="limit must be a positive int"):
            saver.list_threads(limit=limit)
        with pytest.raises(InvalidConfigError, match="limit must be a positive int"):
            await saver.alist_threads(limit=limit)


@pytest.mark.parametrize(
    "before",
    [
        "garbage",
        "t1.!!!!",
        "t1." + "W10",  # an empty list
        encode_cursor((-5, "x")),
        encode_cursor((5, "")),
        {"thread_id": "x"},
        12,
    ],
)
async def test_a_malformed_cursor_is_a_typed_error(before: Any) -> None:
    async with make_saver("memory") as saver:
        with pytest.raises(InvalidCursorError):
            saver.list_threads(before=before)
        with pytest.raises(InvalidCursorError):
            await saver.alist_threads(before=before)
    assert issubclass(InvalidCursorError, ValueError)


@pytest.mark.parametrize("filter", ["user_id=u1", [("user_id", "u1")], {1: "x"}, 3])
async def test_a_filter_that_is_not_a_dict_of_keys_is_a_typed_error(
    filter: Any,
) -> None:
    async with make_saver("memory") as saver:
        with pytest.raises(InvalidConfigError, match="filter must be a dict"):
            saver.list_threads(filter)
        with pytest.raises(InvalidConfigError, match="filter must be a dict"):
            await saver.alist_threads(filter)


def test_a_cursor_string_and_its_thread_info_resume_at_the_same_place() -> None:
    with make_sync_saver("memory") as saver:
        for i in range(6):
            saver.put(cfg(f"c{i}"), empty_checkpoint(), {"step": i}, {})
        first = saver.list_threads(limit=2)
        by_info = saver.list_threads(limit=2, before=first[-1])
        assert saver.list_threads(limit=2, before=first[-1].cursor) == by_info
        assert ids(by_info) == ["c3", "c2"]
