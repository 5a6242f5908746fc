"""Fault scenarios shared by the tests and the measurement scripts in
`benchmarks/`: many graph runs at once (sync in OS threads, async on the loop),
and a Redis Cluster failover under them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from tests.faults._support import (
    GraphSpec,
    RecordingSaver,
    acked_missing,
    aresume_to_completion,
    build_graph,
    check_history,
    expected_log,
    fresh_prefix,
    resume_to_completion,
)
from tests.servers import RedisCluster

__all__ = [
    "FailoverResult",
    "Run",
    "drive",
    "failover_trial",
    "mixed_plan",
]


@dataclass(frozen=True)
class Run:
    """One graph run: its thread, graph, API (sync or async) and durability."""

    thread: str
    spec: GraphSpec
    sync: bool
    durability: str


def mixed_plan(
    runs: int, rng: random.Random, steps: int = 8, tag: str = "run"
) -> list[Run]:
    """Half sync, half async; every fifth pauses on `interrupt()`; a third
    with durability="sync"; nodes sleep 20 or 50 ms."""
    return [
        Run(
            f"{tag}-{i}",
            GraphSpec(steps=steps, ask=i % 5 == 0, pause_s=rng.choice([0.02, 0.05])),
            i % 2 == 0,
            "sync" if i % 3 == 0 else "async",
        )
        for i in range(runs)
    ]


def drive(
    saver: ContextEngineSaver,
    plan: list[Run],
    attempt: str,
    pool: ThreadPoolExecutor,
    failures: dict[str, BaseException],
    durability: bool = True,
) -> list[asyncio.Future[None]]:
    """Start every run of `plan` (to completion, through interrupts) on the
    running loop; a run that raises ends there, its error in `failures`."""
    graphs = {run.spec: build_graph(saver, run.spec, attempt) for run in plan}
    loop = asyncio.get_running_loop()

    async def one(run: Run) -> None:
        graph = graphs[run.spec]
        options = {"durability": run.durability} if durability else {}
        try:
            if run.sync:
                await loop.run_in_executor(
                    pool, lambda: resume_to_completion(graph, run.thread, **options)
                )
            else:
                await aresume_to_completion(graph, run.thread, **options)
        except Exception as exc:
            failures[run.thread] = exc

    return [asyncio.ensure_future(one(run)) for run in plan]


async def wait_for(
    condition: Callable[[], bool], runs: list[asyncio.Future[None]], what: str
) -> None:
    while not condition():
        if all(r.done() for r in runs):
            raise AssertionError(f"every run ended before {what}")
        await asyncio.sleep(0.005)


@dataclass
class FailoverResult:
    """What one failover trial saw."""

    acked: int
    lost: list[tuple[str, str, str]]
    window_s: float
    """Time from the oldest lost acknowledgement to the kill (0 when none)."""
    failed_runs: dict[str, BaseException]
    errors: list[BaseException]
    failover_s: float
    slowest_call_s: float
    resume_failures: dict[str, BaseException]
    unreadable: list[tuple[str, str, str]]
    """Acknowledged checkpoints whose read raised (`CorruptDataError` when a
    lost write left a list pointing past its log)."""
    checked: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


async def failover_trial(
    cluster: RedisCluster,
    rng: random.Random,
    *,
    runs: int = 30,
    lag_s: float = 0.0,
    engine_options: dict[str, Any] | None = None,
    kill_after_puts: int = 120,
    check: bool = True,
) -> FailoverResult:
    """Kill a master of `cluster` (one replica per master) under `runs` graph
    runs, wait for its replica to take over, resume every run to completion.

    With `lag_s`, the replica is cut off that long before the kill (frozen with
    SIGSTOP, its link dropped by the master) and thawed right after it: what
    the master acknowledged meanwhile never reached it, which is the window
    asynchronous replication leaves open.

    With `replica_acks` in `engine_options`, a new node joins as the promoted
    replica's replica once the first runs ended (writes to it raise
    `StoreError` until then), and the runs resume after that.
    """
    prefix = fresh_prefix("fo")
    plan = mixed_plan(runs, rng)
    done = {run.spec: expected_log(run.spec) for run in plan}
    options = dict(engine_options or {})
    engine = ContextEngine(redis_url=cluster.url, key_prefix=prefix, **options)
    failures: dict[str, BaseException] = {}
    pool = ThreadPoolExecutor(max_workers=runs)
    saver = RecordingSaver(engine)
    try:
        async with saver:
            started = drive(saver, plan, "before", pool, failures)
            await wait_for(
                lambda: len(saver.log.acked) >= kill_after_puts, started, "the kill"
            )
            victim = cluster.masters()[0]
            replica = cluster.replicas_of(victim)[0]
            if lag_s:
                # Frozen, the replica would still receive the stream into its
                # socket buffer; the master also drops the link, so what it
                # acknowledges from now on reaches no replica.
                replica.pause()
                victim.command("CLIENT", "KILL", "TYPE", "replica")
                await asyncio.sleep(lag_s)
            killed_at = time.monotonic()
            cluster.kill_master(victim)
            replica.resume()
            promoted = await asyncio.to_thread(cluster.wait_for_failover, victim)
            failover_s = time.monotonic() - killed_at
            await asyncio.gather(*started)
            if options.get("replica_acks"):
                # The promoted replica has no replica of its own: until a node
                # replaces the lost one, every write to it raises StoreError.
                await asyncio.to_thread(cluster.add_replica, promoted)
            resumed: dict[str, BaseException] = {}
            await asyncio.gather(*drive(saver, plan, "after", pool, resumed, False))
    finally:
        pool.shutdown()
    reader_engine = ContextEngine(redis_url=cluster.live_url, key_prefix=prefix)
    unreadable: list[tuple[str, str, str]] = []
    with ContextEngineSaver(reader_engine) as reader:
        lost = acked_missing(reader, saver.log.acked, None if check else unreadable)
        if check:
            assert not resumed, f"runs failed after the failover: {resumed}"
            for run in plan:
                check_history(reader, run.thread, run.spec, done[run.spec])
    at = dict(zip(saver.log.acked, saver.log.acked_at, strict=True))
    window = max((killed_at - at[key] for key in lost), default=0.0)
    return FailoverResult(
        acked=len(set(saver.log.acked)),
        lost=lost,
        window_s=max(window, 0.0),
        failed_runs=failures,
        errors=saver.log.errors(),
        failover_s=failover_s,
        slowest_call_s=saver.log.slowest(),
        resume_failures=resumed,
        unreadable=unreadable,
        checked=len(plan) if check else 0,
    )
