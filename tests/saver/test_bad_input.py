"""Bad input raises the typed error that names the problem, and stores nothing.

Every case runs through the sync API (`sync_saver`, built outside any event
loop) and the async API (`saver`), on every store.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointTuple, empty_checkpoint
from langgraph.graph import END, START, StateGraph

from aiecs_checkpoint import (
    AiecsCheckpointError,
    ContextEngineSaver,
    InvalidConfigError,
    InvalidNamespaceError,
    InvalidPruneStrategyError,
    InvalidThreadIdError,
    SerializationError,
)

# -- helpers ---------------------------------------------------------------------------


def ckpt_id(n: int) -> str:
    return f"{n:08x}-0000-6000-8000-000000000000"


def make_checkpoint(
    n: int, values: dict[str, Any], versions: dict[str, str] | None = None
) -> Checkpoint:
    checkpoint = empty_checkpoint()
    checkpoint["id"] = ckpt_id(n)
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = dict(versions or {c: str(n) for c in values})
    return checkpoint


def cfg(thread_id: str = "thread", checkpoint_id: str | None = None) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


class Unserializable:
    """Instances of a class no serializer knows (beside object() and lambdas)."""

    __slots__ = ()


# An object the default serializer cannot handle, per kind.
BAD_VALUES: dict[str, Callable[[], Any]] = {
    "object": object,
    "lambda": lambda: lambda x: x,
}


def op(saver: ContextEngineSaver, name: str, use_async: bool) -> Callable[..., Any]:
    """The sync method, or an awaitable-returning twin (lists are consumed)."""
    if name in ("list", "alist"):
        if use_async:

            async def consume(*args: Any, **kwargs: Any) -> list[CheckpointTuple]:
                return [t async for t in saver.alist(*args, **kwargs)]

            return consume
        return lambda *args, **kwargs: list(saver.list(*args, **kwargs))
    return getattr(saver, "a" + name if use_async else name)  # type: ignore[no-any-return]


async def call(
    saver: ContextEngineSaver, use_async: bool, name: str, *args: Any, **kwargs: Any
) -> Any:
    """Call a saver method through the sync or the async API."""
    result = op(saver, name, use_async)(*args, **kwargs)
    return await result if use_async else result


def run_sync(scenario: Coroutine[Any, Any, None]) -> None:
    """Run a scenario in sync mode, with no event loop at all.

    In sync mode a scenario only makes sync calls, so its coroutine finishes on
    the first `send` without ever suspending: the sync API is exercised from a
    plain thread, as a sync graph would call it.
    """
    try:
        scenario.send(None)
    except StopIteration:
        return
    scenario.close()
    raise AssertionError("a sync-mode scenario awaited something")


async def snapshot(
    saver: ContextEngineSaver, use_async: bool, thread_id: str = "thread"
) -> Any:
    """Everything a reader can see: the thread's latest and history, all threads."""
    return (
        await call(saver, use_async, "get_tuple", cfg(thread_id)),
        await call(
            saver, use_async, "list", {"configurable": {"thread_id": thread_id}}
        ),
        await call(saver, use_async, "list", None),
    )


def cold(saver: ContextEngineSaver) -> ContextEngineSaver:
    """Another saver on the same engine, with empty process-local caches."""
    return ContextEngineSaver(saver.engine, serde=saver.serde)


# -- invalid configs and ids ---------------------------------------------------------

CID = ckpt_id(1)

BAD_CONFIGS: dict[str, tuple[Any, type[Exception], str]] = {
    # name: (config, error, text the message must contain)
    "not_a_mapping": ("not a config", InvalidConfigError, "must be a mapping"),
    "no_configurable": ({}, InvalidThreadIdError, "thread_id"),
    "configurable_without_thread_id": (
        {"configurable": {"checkpoint_ns": "", "checkpoint_id": CID}},
        InvalidThreadIdError,
        "thread_id",
    ),
    "int_thread_id": (
        {"configurable": {"thread_id": 7, "checkpoint_ns": "", "checkpoint_id": CID}},
        InvalidThreadIdError,
        "thread_id must be a str, got int",
    ),
    "empty_thread_id": (
        {"configurable": {"thread_id": "", "checkpoint_ns": "", "checkpoint_id": CID}},
        InvalidThreadIdError,
        "thread_id must not be empty",
    ),
    "int_namespace": (
        {"configurable": {"thread_id": "t", "checkpoint_ns": 3, "checkpoint_id": CID}},
        InvalidNamespaceError,
        "checkpoint_ns must be a str, got int",
    ),
}


async def _bad_config_raises_on_every_call(
    saver: ContextEngineSaver, use_async: bool, case: str
) -> None:
    config, error, text = BAD_CONFIGS[case]
    checkpoint = make_checkpoint(1, {"a": 1})
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("get_tuple", (config,)),
        ("list", (config,)),
        ("put", (config, checkpoint, {}, {"a": "1"})),
        ("put_writes", (config, [("a", 1)], "task")),
        ("get_delta_channel_history", ()),
    ]
    for name, args in calls:
        kwargs: dict[str, Any] = {}
        if name == "get_delta_channel_history":
            kwargs = {"config": config, "channels": ["a"]}
        with pytest.raises(error, match=text) as info:
            await call(saver, use_async, name, *args, **kwargs)
        assert isinstance(info.value, InvalidConfigError)
        assert isinstance(info.value, AiecsCheckpointError)
    assert await call(saver, use_async, "list", None) == []


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_raises_typed_error_naming_the_problem_sync(
    sync_saver: ContextEngineSaver, case: str
) -> None:
    run_sync(_bad_config_raises_on_every_call(sync_saver, False, case))


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
async def test_bad_config_raises_typed_error_naming_the_problem_async(
    saver: ContextEngineSaver, case: str
) -> None:
    await _bad_config_raises_on_every_call(saver, True, case)


BAD_THREAD_ARGS: dict[str, tuple[str, tuple[Any, ...], dict[str, Any], str]] = {
    # name: (method, args, kwargs, text the message must contain)
    "delete_thread_int": ("delete_thread", (7,), {}, "got int"),
    "delete_thread_empty": ("delete_thread", ("",), {}, "must not be empty"),
    "copy_thread_int_source": ("copy_thread", (7, "thread"), {}, "got int"),
    "copy_thread_empty_target": ("copy_thread", ("thread", ""), {}, "empty"),
    "prune_int_thread": ("prune", ([7],), {}, "got int"),
    "prune_empty_thread": ("prune", ([""],), {}, "must not be empty"),
}


async def _bad_thread_arg_raises(
    saver: ContextEngineSaver, use_async: bool, case: str
) -> None:
    await call(
        saver, use_async, "put", cfg(), make_checkpoint(1, {"a": 1}), {}, {"a": "1"}
    )
    before = await snapshot(saver, use_async)
    name, args, kwargs, text = BAD_THREAD_ARGS[case]
    with pytest.raises(InvalidThreadIdError, match=text):
        await call(saver, use_async, name, *args, **kwargs)
    assert await snapshot(saver, use_async) == before


@pytest.mark.parametrize("case", sorted(BAD_THREAD_ARGS))
def test_bad_thread_id_argument_raises_invalid_thread_id_error_sync(
    sync_saver: ContextEngineSaver, case: str
) -> None:
    run_sync(_bad_thread_arg_raises(sync_saver, False, case))


@pytest.mark.parametrize("case", sorted(BAD_THREAD_ARGS))
async def test_bad_thread_id_argument_raises_invalid_thread_id_error_async(
    saver: ContextEngineSaver, case: str
) -> None:
    await _bad_thread_arg_raises(saver, True, case)


def test_put_writes_without_checkpoint_id_raises_invalid_config_error_sync(
    sync_saver: ContextEngineSaver,
) -> None:
    with pytest.raises(InvalidConfigError, match="checkpoint_id"):
        sync_saver.put_writes(cfg(), [("a", 1)], "task")


async def test_put_writes_without_checkpoint_id_raises_invalid_config_error_async(
    saver: ContextEngineSaver,
) -> None:
    with pytest.raises(InvalidConfigError, match="checkpoint_id"):
        await saver.aput_writes(cfg(), [("a", 1)], "task")


# -- prune strategy ------------------------------------------------------------------


async def _unknown_prune_strategy(saver: ContextEngineSaver, use_async: bool) -> None:
    first = await call(
        saver, use_async, "put", cfg(), make_checkpoint(1, {"a": 1}), {}, {"a": "1"}
    )
    await call(
        saver, use_async, "put", first, make_checkpoint(2, {"a": 2}), {}, {"a": "2"}
    )
    before = await snapshot(saver, use_async)
    with pytest.raises(InvalidPruneStrategyError, match="'keep_newest'") as info:
        await call(saver, use_async, "prune", ["thread"], strategy="keep_newest")
    assert "keep_latest" in str(info.value)  # says what is accepted
    assert isinstance(info.value, ValueError)
    assert await snapshot(saver, use_async) == before
    assert len(before[1]) == 2


def test_unknown_prune_strategy_raises_and_prunes_nothing_sync(
    sync_saver: ContextEngineSaver,
) -> None:
    run_sync(_unknown_prune_strategy(sync_saver, False))


async def test_unknown_prune_strategy_raises_and_prunes_nothing_async(
    saver: ContextEngineSaver,
) -> None:
    await _unknown_prune_strategy(saver, True)


# -- values the serializer cannot handle ---------------------------------------------


async def seed(saver: ContextEngineSaver, use_async: bool) -> RunnableConfig:
    """A thread with one checkpoint (a list and a plain channel) and a write."""
    first: RunnableConfig = await call(
        saver,
        use_async,
        "put",
        cfg(),
        make_checkpoint(1, {"msgs": [{"m": 1}, {"m": 2}], "a": "x"}),
        {"source": "input", "step": -1},
        {"msgs": "1", "a": "1"},
    )
    await call(saver, use_async, "put_writes", first, [("a", "pending")], "task-0")
    return first


def bad_puts(first: RunnableConfig, make_bad: Callable[[], Any]) -> dict[str, Any]:
    """Per place a bad value can hide: the put call args and the message text."""
    msgs = [{"m": 1}, {"m": 2}, {"m": 3}]
    ok = {"msgs": "2", "a": "2"}
    return {
        "channel_value": (
            (first, make_checkpoint(2, {"msgs": msgs, "a": make_bad()}), {}, ok),
            "channel 'a'",
        ),
        "list_element": (
            (
                first,
                make_checkpoint(2, {"msgs": [*msgs, make_bad()], "a": "y"}),
                {},
                ok,
            ),
            "channel 'msgs' item 3",
        ),
        "metadata_value": (
            (
                first,
                make_checkpoint(2, {"msgs": msgs, "a": "y"}),
                {"k": make_bad()},
                ok,
            ),
            "metadata",
        ),
        "nested_metadata_value": (
            (
                first,
                make_checkpoint(2, {"msgs": msgs, "a": "y"}),
                {"k": {"deep": [make_bad()]}},
                ok,
            ),
            "metadata",
        ),
    }


PLACES = ["channel_value", "list_element", "metadata_value", "nested_metadata_value"]


async def _unserializable_put(
    saver: ContextEngineSaver, use_async: bool, kind: str, place: str
) -> None:
    first = await seed(saver, use_async)
    before = await snapshot(saver, use_async)
    args, text = bad_puts(first, BAD_VALUES[kind])[place]
    with pytest.raises(SerializationError, match=text) as info:
        await call(saver, use_async, "put", *args)
    assert isinstance(info.value, TypeError)
    assert "cannot serialize" in str(info.value)
    # nothing of the failed put is visible: same latest, same history, no row
    assert await snapshot(saver, use_async) == before
    missing = cfg(checkpoint_id=ckpt_id(2))
    assert await call(saver, use_async, "get_tuple", missing) is None
    # and a good put of the same checkpoint afterwards stores exactly its values
    good = [{"m": 1}, {"m": 2}, {"m": 3}]
    stored = await call(
        saver,
        use_async,
        "put",
        first,
        make_checkpoint(2, {"msgs": good, "a": "y"}),
        {"step": 0},
        {"msgs": "2", "a": "2"},
    )
    for reader in (saver, cold(saver)):
        got = await call(reader, use_async, "get_tuple", stored)
        assert got is not None
        assert got.checkpoint["channel_values"] == {"msgs": good, "a": "y"}
        assert got.metadata["step"] == 0
        parent = await call(reader, use_async, "get_tuple", first)
        assert parent is not None
        assert parent.checkpoint["channel_values"] == {
            "msgs": [{"m": 1}, {"m": 2}],
            "a": "x",
        }


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
def test_unserializable_value_in_put_raises_serialization_error_storing_nothing_sync(
    sync_saver: ContextEngineSaver, kind: str, place: str
) -> None:
    run_sync(_unserializable_put(sync_saver, False, kind, place))


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
async def test_unserializable_value_in_put_raises_serialization_error_storing_nothing_async(  # noqa: E501
    saver: ContextEngineSaver, kind: str, place: str
) -> None:
    await _unserializable_put(saver, True, kind, place)


async def _unserializable_write(
    saver: ContextEngineSaver, use_async: bool, kind: str
) -> None:
    first = await seed(saver, use_async)
    before = await snapshot(saver, use_async)
    bad = BAD_VALUES[kind]()
    calls = [
        [("a", "good"), ("b", bad)],  # the good write comes first
        [("__error__", "boom"), ("b", bad)],  # a special write comes first
        [("b", bad), ("a", "good")],
    ]
    for writes in calls:
        with pytest.raises(SerializationError, match="write to channel 'b'"):
            await call(saver, use_async, "put_writes", first, writes, "task-1")
    assert await snapshot(saver, use_async) == before
    got = await call(saver, use_async, "get_tuple", first)
    assert got is not None
    assert got.pending_writes == [("task-0", "a", "pending")]
    # idx 0 of task-1 is still free: a regular write there is stored (first wins)
    await call(saver, use_async, "put_writes", first, [("a", "later")], "task-1")
    got = await call(cold(saver), use_async, "get_tuple", first)
    assert got is not None
    assert got.pending_writes == [
        ("task-0", "a", "pending"),
        ("task-1", "a", "later"),
    ]


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
def test_unserializable_write_raises_and_no_write_of_that_call_is_stored_sync(
    sync_saver: ContextEngineSaver, kind: str
) -> None:
    run_sync(_unserializable_write(sync_saver, False, kind))


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
async def test_unserializable_write_raises_and_no_write_of_that_call_is_stored_async(
    saver: ContextEngineSaver, kind: str
) -> None:
    await _unserializable_write(saver, True, kind)


def test_instance_of_unknown_class_raises_serialization_error_naming_channel(
    sync_saver: ContextEngineSaver,
) -> None:
    with pytest.raises(SerializationError, match=r"channel 'a'.*Unserializable"):
        sync_saver.put(
            cfg(), make_checkpoint(1, {"a": Unserializable()}), {}, {"a": "1"}
        )
    assert sync_saver.get_tuple(cfg()) is None


async def _failed_put_keeps_edit(saver: ContextEngineSaver, use_async: bool) -> None:
    """A failed put must not forget which messages a task edited and returned.

    The saver reuses the stored element of a list item that is the same object
    as before, unless a task returned that object in its writes since the last
    checkpoint (it may have been edited in place). A put that fails with a
    SerializationError stores nothing; the next, good put must still store the
    edited message.
    """
    message = {"id": 1, "text": "original"}
    first = await call(
        saver,
        use_async,
        "put",
        cfg(),
        make_checkpoint(1, {"msgs": [message]}),
        {},
        {"msgs": "1"},
    )
    message["text"] = "edited"  # a node edits the message and returns it
    await call(saver, use_async, "put_writes", first, [("msgs", message)], "task")
    with pytest.raises(SerializationError):
        await call(
            saver,
            use_async,
            "put",
            first,
            make_checkpoint(2, {"msgs": [message], "bad": object()}),
            {},
            {"msgs": "2", "bad": "2"},
        )
    stored = await call(
        saver,
        use_async,
        "put",
        first,
        make_checkpoint(2, {"msgs": [message]}),
        {},
        {"msgs": "2"},
    )
    got = await call(cold(saver), use_async, "get_tuple", stored)
    assert got is not None
    assert got.checkpoint["channel_values"]["msgs"] == [{"id": 1, "text": "edited"}]


def test_failed_put_does_not_lose_edited_messages_of_the_next_put_sync(
    sync_saver: ContextEngineSaver,
) -> None:
    run_sync(_failed_put_keeps_edit(sync_saver, False))


async def test_failed_put_does_not_lose_edited_messages_of_the_next_put_async(
    saver: ContextEngineSaver,
) -> None:
    await _failed_put_keeps_edit(saver, True)


# -- graph level ---------------------------------------------------------------------


class State(TypedDict):
    items: Annotated[list[str], operator.add]


def build_graph(saver: ContextEngineSaver) -> Any:
    builder = StateGraph(State)
    builder.add_node("step", lambda state: {"items": ["done"]})
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    return builder.compile(checkpointer=saver)


def test_graph_invoke_without_thread_id_raises_a_clear_error_sync(
    sync_saver: ContextEngineSaver,
) -> None:
    graph = build_graph(sync_saver)
    with pytest.raises(Exception, match="thread_id"):
        graph.invoke({"items": ["start"]}, {"configurable": {}})
    # LangGraph turns an int thread id into a str before the saver sees it, but
    # an empty one reaches the saver, which rejects it
    with pytest.raises(InvalidThreadIdError, match="thread_id must not be empty"):
        graph.invoke({"items": ["start"]}, {"configurable": {"thread_id": ""}})
    assert list(sync_saver.list(None)) == []
    # the same graph works once given a thread id
    out = graph.invoke({"items": ["start"]}, {"configurable": {"thread_id": "ok"}})
    assert out == {"items": ["start", "done"]}


async def test_graph_invoke_without_thread_id_raises_a_clear_error_async(
    saver: ContextEngineSaver,
) -> None:
    graph = build_graph(saver)
    with pytest.raises(Exception, match="thread_id"):
        await graph.ainvoke({"items": ["start"]}, {"configurable": {}})
    with pytest.raises(InvalidThreadIdError, match="thread_id must not be empty"):
        await graph.ainvoke({"items": ["start"]}, {"configurable": {"thread_id": ""}})
    assert [t async for t in saver.alist(None)] == []
    out = await graph.ainvoke(
        {"items": ["start"]}, {"configurable": {"thread_id": "ok"}}
    )
    assert out == {"items": ["start", "done"]}
