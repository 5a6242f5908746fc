"""The engine's domain API (sessions, conversations, multi-agent sessions, task
contexts, checkpoint helpers, metrics) behaves the same on every store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from aiecs_checkpoint.domain import TaskContext
from aiecs_checkpoint.engine import (
    close_context_engine,
    get_context_engine,
    initialize_context_engine,
)
from aiecs_checkpoint.errors import InvalidConfigError, SerializationError
from tests.conftest import STORES, engine_for


@pytest.fixture(params=STORES)
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[ContextEngine]:
    e = engine_for(str(request.param))
    await e.initialize()
    yield e
    await e.close()


async def _engine(store: str, **options: Any) -> ContextEngine:
    e = engine_for(store, **options)
    await e.initialize()
    return e


def _sid() -> str:
    return f"s:{{{uuid.uuid4().hex[:8]}}} é*"


# -- sessions ------------------------------------------------------------------------


async def test_session_round_trips_with_metadata_and_utc_times(
    engine: ContextEngine,
) -> None:
    sid = _sid()
    created = await engine.create_session(sid, "u1", {"source": "web", "n": [1, 2]})
    got = await engine.get_session(sid)
    assert got == created
    assert got is not None and got.metadata == {"source": "web", "n": [1, 2]}
    assert got.created_at.tzinfo is not None and got.status == "active"


async def test_create_session_twice_keeps_the_first_and_its_counters(
    engine: ContextEngine,
) -> None:
    sid = _sid()
    await engine.create_session(sid, "u1")
    await engine.update_session(sid, increment_requests=True)
    again = await engine.create_session(sid, "u2", {"x": 1})
    assert again.user_id == "u1" and again.request_count == 1


async def test_update_session_counts_time_errors_status_and_merges_metadata(
    engine: ContextEngine,
) -> None:
    sid = _sid()
    before = await engine.create_session(sid, "u1", {"a": 1})
    assert await engine.update_session(
        sid,
        updates={"metadata": {"b": 2}},
        increment_requests=True,
        add_processing_time=1.25,
        mark_error=True,
    )
    assert await engine.end_session(sid, status="failed")
    s = await engine.get_session(sid)
    assert s is not None
    assert (s.request_count, s.error_count) == (1, 1)
    assert s.total_processing_time == pytest.approx(1.25)
    assert s.status == "failed" and s.metadata == {"a": 1, "b": 2}
    assert s.last_activity >= before.last_activity


async def test_update_of_unknown_session_returns_false(engine: ContextEngine) -> None:
    assert await engine.update_session(_sid(), increment_requests=True) is False
    assert await engine.get_session(_sid()) is None


async def test_fifty_concurrent_increments_are_all_counted(
    engine: ContextEngine,
) -> None:
    sid = _sid()
    await engine.create_session(sid, "u1")
    await asyncio.gather(
        *(
            engine.update_session(sid, increment_requests=True, add_processing_time=0.5)
            for _ in range(50)
        )
    )
    s = await engine.get_session(sid)
    assert s is not None and s.request_count == 50
    assert s.total_processing_time == pytest.approx(25.0)


async def test_concurrent_metadata_merges_lose_no_key(engine: ContextEngine) -> None:
    sid = _sid()
    await engine.create_session(sid, "u1")
    await asyncio.gather(
        *(
            engine.update_session(sid, updates={"metadata": {f"k{i}": i}})
            for i in range(20)
        )
    )
    s = await engine.get_session(sid)
    assert s is not None and s.metadata == {f"k{i}": i for i in range(20)}


@pytest.mark.parametrize(
    ("updates", "field"),
    [({"user_id": "x"}, "user_id"), ({"status": "bogus"}, "status")],
)
async def test_update_session_rejects_bad_updates_naming_the_field(
    engine: ContextEngine, updates: dict[str, Any], field: str
) -> None:
    sid = _sid()
    await engine.create_session(sid, "u1")
    with pytest.raises(ValueError, match=field):
        await engine.update_session(sid, updates=updates)


async def test_list_sessions_by_user_and_status_pages_newest_first(
    engine: ContextEngine,
) -> None:
    user = f"user {uuid.uuid4().hex[:6]}"
    ids = [f"{user}-{i}" for i in range(7)]
    for sid in ids:
        await engine.create_session(sid, user)
    await engine.create_session(f"other-{uuid.uuid4().hex}", "someone else")
    for sid in ids[:3]:
        await engine.end_session(sid, "completed")
    mine = await engine.list_sessions(user_id=user, limit=100)
    assert {s.session_id for s in mine} == set(ids)
    assert [s.last_activity for s in mine] == sorted(
        (s.last_activity for s in mine), reverse=True
    )
    first = await engine.list_sessions(user_id=user, limit=4)
    second = await engine.list_sessions(user_id=user, limit=4, offset=4)
    assert [s.session_id for s in first + second] == [s.session_id for s in mine]
    done = await engine.list_sessions(user_id=user, status="completed")
    assert {s.session_id for s in done} == set(ids[:3])
    active = await engine.list_sessions(status="active", limit=1000)
    assert set(ids[3:]) <= {s.session_id for s in active}
    assert not set(ids[:3]) & {s.session_id for s in active}


# -- conversations -------------------------------------------------------------------


async def test_history_returns_newest_messages_in_order_past_the_cap(
    store_name: str,
) -> None:
    engine = await _engine(store_name, max_conversation_messages=5)
    sid = _sid()
    for i in range(12):
        await engine.add_conversation_message(sid, "user", f"m{i}", {"i": i})
    assert [m.content for m in await engine.get_conversation_history(sid, 3)] == [
        "m9",
        "m10",
        "m11",
    ]
    everything = await engine.get_conversation_history(sid, limit=0)
    assert [m.content for m in everything] == [f"m{i}" for i in range(7, 12)]
    assert everything[-1].metadata == {"i": 11}
    await engine.close()


async def test_message_with_invalid_role_raises_naming_role(
    engine: ContextEngine,
) -> None:
    with pytest.raises(ValueError, match="role"):
        await engine.add_conversation_message(_sid(), "wizard", "hi")


async def test_unserializable_metadata_is_a_typed_error_and_stores_nothing(
    engine: ContextEngine,
) -> None:
    sid = _sid()
    with pytest.raises(SerializationError):
        await engine.add_conversation_message(sid, "user", "hi", {"f": object()})
    assert await engine.get_conversation_history(sid) == []


# -- multi-agent conversation sessions -----------------------------------------------


async def test_agent_conversation_history_filters_types_and_keeps_newest(
    engine: ContextEngine,
) -> None:
    sid = _sid()
    key = await engine.create_conversation_session(
        sid,
        [
            {"id": "user_1", "type": "user", "role": "user"},
            {"id": "agent_1", "type": "agent", "role": "assistant"},
        ],
        "user_to_agent",
        {"project": "p"},
    )
    session = await engine.get_conversation_session(key)
    assert session is not None and session.metadata == {"project": "p"}
    for i in range(6):
        kind = "analysis_result" if i % 2 else "question"
        assert await engine.add_agent_communication_message(
            key, "agent_1", "agent", "analyst", f"c{i}", message_type=kind
        )
    results = await engine.get_agent_conversation_history(
        key, limit=2, message_types=["analysis_result"]
    )
    assert [m.content for m in results] == ["c3", "c5"]
    assert [m.content for m in await engine.get_agent_conversation_history(key, 3)] == [
        "c3",
        "c4",
        "c5",
    ]


async def test_message_to_unknown_conversation_session_is_refused(
    engine: ContextEngine,
) -> None:
    key = f"{_sid()}_agent_to_agent"
    assert not await engine.add_agent_communication_message(
        key, "a", "agent", None, "hello"
    )
    assert await engine.get_agent_conversation_history(key) == []
    with pytest.raises(ValueError, match="session_key"):
        await engine.get_agent_conversation_history("no-type-suffix")


# -- task context --------------------------------------------------------------------


async def test_task_context_round_trips_through_the_engine_unchanged(
    engine: ContextEngine,
) -> None:
    ctx = TaskContext({"user_id": "u1", "chat_id": "c1", "metadata": {"k": b"\x00"}})
    ctx.add_context_update("note", {"when": "now", "blob": b"\xff"}, {"m": 1})
    ctx.track_file_operation("/tmp/a.txt", "read")
    ctx.track_model_usage("gpt", "openai", "chat")
    sid = _sid()
    assert await engine.store_task_context(sid, ctx) is True
    got = await engine.get_task_context(sid)
    assert got is not None and got.to_dict() == ctx.to_dict()
    assert await engine.get_task_context(_sid()) is None


async def test_store_task_context_rejects_other_types(engine: ContextEngine) -> None:
    with pytest.raises(TypeError, match="TaskContext"):
        await engine.store_task_context(_sid(), {"user_id": "u"})  # type: ignore[arg-type]


# -- expiry and cleanup --------------------------------------------------------------


async def test_each_session_expires_on_its_own(store_name: str) -> None:
    engine = await _engine(store_name, session_ttl=0.6)
    old, kept = _sid(), _sid()
    await engine.create_session(old, "u")
    await engine.add_conversation_message(old, "user", "bye")
    await engine.create_session(kept, "u")
    for _ in range(4):
        await asyncio.sleep(0.25)
        await engine.add_conversation_message(kept, "user", "still here")
    assert await engine.get_session(old) is None
    assert await engine.get_conversation_history(old) == []
    s = await engine.get_session(kept)
    assert s is not None and len(await engine.get_conversation_history(kept)) == 4
    stats = await engine.get_metrics()
    assert stats["total_sessions"] == 1
    await engine.close()


class _State(TypedDict):
    n: int


def _graph(saver: ContextEngineSaver) -> Any:
    g = StateGraph(_State)
    g.add_node("inc", lambda s: {"n": s["n"] + 1})
    g.add_edge(START, "inc")
    g.add_edge("inc", END)
    return g.compile(checkpointer=saver)


async def test_cleanup_removes_idle_sessions_with_their_threads_and_nothing_else(
    engine: ContextEngine,
) -> None:
    saver = ContextEngineSaver(engine)
    graph = _graph(saver)
    idle, busy = _sid(), _sid()
    for sid in (idle, busy):
        await engine.create_session(sid, "u")
        await engine.add_conversation_message(sid, "user", "hi")
        await engine.store_task_context(sid, TaskContext({"chat_id": sid}))
        await engine.create_conversation_session(
            sid,
            [{"id": "a", "type": "agent"}, {"id": "b", "type": "agent"}],
            "agent_to_agent",
        )
        await graph.ainvoke({"n": 0}, {"configurable": {"thread_id": sid}})
    await asyncio.sleep(0.05)
    await engine.update_session(busy, increment_requests=True)
    removed = await engine.cleanup_expired_sessions(max_idle_hours=0.03 / 3600)
    assert removed == 1
    assert await engine.get_session(idle) is None
    assert await engine.get_conversation_history(idle) == []
    assert await engine.get_task_context(idle) is None
    assert await engine.get_conversation_session(f"{idle}_agent_to_agent") is None
    assert await saver.aget_tuple({"configurable": {"thread_id": idle}}) is None
    assert await engine.get_session(busy) is not None
    assert len(await engine.get_conversation_history(busy)) == 1
    assert await engine.get_task_context(busy) is not None
    assert await engine.get_conversation_session(f"{busy}_agent_to_agent") is not None
    assert await saver.aget_tuple({"configurable": {"thread_id": busy}}) is not None


# -- checkpoint helpers: a namespace of their own ------------------------------------


async def test_checkpoint_helpers_round_trip_and_list_newest_stored_first(
    engine: ContextEngine,
) -> None:
    thread = _sid()
    data = {"workflow_state": "cleaning", "processed": 1000, "raw": b"\x00\x01"}
    assert await engine.store_checkpoint(thread, "checkpoint_001", data, {"v": "1.0"})
    await engine.store_checkpoint(thread, "checkpoint_002", {"step": 2})
    got = await engine.get_checkpoint(thread, "checkpoint_001")
    assert got is not None and got["data"] == data and got["metadata"] == {"v": "1.0"}
    latest = await engine.get_checkpoint(thread)
    assert latest is not None and latest["checkpoint_id"] == "checkpoint_002"
    assert latest["parent_checkpoint_id"] == "checkpoint_001"
    listed = await engine.list_checkpoints(thread, limit=5)
    assert [c["checkpoint_id"] for c in listed] == ["checkpoint_002", "checkpoint_001"]
    assert await engine.get_checkpoint(thread, "missing") is None
    assert await engine.list_checkpoints(_sid()) == []


async def test_the_latest_helper_checkpoint_is_the_one_stored_last_not_the_largest_id(
    engine: ContextEngine,
) -> None:
    thread = _sid()
    await engine.store_checkpoint(thread, "step_b", {"at": "b"})
    await engine.store_checkpoint(thread, "step_a", {"at": "a"})
    latest = await engine.get_checkpoint(thread)
    assert latest is not None and latest["checkpoint_id"] == "step_a"
    await engine.store_checkpoint(thread, "step_b", {"at": "b again"})
    latest = await engine.get_checkpoint(thread)
    assert latest is not None and latest["data"] == {"at": "b again"}
    listed = await engine.list_checkpoints(thread)
    assert [c["checkpoint_id"] for c in listed] == ["step_b", "step_a"]


async def test_checkpoint_helpers_never_touch_a_graphs_thread(
    engine: ContextEngine,
) -> None:
    thread = _sid()
    saver = ContextEngineSaver(engine)
    graph = _graph(saver)
    config = {"configurable": {"thread_id": thread}}
    await graph.ainvoke({"n": 41}, config)
    await engine.store_checkpoint(thread, "checkpoint_001", {"step": "cleaning"})
    assert (await graph.aget_state(config)).values == {"n": 42}
    assert (await graph.ainvoke({"n": 1}, config)) == {"n": 2}
    history = [s async for s in graph.aget_state_history(config)]
    assert all(set(s.values) <= {"n"} for s in history)
    got = await engine.get_checkpoint(thread)
    assert got is not None and got["data"] == {"step": "cleaning"}


# -- metrics and health --------------------------------------------------------------


async def test_metrics_are_read_from_the_store_by_every_engine(store_name: str) -> None:
    options: dict[str, Any] = {}
    in_process = store_name.startswith("memory")
    if not in_process:
        options["key_prefix"] = f"shared{uuid.uuid4().hex[:8]}"
    first = await _engine(store_name, **dict(options))
    second = first if in_process else await _engine(store_name, **options)
    for i in range(3):
        await first.create_session(f"m{i}", "u")
        await first.add_conversation_message(f"m{i}", "user", "x")
    await first.end_session("m0")
    await first.store_checkpoint("m1", "c1", {"a": 1})
    metrics = await second.get_metrics()
    assert metrics["total_sessions"] == 3
    assert metrics["active_sessions"] == 2
    assert metrics["total_messages"] == 3
    assert metrics["total_checkpoints"] == 1
    assert metrics["storage_backend"] == ("memory" if in_process else "redis")
    assert set(metrics["storage_performance"]) >= {"avg_response_time"}
    health = await second.health_check()
    assert health["status"] == "healthy" and health["issues"] == []
    assert health["redis_connected"] is (not in_process)
    assert health["active_sessions"] == 2 and health["total_messages"] == 3
    await first.close()
    await second.close()


def test_engine_options_are_validated_with_the_option_named() -> None:
    with pytest.raises(InvalidConfigError, match="session_ttl"):
        ContextEngine(session_ttl=0)
    with pytest.raises(InvalidConfigError, match="max_conversation_messages"):
        ContextEngine(max_conversation_messages=0)


async def test_singleton_is_created_once_and_closed(monkeypatch: Any) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_HOST", raising=False)
    assert get_context_engine() is None
    engines = await asyncio.gather(
        initialize_context_engine(), initialize_context_engine()
    )
    assert engines[0] is engines[1] is get_context_engine()
    await engines[0].create_session("single", "u")
    await close_context_engine()
    assert get_context_engine() is None
    await close_context_engine()


async def test_singleton_refuses_other_options_instead_of_ignoring_them(
    monkeypatch: Any,
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_HOST", raising=False)
    first = await initialize_context_engine(max_conversation_messages=10)
    try:
        assert await initialize_context_engine() is first
        assert await initialize_context_engine(max_conversation_messages=10) is first
        with pytest.raises(InvalidConfigError, match="already initialized"):
            await initialize_context_engine(max_conversation_messages=20)
        mine = ContextEngine()
        with pytest.raises(InvalidConfigError, match="different engine"):
            await initialize_context_engine(mine)
    finally:
        await close_context_engine()


async def test_singleton_race_leaves_the_callers_engine_open(monkeypatch: Any) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_HOST", raising=False)
    theirs, mine = ContextEngine(), ContextEngine()
    closed: list[ContextEngine] = []

    async def spy_close(engine: ContextEngine) -> None:
        closed.append(engine)

    async def slow_initialize(engine: ContextEngine) -> bool:
        await asyncio.sleep(0.01)  # both racers pass the "none installed" check
        return True

    monkeypatch.setattr(ContextEngine, "close", spy_close)
    monkeypatch.setattr(ContextEngine, "initialize", slow_initialize)
    results = await asyncio.gather(
        initialize_context_engine(theirs),
        initialize_context_engine(mine),
        return_exceptions=True,
    )
    try:
        winner = get_context_engine()
        assert winner in (theirs, mine)
        assert sum(r is winner for r in results) == 1
        assert [type(r) for r in results if r is not winner] == [InvalidConfigError]
        assert closed == []
    finally:
        await close_context_engine()


def test_sync_metrics_twin_matches_the_store() -> None:
    engine = ContextEngine()
    asyncio.run(engine.create_session("x", "u"))
    assert engine.get_metrics_snapshot()["total_sessions"] == 1
    assert engine.health_check_sync()["status"] == "healthy"


async def test_ids_no_store_can_keep_raise_typed_errors_on_every_store(
    engine: ContextEngine,
) -> None:
    """A lone surrogate in a session id, user id or session key: the same
    InvalidConfigError on every store (Redis keys take UTF-8 only), nothing
    stored."""
    lone = "\ud800"
    calls = [
        lambda: engine.create_session(lone, "u1"),
        lambda: engine.create_session("s-lone", lone),
        lambda: engine.update_session(lone, increment_requests=True),
        lambda: engine.add_conversation_message(lone, "user", "hi"),
        lambda: engine.get_conversation_history(lone),
        lambda: engine.list_sessions(user_id=lone),
        lambda: engine.get_conversation_session(f"{lone}_agent_to_agent"),
        lambda: engine.store_checkpoint(lone, "c1", {"x": 1}),
    ]
    for call in calls:
        with pytest.raises(InvalidConfigError, match="valid Unicode text"):
            await call()
    assert await engine.list_all_sessions() == []
