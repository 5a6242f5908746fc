"""Redis crash and restart (issue 13, section 1).

A real `redis-server` with the append-only file on (`appendfsync always`) is
killed with SIGKILL while 50 graph runs (sync and async, some pausing on
`interrupt()`) write to it, then restarted on the same port and data. Frozen
with SIGSTOP, it answers nothing while connections stay open: a call must still
end within `CALL_BOUND_S`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, StoreError
from tests.conftest import REDIS_INSTALLED
from tests.faults._support import (
    CALL_BOUND_S,
    GraphSpec,
    RecordingSaver,
    acked_missing,
    aresume_to_completion,
    build_graph,
    cfg,
    check_history,
    expected_log,
    fresh_prefix,
    resume_to_completion,
    seeded,
)
from tests.servers import PersistentRedisServer, RedisServer

pytestmark = pytest.mark.skipif(not REDIS_INSTALLED, reason="needs redis-server")

RUNS = 50
KILL_AFTER_PUTS = 150
"""The server is killed once this many puts were acknowledged (runs mid-way)."""
DOWN_S = 3.0
"""How long the server stays dead: longer than the store's retries (~1 s), so
calls in flight fail instead of riding the outage out."""


@pytest.fixture
def aof_server() -> Iterator[PersistentRedisServer]:
    with PersistentRedisServer(appendfsync="always") as server:
        yield server


def _plan(rng: Any) -> list[tuple[str, GraphSpec, bool, str]]:
    """(thread, spec, sync?, durability) of each run: half sync, a fifth with
    an interrupt, a third with durability="sync"."""
    plan = []
    for i in range(RUNS):
        spec = GraphSpec(steps=8, ask=i % 5 == 0, pause_s=rng.choice([0.02, 0.05]))
        durability = "sync" if i % 3 == 0 else "async"
        plan.append((f"run-{i}", spec, i % 2 == 0, durability))
    return plan


@pytest.mark.slow
async def test_redis_kill9_with_aof_loses_no_acknowledged_checkpoint_and_runs_resume(
    aof_server: PersistentRedisServer,
) -> None:
    """Required: every checkpoint whose put returned is there after the restart;
    every failing call raised `StoreError` (no fallback: the engine stays on
    Redis); every run resumes from its last checkpoint to completion; no call
    took longer than `CALL_BOUND_S`."""
    rng = seeded("redis-kill9")
    prefix = fresh_prefix("crash")
    plan = _plan(rng)
    done = {spec: expected_log(spec) for _, spec, _, _ in plan}
    engine = ContextEngine(redis_url=aof_server.url, key_prefix=prefix)
    failures: dict[str, BaseException] = {}
    pool = ThreadPoolExecutor(max_workers=RUNS // 2)
    async with RecordingSaver(engine) as saver:
        first = {spec: build_graph(saver, spec, "before") for _, spec, _, _ in plan}

        async def run(thread: str, spec: GraphSpec, sync: bool, mode: str) -> None:
            graph = first[spec]
            try:
                if sync:
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(
                        pool,
                        lambda: resume_to_completion(graph, thread, durability=mode),
                    )
                else:
                    await aresume_to_completion(graph, thread, durability=mode)
            except Exception as exc:
                failures[thread] = exc

        runs = [asyncio.ensure_future(run(*p)) for p in plan]
        while len(saver.log.acked) < KILL_AFTER_PUTS:
            assert not all(r.done() for r in runs), "runs ended before the kill"
            await asyncio.sleep(0.005)
        aof_server.kill()
        await asyncio.sleep(DOWN_S)
        aof_server.start()
        await asyncio.gather(*runs)
        acked_before = len(saver.log.acked)

        # The same saver reconnects; every run resumes from its last checkpoint.
        last = {t: saver.get_tuple(cfg(t)) for t, _, _, _ in plan}
        second = {spec: build_graph(saver, spec, "after") for _, spec, _, _ in plan}

        async def resume(thread: str, spec: GraphSpec, sync: bool, mode: str) -> None:
            graph = second[spec]
            if sync:
                await asyncio.to_thread(resume_to_completion, graph, thread)
            else:
                await aresume_to_completion(graph, thread)

        await asyncio.gather(*(resume(*p) for p in plan))
        health = await engine.health_check()
    pool.shutdown()

    errors = saver.log.errors()
    assert failures, "the kill hit no run: the test proved nothing"
    untyped = {t: repr(e) for t, e in failures.items() if not isinstance(e, StoreError)}
    assert not untyped, f"runs failed with other errors than StoreError: {untyped}"
    assert all(isinstance(e, StoreError) for e in errors), [
        repr(e) for e in errors if not isinstance(e, StoreError)
    ]
    assert engine.storage_backend == "redis" and health["redis_connected"]
    slowest = saver.log.slowest()
    assert slowest <= CALL_BOUND_S, f"a call took {slowest:.1f}s"

    fresh = ContextEngine(redis_url=aof_server.url, key_prefix=prefix)
    with ContextEngineSaver(fresh) as reader:
        missing = acked_missing(reader, saver.log.acked)
        assert not missing, f"{len(missing)} acknowledged checkpoints lost: {missing}"
        for thread, spec, _, _ in plan:
            history = check_history(reader, thread, spec, done[spec])
            ids = [t.checkpoint["id"] for t in history]
            before = last[thread]
            if before is None:
                continue
            # Resumed from its last checkpoint: that checkpoint is an ancestor of
            # the final one, and what ran before the kill did not run again.
            assert before.checkpoint["id"] in ids
            kept = before.checkpoint["channel_values"].get("marks", [])
            final = history[0].checkpoint["channel_values"]["marks"]
            assert set(kept) <= set(final), (thread, kept, final)
    print(
        f"acked before restart: {acked_before}; failed runs: {len(failures)}; "
        f"failed calls: {len(errors)}; slowest call: {slowest:.2f}s"
    )


# -- a frozen server ---------------------------------------------------------------


@pytest.fixture
def frozen_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


async def test_sync_and_async_calls_to_a_frozen_redis_raise_store_error_in_the_bound(
    frozen_server: RedisServer,
) -> None:
    """SIGSTOP keeps the server's sockets open and answers nothing (as a hung
    server or a network black hole would): a sync call (in a thread) and an
    async call made then must each raise `StoreError` within `CALL_BOUND_S`."""
    async with ContextEngineSaver.from_conn_string(
        frozen_server.url, key_prefix=fresh_prefix("frz")
    ) as saver:
        assert saver.get_tuple(cfg("t")) is None
        assert await saver.aget_tuple(cfg("t")) is None
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                saver.get_tuple(cfg("t"))
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        frozen_server.pause()
        caller = threading.Thread(target=call, daemon=True)
        started = time.monotonic()
        caller.start()
        try:
            with pytest.raises(StoreError):
                await asyncio.wait_for(saver.aget_tuple(cfg("t")), CALL_BOUND_S)
            caller.join(max(0.0, CALL_BOUND_S + 1 - (time.monotonic() - started)))
            waited = time.monotonic() - started
        finally:
            frozen_server.resume()
            caller.join(60)
        assert waited <= CALL_BOUND_S + 1, f"sync call still waiting at {waited:.1f}s"
        assert outcome and isinstance(outcome[0], StoreError), outcome


# -- a server that loses acknowledged writes -----------------------------------------


def test_runs_outliving_lost_acknowledged_writes_store_only_whole_checkpoints() -> None:
    """Redis restarts from a snapshot older than what it acknowledged while runs
    go on (as after a failover to a lagging replica). Whatever they store next
    must be readable and whole, or the run must fail with `StoreError`."""
    spec = GraphSpec(steps=8, pause_s=0.02)
    done = expected_log(spec)
    threads = [f"loss-{i}" for i in range(4)]
    prefix = fresh_prefix("ls")
    with PersistentRedisServer(appendonly=False) as server:
        engine = ContextEngine(redis_url=server.url, key_prefix=prefix)
        with RecordingSaver(engine) as saver:
            graph = build_graph(saver, spec, "run")

            errors: list[BaseException] = []

            def run(thread: str) -> None:
                try:
                    resume_to_completion(graph, thread, durability="sync")
                except Exception as exc:  # StoreError is fine: it fails loudly
                    errors.append(exc)

            runs = [threading.Thread(target=run, args=(t,)) for t in threads]
            for r in runs:
                r.start()
            while len(saver.log.acked) < 12:
                time.sleep(0.002)
            server.command("SAVE")  # what the lagging replica holds
            while len(saver.log.acked) < 24:
                time.sleep(0.002)
            server.kill()  # what was acknowledged since is lost
            server.start()
            for r in runs:
                r.join(60)
        untyped = [e for e in errors if not isinstance(e, StoreError)]
        assert not untyped, untyped
        reader_engine = ContextEngine(redis_url=server.url, key_prefix=prefix)
        with ContextEngineSaver(reader_engine) as reader:
            for thread in threads:
                for tup in reader.list(cfg(thread)):
                    log = tup.checkpoint["channel_values"].get("log", [])
                    assert log == done[: len(log)], (thread, log)
