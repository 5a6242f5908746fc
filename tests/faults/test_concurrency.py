"""Concurrency (issue 13, section 7).

Many asyncio tasks and OS threads write their own threads and read one shared
thread at once, sync and async on one saver, and (on Redis) other processes do
the same on the same server. No write may be lost, nothing may deadlock, and a
ticker task on the event loop must never be kept waiting longer than about one
store operation.

Why the stall check compares within the run: an absolute limit would be a
timed assertion on a shared 2-core machine. What the guarantee excludes is the
loop being held across operations (a coroutine's successive calls that never
yield, a lock waited for on the loop, a blocking call made on it). A loop held
by at most one operation at a time waits at most for one operation another
thread holds a lock for plus the one it runs itself, give or take thread
switches. So the largest tick gap is compared with the slowest sync call plus
the slowest async call timed in the same run, plus a switch allowance. To keep
that yardstick about the saver, the loop runs only saver calls and the ticker
(graph runs on the loop add LangGraph's own work between calls).
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import ContextEngineSaver
from tests.conftest import _redis_param, engine_for, redis_url
from tests.faults._support import (
    Child,
    GraphSpec,
    RecordingSaver,
    Ticker,
    acked_missing,
    build_graph,
    cfg,
    fresh_prefix,
    repeated_runs,
)

SPEC = GraphSpec(steps=3)
INVOKES = 4
DEADLOCK_S = 120.0
"""Far longer than the work takes; reaching it means something waits forever."""
READ_PAUSE_S = 0.002
"""Readers pause between reads (a reader spinning on the GIL is not a workload)."""
SWITCH_SLACK_S = 0.05
"""Allowance for thread switches on 2 cores (the test sets a 1 ms interval)."""
LONG_THREAD = 100
"""Checkpoints of the shared thread the stall test lists and copies."""
ASYNC_OPS = 40
"""Rounds of (aput, aget_tuple, alist) each task of the stall test makes."""


@pytest.fixture(params=["memory", _redis_param("redis")])
async def recording_saver(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    engine = engine_for(request.param, key_prefix=fresh_prefix("cc"))
    async with RecordingSaver(engine) as saver:
        yield saver


async def _hammer(
    saver: RecordingSaver, tag: str, sync_writers: int, async_writers: int
) -> dict[str, Any]:
    """Writers on their own threads (OS threads and tasks), one async writer on
    the shared thread, readers of it in OS threads and tasks; returns what the
    readers saw and the writer threads' names."""
    graph = build_graph(saver, SPEC, tag)
    shared = f"{tag}-shared"
    stop = threading.Event()
    seen: list[list[int]] = []
    errors: list[BaseException] = []

    def read_sync() -> None:
        mine: list[int] = []
        seen.append(mine)
        try:
            while not stop.is_set():
                tup = saver.get_tuple(cfg(shared))
                if tup is not None:
                    mine.append(len(tup.checkpoint["channel_values"].get("log", [])))
                time.sleep(READ_PAUSE_S)
        except BaseException as exc:
            errors.append(exc)

    async def read_async() -> None:
        raw: list[int] = []
        live: list[int] = []  # get_state also applies the latest pending writes
        seen.extend([raw, live])
        while not stop.is_set():
            tup = await saver.aget_tuple(cfg(shared))
            if tup is not None:
                raw.append(len(tup.checkpoint["channel_values"].get("log", [])))
            state = await graph.aget_state(cfg(shared))
            live.append(len(state.values.get("log", [])))
            await asyncio.sleep(READ_PAUSE_S)

    def write_sync(thread: str) -> None:
        for _ in range(INVOKES):
            graph.invoke({"log": [], "marks": []}, cfg(thread))

    async def write_async(thread: str) -> None:
        for _ in range(INVOKES):
            await graph.ainvoke({"log": [], "marks": []}, cfg(thread))

    sync_names = [f"{tag}-s{i}" for i in range(sync_writers)]
    async_names = [f"{tag}-a{i}" for i in range(async_writers)]
    readers = [threading.Thread(target=read_sync, daemon=True) for _ in range(3)]
    for r in readers:
        r.start()
    reader_tasks = [asyncio.ensure_future(read_async()) for _ in range(3)]
    writers = [asyncio.to_thread(write_sync, n) for n in sync_names]
    writers += [write_async(n) for n in async_names]
    writers.append(write_async(shared))
    try:
        await asyncio.wait_for(asyncio.gather(*writers), DEADLOCK_S)
    finally:
        stop.set()
    await asyncio.wait_for(asyncio.gather(*reader_tasks), DEADLOCK_S)
    for r in readers:
        r.join(DEADLOCK_S)
        assert not r.is_alive(), "a reader thread is stuck"
    assert not errors, errors
    return {"seen": seen, "threads": [*sync_names, *async_names, shared]}


def _check_no_write_lost(saver: ContextEngineSaver, threads: list[str]) -> None:
    log, count = repeated_runs(SPEC, INVOKES)
    for thread in threads:
        history = list(saver.list(cfg(thread)))
        assert len(history) == count, (thread, len(history), count)
        assert history[0].checkpoint["channel_values"]["log"] == log, thread


async def test_tasks_and_threads_at_once_lose_no_write_and_never_deadlock(
    recording_saver: RecordingSaver,
) -> None:
    """6 OS threads and 6 tasks run graphs on their own threads while 3 threads
    and 3 tasks read a thread another task writes: every checkpoint of every
    thread is there, each reader saw the shared thread only move forward, and
    everything ends (a hang dumps every stack and exits)."""
    faulthandler.dump_traceback_later(DEADLOCK_S + 30, exit=True, file=sys.stderr)
    try:
        result = await _hammer(recording_saver, "one", sync_writers=6, async_writers=6)
    finally:
        faulthandler.cancel_dump_traceback_later()
    for reads in result["seen"]:
        assert reads == sorted(reads), "a reader saw the shared thread go back"
    assert sum(map(len, result["seen"])) > 0
    _check_no_write_lost(recording_saver, result["threads"])
    assert not acked_missing(recording_saver, recording_saver.log.acked)


def _hand_put(thread: str, n: int, parent: Any) -> tuple[Any, Any, Any, Any]:
    """Arguments of a put whose `items` channel holds n elements (one new)."""
    checkpoint = empty_checkpoint()
    version = f"{n:032}.0"
    checkpoint["channel_values"] = {"items": [f"item-{i}" * 20 for i in range(n)]}
    checkpoint["channel_versions"] = {"items": version}
    return parent or cfg(thread), checkpoint, {"step": n}, {"items": version}


async def test_the_event_loop_never_waits_longer_than_about_one_store_operation(
    recording_saver: RecordingSaver,
) -> None:
    """OS threads make slow sync calls (long lists, copies of a long thread,
    puts) while tasks make async calls on the same saver; the ticker's largest
    gap stays within the two slowest single operations (one the loop may wait
    for, one it runs) plus thread-switch slack."""
    saver = recording_saver
    shared = "stall-shared"
    parent = None
    for n in range(1, LONG_THREAD + 1):
        parent = saver.put(*_hand_put(shared, n, parent))
    stop = threading.Event()

    def sync_worker(i: int) -> None:
        own, parent_cfg, n = f"stall-s{i}", None, 0
        while not stop.is_set():
            n += 1
            parent_cfg = saver.put(*_hand_put(own, n, parent_cfg))
            with saver.timed("list", cfg(shared)):
                assert len(list(saver.list(cfg(shared)))) >= LONG_THREAD
            with saver.timed("copy_thread", cfg(shared)):
                saver.copy_thread(shared, f"{own}-copy")

    async def async_worker(i: int) -> None:
        own, parent_cfg = f"stall-a{i}", None
        for n in range(1, ASYNC_OPS + 1):
            parent_cfg = await saver.aput(*_hand_put(own, n, parent_cfg))
            assert await saver.aget_tuple(cfg(shared)) is not None
            with saver.timed("alist", cfg(shared)):
                assert len([t async for t in saver.alist(cfg(shared), limit=5)]) == 5

    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    workers = [threading.Thread(target=sync_worker, args=(i,)) for i in range(4)]
    try:
        ticker = Ticker().start()
        for w in workers:
            w.start()
        await asyncio.wait_for(
            asyncio.gather(*(async_worker(i) for i in range(4))), DEADLOCK_S
        )
        await ticker.stop()
    finally:
        stop.set()
        for w in workers:
            w.join(DEADLOCK_S)
        sys.setswitchinterval(previous)
    assert not saver.log.errors()
    calls = saver.log.calls
    slowest_sync = max(c.seconds for c in calls if not c.op.startswith("a"))
    slowest_async = max(c.seconds for c in calls if c.op.startswith("a"))
    allowed = slowest_sync + slowest_async + SWITCH_SLACK_S
    print(
        f"ticks={ticker.ticks} largest gap={ticker.max_gap * 1000:.1f} ms; slowest "
        f"sync={slowest_sync * 1000:.1f} ms async={slowest_async * 1000:.1f} ms"
    )
    assert ticker.max_gap <= allowed, (
        f"the loop stalled {ticker.max_gap * 1000:.0f} ms, more than the slowest "
        f"sync and async operations together ({allowed * 1000:.0f} ms with slack)"
    )


@pytest.mark.parametrize("store", [_redis_param("redis")])
async def test_processes_threads_and_tasks_on_one_server_lose_no_write(
    store: str,
) -> None:
    """Two other processes do the same on the same Redis and key prefix while
    this one runs: every thread of every process has all its checkpoints, and
    each reader saw the shared thread only move forward."""
    prefix = fresh_prefix("cp")
    url = redis_url()
    argv = ["--url", url, "--prefix", prefix, "--shared", "one-shared"]
    argv += ["--writers", "6", "--invokes", str(INVOKES), "--steps", str(SPEC.steps)]
    children = [
        Child("concurrency", *argv, "--tag", f"p{i}", gated=True) for i in range(2)
    ]
    for child in children:
        child.wait_ready()
    engine = engine_for(store, key_prefix=prefix)
    async with RecordingSaver(engine) as saver:
        for child in children:
            child.go()
        ticker = Ticker().start()
        result = await _hammer(saver, "one", sync_writers=4, async_writers=4)
        await ticker.stop()
        outputs = [
            json.loads(child.finish(timeout=DEADLOCK_S).strip().splitlines()[-1])
            for child in children
        ]
        for out in outputs:
            assert out["errors"] == [] and out["monotonic"], out
        child_threads = [f"p{i}-w{j}" for i in range(2) for j in range(6)]
        _check_no_write_lost(saver, result["threads"] + child_threads)
        print(f"child reads: {[o['reads'] for o in outputs]}")
