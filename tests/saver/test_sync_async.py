"""One saver serves both APIs: sync calls made on the event loop thread complete."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from redis.cluster import RedisCluster

from aiecs_checkpoint import ContextEngineSaver
from tests.conftest import engine_for


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


async def test_sync_calls_on_the_event_loop_thread_complete_instead_of_deadlocking(
    saver: ContextEngineSaver,
) -> None:
    """Sync methods never hop onto the loop the async I/O uses (Redis has a sync
    client of its own), so calling them from a coroutine cannot deadlock."""
    t = f"loop-{uuid.uuid4()}"
    cp = empty_checkpoint()
    version = f"{1:032}.0"
    cp["channel_values"] = {"a": 1}
    cp["channel_versions"] = {"a": version}
    stored = saver.put(cfg(t), cp, {"step": 0}, {"a": version})
    saver.put_writes(stored, [("a", 2)], "task")
    tup = saver.get_tuple(cfg(t))
    assert tup is not None and tup.pending_writes == [("task", "a", 2)]
    assert [x.config for x in saver.list(cfg(t))] == [stored]
    assert await saver.aget_tuple(cfg(t)) is not None


async def test_the_async_api_does_no_sync_redis_io_on_the_event_loop(
    store_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 #16: entering the saver (cluster detection included) and every
    async method use the asyncio client: a sync Redis command issued from the
    event loop's thread would block every other task of the loop."""
    on_loop: list[str] = []

    def guarded(original: Any) -> Any:
        def execute_command(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                on_loop.append(str(args[0]))
            return original(self, *args, **kwargs)

        return execute_command

    for cls in (redis.Redis, RedisCluster):
        monkeypatch.setattr(cls, "execute_command", guarded(cls.execute_command))
    engine = engine_for(store_name)
    async with ContextEngineSaver(engine, track_sessions=True) as saver:
        t = f"loop-{uuid.uuid4()}"
        cp = empty_checkpoint()
        cp["channel_values"] = {"a": 1}
        cp["channel_versions"] = {"a": "1"}
        stored = await saver.aput(cfg(t), cp, {"step": 0, "run_id": "r"}, {"a": "1"})
        await saver.aput_writes(stored, [("a", 2)], "task")
        assert await saver.aget_tuple(cfg(t)) is not None
        assert [x.config async for x in saver.alist(cfg(t))] == [stored]
        assert [x async for x in saver.alist(None, limit=1)]
        await saver.acopy_thread(t, f"{t}-copy")
        await saver.aprune([t], strategy="keep_latest")
        await saver.adelete_for_runs(["r"])
        await saver.adelete_thread(f"{t}-copy")
    assert on_loop == []
