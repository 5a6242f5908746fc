"""Bad input gets a typed error naming the problem; a failing call stores nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import (
    ContextEngineSaver,
    InvalidConfigError,
    InvalidNamespaceError,
    InvalidPruneStrategyError,
    InvalidThreadIdError,
    SerializationError,
)


def cfg(thread: Any, ns: Any = "", cid: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if cid:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def cp(values: dict[str, Any]) -> Any:
    c = empty_checkpoint()
    c["channel_values"] = values
    c["channel_versions"] = {k: f"{1:032}.0" for k in values}
    return c


@pytest.mark.parametrize(
    ("config", "error", "words"),
    [
        ({}, InvalidThreadIdError, "thread_id"),
        ({"configurable": {}}, InvalidThreadIdError, "thread_id"),
        (cfg(42), InvalidThreadIdError, "int"),
        (cfg(""), InvalidThreadIdError, "empty"),
        (cfg("t", ns=3), InvalidNamespaceError, "checkpoint_ns"),
        ("not a config", InvalidConfigError, "mapping"),
    ],
)
async def test_malformed_configs_raise_typed_errors_naming_the_problem(
    saver: ContextEngineSaver, config: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        saver.get_tuple(config)
    with pytest.raises(error, match=words):
        await saver.aget_tuple(config)
    with pytest.raises(error, match=words):
        await saver.aput(config, cp({"a": 1}), {}, {"a": f"{1:032}.0"})


async def test_unknown_prune_strategy_is_rejected_before_anything_is_deleted(
    saver: ContextEngineSaver,
) -> None:
    t = f"p-{uuid.uuid4()}"
    await saver.aput(cfg(t), cp({"a": 1}), {}, {"a": f"{1:032}.0"})
    with pytest.raises(InvalidPruneStrategyError, match="keep_everything"):
        await saver.aprune([t], strategy="keep_everything")
    with pytest.raises(InvalidPruneStrategyError):
        saver.prune([t], strategy="")
    assert await saver.aget_tuple(cfg(t)) is not None


@pytest.mark.parametrize("where", ["channel", "list item", "metadata"])
async def test_unserializable_put_raises_and_stores_nothing(
    saver: ContextEngineSaver, where: str
) -> None:
    t = f"s-{uuid.uuid4()}"
    v = f"{1:032}.0"
    first = await saver.aput(cfg(t), cp({"a": [1, 2]}), {"step": 0}, {"a": v})
    before = [x.config for x in saver.list(cfg(t))]
    bad = object()
    values: dict[str, Any] = {"a": [1, 2, 3]}
    metadata: dict[str, Any] = {"step": 1}
    if where == "channel":
        values["b"] = bad
    elif where == "list item":
        values["a"] = [1, 2, bad]
    else:
        metadata["custom"] = bad
    checkpoint = cp(values)
    with pytest.raises(SerializationError) as err:
        await saver.aput(
            first, checkpoint, metadata, dict(checkpoint["channel_versions"])
        )
    assert "serialize" in str(err.value)
    assert [x.config for x in saver.list(cfg(t))] == before
    latest = await saver.aget_tuple(cfg(t))
    assert latest is not None and latest.checkpoint["channel_values"] == {"a": [1, 2]}


async def test_unserializable_write_stores_none_of_that_call(
    saver: ContextEngineSaver,
) -> None:
    t = f"w-{uuid.uuid4()}"
    stored = await saver.aput(cfg(t), cp({}), {}, {})
    with pytest.raises(SerializationError, match="channel 'bad'"):
        await saver.aput_writes(stored, [("good", 1), ("bad", lambda: 0)], "task")
    with pytest.raises(SerializationError):
        saver.put_writes(stored, [("good", 1), ("bad", object())], "task")
    tup = await saver.aget_tuple(stored)
    assert tup is not None and tup.pending_writes == []


async def test_put_writes_needs_the_checkpoint_id(saver: ContextEngineSaver) -> None:
    with pytest.raises(InvalidConfigError, match="checkpoint_id"):
        await saver.aput_writes(cfg("t"), [("a", 1)], "task")


def test_graph_invoked_without_thread_id_fails_clearly() -> None:
    from typing import TypedDict

    from langgraph.graph import START, StateGraph

    class S(TypedDict):
        x: int

    builder = StateGraph(S)
    builder.add_node("inc", lambda s: {"x": s["x"] + 1})
    builder.add_edge(START, "inc")
    graph = builder.compile(checkpointer=ContextEngineSaver())
    with pytest.raises(ValueError, match="thread_id"):
        graph.invoke({"x": 1}, {"configurable": {}})


async def test_sync_calls_on_the_event_loop_thread_complete_instead_of_deadlocking(
    saver: ContextEngineSaver,
) -> None:
    """Sync methods never hop onto the loop the async I/O uses (Redis has a sync
    client of its own), so calling them from a coroutine cannot deadlock."""
    t = f"loop-{uuid.uuid4()}"
    stored = saver.put(cfg(t), cp({"a": 1}), {"step": 0}, {"a": f"{1:032}.0"})
    saver.put_writes(stored, [("a", 2)], "task")
    tup = saver.get_tuple(cfg(t))
    assert tup is not None and tup.pending_writes == [("task", "a", 2)]
    assert [x.config for x in saver.list(cfg(t))] == [stored]
    assert await saver.aget_tuple(cfg(t)) is not None
