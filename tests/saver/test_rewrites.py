"""copy_thread into a thread that already has data keeps both histories exact."""

from __future__ import annotations

import uuid
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import ContextEngineSaver


async def put_list(
    saver: ContextEngineSaver, thread: str, items: list[Any], step: int
) -> None:
    latest = await saver.aget_tuple({"configurable": {"thread_id": thread}})
    config: dict[str, Any] = {
        "configurable": {"thread_id": thread, "checkpoint_ns": ""}
    }
    base = latest.checkpoint["channel_values"].get("msgs", []) if latest else []
    if latest:
        config = latest.config
    version = saver.get_next_version(None, None).replace("1", str(step + 1), 1)
    cp = empty_checkpoint()
    cp["channel_values"] = {"msgs": [*base, *items]}
    cp["channel_versions"] = {"msgs": version}
    await saver.aput(config, cp, {"step": step}, {"msgs": version})


async def latest_msgs(saver: ContextEngineSaver, thread: str) -> list[Any]:
    tup = await saver.aget_tuple({"configurable": {"thread_id": thread}})
    assert tup is not None
    return list(tup.checkpoint["channel_values"]["msgs"])


async def test_copying_again_after_both_threads_grew_keeps_each_list_exact(
    saver: ContextEngineSaver,
) -> None:
    src, dst = f"src-{uuid.uuid4()}", f"dst-{uuid.uuid4()}"
    await put_list(saver, src, ["a"], 0)
    await saver.acopy_thread(src, dst)
    await put_list(saver, src, ["b-src"], 1)
    await put_list(saver, dst, ["b-dst"], 1)
    await saver.acopy_thread(src, dst)
    assert await latest_msgs(saver, src) == ["a", "b-src"]
    history = [
        t.checkpoint["channel_values"]["msgs"]
        async for t in saver.alist({"configurable": {"thread_id": dst}})
    ]
    assert sorted(map(tuple, history)) == [("a",), ("a", "b-dst"), ("a", "b-src")]
    fresh = ContextEngineSaver(saver.engine)
    again = [
        t.checkpoint["channel_values"]["msgs"]
        async for t in fresh.alist({"configurable": {"thread_id": dst}})
    ]
    assert again == history


async def test_copying_into_a_thread_whose_shared_log_was_deleted_reads_the_copy(
    saver: ContextEngineSaver,
) -> None:
    """The target once shared the source's element log, both grew apart, and the
    target was deleted: the copy must not come back under the old log's epoch,
    which the writer's and another saver's caches still hold by position."""
    src, dst = f"src-{uuid.uuid4()}", f"dst-{uuid.uuid4()}"
    other = ContextEngineSaver(saver.engine)
    await put_list(saver, src, ["a"], 0)
    await saver.acopy_thread(src, dst)
    await put_list(saver, src, ["b-src"], 1)
    await put_list(saver, dst, ["b-dst"], 1)
    assert await latest_msgs(other, dst) == ["a", "b-dst"]

    await saver.adelete_thread(dst)
    await saver.acopy_thread(src, dst)

    assert await latest_msgs(saver, dst) == ["a", "b-src"]
    assert await latest_msgs(other, dst) == ["a", "b-src"]
    await put_list(saver, dst, ["c"], 2)
    assert await latest_msgs(ContextEngineSaver(saver.engine), dst) == [
        "a",
        "b-src",
        "c",
    ]
