"""One serializer governs everything a saver and its engine store: checkpoints,
sessions and mirrored messages alike, or the mismatch is refused before
anything is stored."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, InvalidConfigError
from aiecs_checkpoint.domain.serde import CheckedSerializer
from tests.conftest import REDIS_INSTALLED, engine_for, redis_url
from tests.saver.test_serde import aes, leaks, redis_data, walk


def _reply(state: MessagesState) -> dict[str, Any]:
    return {"messages": [HumanMessage(f"echo {state['messages'][-1].text}")]}


def chat(saver: ContextEngineSaver) -> Any:
    builder = StateGraph(MessagesState)
    builder.add_node("reply", _reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


def everything_stored(engine: ContextEngine) -> list[str | bytes]:
    """Every str and bytes the engine's hot store keeps (checkpoints and domain)."""
    if engine.storage_backend == "memory":
        return list(walk(engine.checkpoints)) + list(walk(engine.domain))
    return list(redis_data(engine))


async def run_and_check_encrypted(saver: ContextEngineSaver) -> None:
    """A mirrored conversation is stored encrypted, and read back through the
    engine's domain API."""
    marker = f"MARKER-{uuid.uuid4().hex}"
    thread = f"t-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": thread}}
    await chat(saver).ainvoke({"messages": [HumanMessage(marker)]}, config)
    history = await saver.engine.get_conversation_history(thread)
    assert [m.content for m in history] == [marker, f"echo {marker}"]
    data = everything_stored(saver.engine)
    assert len(data) > 5
    assert leaks(data, [marker]) == set()


async def test_mirrored_messages_are_encrypted_by_the_savers_serde(
    store_name: str,
) -> None:
    engine = engine_for(store_name)  # built without a serde
    saver = ContextEngineSaver(
        engine, serde=aes(), track_sessions=True, mirror_messages=True
    )
    async with saver:
        await run_and_check_encrypted(saver)


def test_control_without_encryption_the_marker_is_found() -> None:
    async def scenario() -> None:
        saver = ContextEngineSaver(track_sessions=True, mirror_messages=True)
        marker = "MARKER-plain"
        config = {"configurable": {"thread_id": "p"}}
        await chat(saver).ainvoke({"messages": [HumanMessage(marker)]}, config)
        assert leaks(everything_stored(saver.engine), [marker]) == {marker}

    asyncio.run(scenario())


def test_the_saver_and_its_engine_share_one_serializer() -> None:
    enc = aes()
    engine = ContextEngine(serde=enc)
    assert isinstance(engine.serde, CheckedSerializer) and engine.serde.inner is enc
    assert ContextEngineSaver(engine).serde is engine.serde
    assert ContextEngineSaver(engine, serde=enc).serde is engine.serde
    assert ContextEngineSaver(engine, serde=engine.serde).serde is engine.serde
    alone = ContextEngineSaver(serde=enc)
    assert alone.serde is alone.engine.serde and alone.serde.inner is enc  # type: ignore[attr-defined]


def test_a_saver_with_another_serializer_than_its_engine_is_refused() -> None:
    engine = ContextEngine(serde=aes())
    with pytest.raises(InvalidConfigError, match="same object to both"):
        ContextEngineSaver(engine, serde=aes())  # another key, maybe


async def test_an_engine_that_already_stored_with_its_default_refuses_a_new_one() -> (
    None
):
    engine = ContextEngine()
    await engine.add_conversation_message("s1", "user", "stored in plaintext")
    with pytest.raises(InvalidConfigError, match="already stores"):
        ContextEngineSaver(engine, serde=aes())
    other = ContextEngine()
    ContextEngineSaver(other)  # its checkpoints use the engine's default
    with pytest.raises(InvalidConfigError, match="already stores"):
        ContextEngineSaver(other, serde=aes())


@pytest.mark.skipif(not REDIS_INSTALLED, reason="needs redis-server")
async def test_from_conn_string_passes_serde_and_session_tracking_to_the_engine() -> (
    None
):
    enc = aes()
    saver = ContextEngineSaver.from_conn_string(
        redis_url(),
        serde=enc,
        track_sessions=True,
        mirror_messages=True,
        key_prefix=f"c{uuid.uuid4().hex[:8]}",
    )
    async with saver:
        assert saver.engine.serde.inner is enc
        await run_and_check_encrypted(saver)


@pytest.mark.parametrize("with_redis", [False, True], ids=["memory", "redis"])
async def test_from_env_passes_serde_and_session_tracking_to_the_engine(
    monkeypatch: pytest.MonkeyPatch, with_redis: bool
) -> None:
    for name in ("REDIS_URL", "REDIS_HOST", "CLICKHOUSE_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    options: dict[str, Any] = {}
    if with_redis:
        if not REDIS_INSTALLED:
            pytest.skip("needs redis-server")
        monkeypatch.setenv("REDIS_URL", redis_url())
        options["key_prefix"] = f"e{uuid.uuid4().hex[:8]}"
    enc = aes()
    saver = ContextEngineSaver.from_env(
        serde=enc, track_sessions=True, mirror_messages=True, **options
    )
    async with saver:
        assert saver.engine.storage_backend == ("redis" if with_redis else "memory")
        assert saver.engine.serde.inner is enc
        await run_and_check_encrypted(saver)
