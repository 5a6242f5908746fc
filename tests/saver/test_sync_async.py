"""One saver serves both APIs: sync calls made on the event loop thread complete."""

from __future__ import annotations

import uuid
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import ContextEngineSaver


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
