"""Cost of the ClickHouse cold archive: hot-path overhead and drain rate.

What is measured
----------------
1. Hot-path overhead.  The agent loop of ``benchmarks/agent_loop.py`` (one
   thread, ``--invokes`` ``ainvoke`` calls of 7 supersteps and 8 messages of
   ~500 B each; its graph and driver are imported from that script) runs on
   ``ours-memory`` and ``ours-memory+archive`` (``ContextEngine(archive=...)``
   with the default ``flush_interval`` and ``batch_size``), and with
   ``--redis-url`` also on ``ours-redis`` and ``ours-redis+archive``.  For each
   configuration the script reports the mean of the first and last
   ``--window`` invokes and the median of the last one, and per store the
   ratio archive / no-archive of the last-window mean and of the last-window
   median (each computed within a repeat, then the median over repeats).  The
   archive's worker is warmed up (client connected, tables created) before the
   timed invokes.  After the last invoke the script reports the backlog still
   queued, how long ``archive.flush()`` takes to deliver it, the archive's
   counters (enqueued / written / dropped / retried) and the rows ClickHouse
   holds afterwards, so a reader can see nothing was lost.

2. Drain rate.  A burst of ``--burst`` checkpoints (threads of
   ``--thread-len``; each checkpoint appends one ~500 B message to a
   ``messages`` list channel and is preceded by one ``put_writes``) goes
   through a sync ``ContextEngineSaver`` on the memory store as fast as it
   can, then ``archive.flush()`` waits until ClickHouse holds every row.  Two
   modes, each on its own engine and database:

   * worker as is: default settings, the worker drains while the burst runs;
     rows/s and checkpoints/s are counted from the first put until ``flush()``
     returned True;
   * worker held off: ``batch_size`` and ``flush_interval`` are out of reach
     during the burst, then the default settings are put back on the live
     ``Archive`` (its ``settings`` attribute) and ``flush()`` drains the whole
     backlog in default batches; rows/s and checkpoints/s are those of the
     flush alone (the drain without a burst competing for the GIL).

   Also reported: the saver's median cost per checkpoint (put + put_writes)
   without and with the archive, and the mean time per checkpoint spent
   building and queueing the archive rows (the tier's ``archived_put`` /
   ``archived_writes`` are wrapped with a timer), i.e. the enqueue cost on the
   hot path, with and without a busy worker.

Every figure is the median over ``--repeat`` repeats; ratios are measured in
the same run on the same machine, and nothing is asserted about time.  Every
engine gets a fresh ClickHouse database per repeat (dropped afterwards) and a
unique Redis ``key_prefix`` (its keys are deleted afterwards), and is closed.

ClickHouse is ``CLICKHOUSE_URL`` when set (``http://user:password@host:8123``;
the database in it is ignored), else the chdb-backed HTTP front of the test
suite (``tests/servers_clickhouse.py``), started once for the whole run.  That
front runs on the same cores as the benchmark, so its CPU use is part of what
is measured.

Run: ``python benchmarks/archive.py [--invokes N] [--repeat R] [--window W]
[--burst N] [--thread-len L] [--only PART[,PART]] [--redis-url URL]``
(``--only`` takes ``overhead`` and/or ``drain``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, empty_checkpoint

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(ROOT))

from agent_loop import (  # noqa: E402
    MESSAGE_BYTES,
    MESSAGES_PER_INVOKE,
    STEPS_PER_INVOKE,
    WARMUP_INVOKES,
    _content,
    _drive,
    _version,
    build_graph,
)

from aiecs_checkpoint import ContextEngine, ContextEngineSaver  # noqa: E402
from aiecs_checkpoint.stores.clickhouse import layout as C  # noqa: E402
from aiecs_checkpoint.stores.clickhouse.archive import ArchiveSettings  # noqa: E402
from tests.servers_clickhouse import ClickHouseServer  # noqa: E402

MEMORY = "memory"
REDIS = "redis"
PARTS = ("overhead", "drain")
FLUSH_TIMEOUT_S = 300.0


# -- where ClickHouse is ---------------------------------------------------------


@dataclass(frozen=True)
class ClickHouseTarget:
    """Connection options shared by every archive of the run."""

    host: str
    port: int
    user: str
    password: str
    label: str

    def settings(self, **options: Any) -> ArchiveSettings:
        """Settings for a fresh database, defaults for everything else."""
        options.setdefault("database", f"bench{uuid.uuid4().hex[:8]}")
        return ArchiveSettings(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            **options,
        )

    def client(self) -> Any:
        import clickhouse_connect

        return clickhouse_connect.get_client(
            host=self.host,
            port=self.port,
            username=self.user,
            password=self.password,
            autogenerate_session_id=False,
        )


def clickhouse_target(stack: ExitStack) -> ClickHouseTarget:
    """``CLICKHOUSE_URL`` when set, else the chdb front (stopped by ``stack``)."""
    url = os.environ.get("CLICKHOUSE_URL")
    if url:
        parts = urlsplit(url)
        return ClickHouseTarget(
            host=parts.hostname or "localhost",
            port=parts.port or 8123,
            user=parts.username or "default",
            password=parts.password or "",
            label=f"CLICKHOUSE_URL {parts.hostname}:{parts.port or 8123}",
        )
    server = stack.enter_context(ClickHouseServer())
    started = server.startup_seconds or 0.0
    return ClickHouseTarget(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        label=f"chdb front {server.url} (started in {started:.1f} s)",
    )


def archived_rows(target: ClickHouseTarget, database: str) -> int:
    """Rows ClickHouse holds in the archive's tables, without FINAL: rows that
    share a key (a re-delivered batch, a per-thread row replaced by each put)
    count once if a background merge has collapsed them, else once each."""
    client = target.client()
    try:
        total = 0
        for table in C.COLUMNS:
            total += int(client.command(f"SELECT count() FROM `{database}`.`{table}`"))
        return total
    finally:
        client.close()


def drop_database(target: ClickHouseTarget, database: str) -> None:
    client = target.client()
    try:
        client.command(f"DROP DATABASE IF EXISTS `{database}`")
    finally:
        client.close()


def delete_redis_keys(url: str, prefix: str) -> int:
    """Remove every key of one run's prefix; returns how many there were."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


# -- part 1: hot-path overhead ---------------------------------------------------


@dataclass(frozen=True)
class LoopConfig:
    store: str
    archive: bool

    @property
    def name(self) -> str:
        return f"ours-{self.store}" + ("+archive" if self.archive else "")


@dataclass(frozen=True)
class ArchiveOutcome:
    """What the archive did during one run."""

    enqueued: int
    written: int
    dropped: int
    retried: int
    backlog: int
    flush_s: float
    flushed: bool
    in_clickhouse: int


@dataclass(frozen=True)
class LoopResult:
    config: LoopConfig
    timings_ms: list[float]
    final_messages: int
    unique_ids: int
    archive: ArchiveOutcome | None


def make_engine(
    store: str,
    settings: ArchiveSettings | None,
    redis_url: str | None,
    prefix: str,
) -> ContextEngine:
    if store == MEMORY:
        return ContextEngine(archive=settings)
    return ContextEngine(redis_url=redis_url, key_prefix=prefix, archive=settings)


async def run_loop(
    config: LoopConfig,
    target: ClickHouseTarget,
    redis_url: str | None,
    invokes: int,
) -> LoopResult:
    """One agent-loop run on a fresh engine (and database / key prefix)."""
    gc.collect()
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench{run_id}"
    settings = target.settings() if config.archive else None
    engine = make_engine(config.store, settings, redis_url, prefix)
    outcome: ArchiveOutcome | None = None
    try:
        async with ContextEngineSaver(engine) as saver:
            graph = build_graph(saver)
            await _drive(graph, True, f"warmup-{run_id}", WARMUP_INVOKES)
            archive = engine.archive
            if archive is not None:
                # Connect and create the tables before the timed invokes.
                await asyncio.to_thread(archive.flush, FLUSH_TIMEOUT_S)
            timings_ms, messages = await _drive(graph, True, f"bench-{run_id}", invokes)
            if archive is not None:
                backlog = int(archive.metrics()["queued"])
                start = time.perf_counter()
                flushed = await asyncio.to_thread(archive.flush, FLUSH_TIMEOUT_S)
                flush_s = time.perf_counter() - start
                m = archive.metrics()
                outcome = ArchiveOutcome(
                    enqueued=int(m["enqueued"]),
                    written=int(m["written"]),
                    dropped=int(m["dropped"]),
                    retried=int(m["retried"]),
                    backlog=backlog,
                    flush_s=flush_s,
                    flushed=flushed,
                    in_clickhouse=0,
                )
    finally:
        if settings is not None:
            if outcome is not None:
                rows = await asyncio.to_thread(archived_rows, target, settings.database)
                outcome = replace(outcome, in_clickhouse=rows)
            await asyncio.to_thread(drop_database, target, settings.database)
        if config.store == REDIS and redis_url:
            await asyncio.to_thread(delete_redis_keys, redis_url, prefix)
    return LoopResult(
        config=config,
        timings_ms=timings_ms,
        final_messages=len(messages),
        unique_ids=len({message.id for message in messages}),
        archive=outcome,
    )


@dataclass(frozen=True)
class LoopFigures:
    first_mean: float
    last_mean: float
    last_median: float


def loop_figures(result: LoopResult, window: int) -> LoopFigures:
    last = result.timings_ms[-window:]
    return LoopFigures(
        first_mean=statistics.fmean(result.timings_ms[:window]),
        last_mean=statistics.fmean(last),
        last_median=statistics.median(last),
    )


async def overhead_part(
    configs: Sequence[LoopConfig],
    target: ClickHouseTarget,
    args: argparse.Namespace,
) -> list[LoopResult]:
    """Every configuration once per repeat, order reversed every other repeat."""
    results: list[LoopResult] = []
    for repeat in range(args.repeat):
        order = list(configs) if repeat % 2 == 0 else list(reversed(configs))
        for config in order:
            start = time.perf_counter()
            result = await run_loop(config, target, args.redis_url, args.invokes)
            results.append(result)
            print(
                f"[repeat {repeat + 1}/{args.repeat}] {config.name}: "
                f"{time.perf_counter() - start:.1f} s",
                file=sys.stderr,
            )
    return results


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))


def report_overhead(
    configs: Sequence[LoopConfig],
    results: Sequence[LoopResult],
    args: argparse.Namespace,
) -> None:
    window = args.window
    print(
        f"1. hot-path overhead: agent loop, {args.invokes} invokes/thread, "
        f"{STEPS_PER_INVOKE} supersteps and {MESSAGES_PER_INVOKE} messages of "
        f"~{MESSAGE_BYTES} B per invoke, repeat {args.repeat} (medians over repeats)"
    )
    by_name: dict[str, list[LoopResult]] = {c.name: [] for c in configs}
    for result in results:
        by_name[result.config.name].append(result)
    figures = {
        name: [loop_figures(r, window) for r in runs] for name, runs in by_name.items()
    }
    rows = []
    for config in configs:
        figs = figures[config.name]
        ratio = ratio_med = "-"
        plain = figures.get(LoopConfig(config.store, False).name)
        if config.archive and plain:
            pairs = list(zip(figs, plain, strict=True))
            ratio = f"{_median([a.last_mean / b.last_mean for a, b in pairs]):.2f}x"
            of_medians = [a.last_median / b.last_median for a, b in pairs]
            ratio_med = f"{_median(of_medians):.2f}x"
        rows.append(
            (
                config.name,
                f"{_median([f.first_mean for f in figs]):.2f}",
                f"{_median([f.last_mean for f in figs]):.2f}",
                f"{_median([f.last_median for f in figs]):.2f}",
                ratio,
                ratio_med,
            )
        )
    print_table(
        (
            "configuration",
            f"first-{window} ms",
            f"last-{window} ms",
            f"last-{window} med",
            "vs no-archive",
            "(of medians)",
        ),
        rows,
    )
    print(
        f"(vs no-archive = archive / no-archive last-{window} mean, within each "
        "repeat, median over repeats; (of medians) = the same with the "
        f"last-{window} medians, less sensitive to single slow invokes)"
    )
    print()
    archive_rows: list[tuple[str, ...]] = []
    for config in configs:
        if not config.archive:
            continue
        outcomes = [r.archive for r in by_name[config.name] if r.archive is not None]
        archive_rows.append(
            (
                config.name,
                f"{_median([o.enqueued for o in outcomes]):.0f}",
                f"{_median([o.written for o in outcomes]):.0f}",
                f"{_median([o.in_clickhouse for o in outcomes]):.0f}",
                str(sum(o.dropped for o in outcomes)),
                str(sum(o.retried for o in outcomes)),
                f"{_median([o.backlog for o in outcomes]):.0f}",
                f"{_median([o.flush_s * 1000 for o in outcomes]):.0f}",
                f"{sum(o.flushed for o in outcomes)}/{len(outcomes)}",
            )
        )
    print_table(
        (
            "archive of",
            "rows enqueued",
            "written",
            "in CH",
            "dropped*",
            "retried*",
            "backlog",
            "flush ms",
            "flushed",
        ),
        archive_rows,
    )
    print(
        "(medians per run, warm-up included; * = summed over repeats; backlog = "
        "rows still queued after the last invoke, flush ms = flush() delivering "
        "it; in CH = rows ClickHouse holds, below written when rows sharing a key "
        "were already merged)"
    )
    expected = args.invokes * MESSAGES_PER_INVOKE
    for result in results:
        assert result.final_messages == expected == result.unique_ids, (
            f"{result.config.name}: final state has {result.final_messages} messages "
            f"({result.unique_ids} distinct ids), expected {expected}"
        )
    print(f"correctness: {expected} messages with unique ids in every final state")


# -- part 2: drain rate ----------------------------------------------------------


Step = tuple[AIMessage, Checkpoint, str]


def burst_plan(run_id: str, checkpoints: int, thread_len: int) -> list[list[Step]]:
    """Pre-built inputs: threads of ``thread_len`` checkpoints, each adding one
    message to ``messages`` (built before timing, so only the saver is timed)."""
    threads: list[list[Step]] = []
    version = 0
    for t in range(-(-checkpoints // thread_len)):
        steps: list[Step] = []
        messages: list[AIMessage] = []
        for i in range(min(thread_len, checkpoints - t * thread_len)):
            message_id = f"{run_id}-t{t}-m{i}"
            message = AIMessage(content=_content(message_id, "ai"), id=message_id)
            messages.append(message)
            version += 1
            channel_version = f"{version:032}.0"
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"messages": list(messages)}
            checkpoint["channel_versions"] = {"messages": channel_version}
            steps.append((message, checkpoint, channel_version))
        threads.append(steps)
    return threads


def run_burst(
    saver: ContextEngineSaver, run_id: str, plan: Sequence[Sequence[Step]]
) -> list[float]:
    """Push the burst through the saver; returns seconds per checkpoint."""
    per_checkpoint: list[float] = []
    clock = time.perf_counter
    for t, steps in enumerate(plan):
        config: RunnableConfig = {
            "configurable": {"thread_id": f"drain-{run_id}-{t}", "checkpoint_ns": ""}
        }
        for i, (message, checkpoint, channel_version) in enumerate(steps):
            start = clock()
            if i:
                saver.put_writes(config, [("messages", [message])], f"task-{i}")
            config = saver.put(
                config,
                checkpoint,
                {"source": "loop", "step": i, "parents": {}},
                {"messages": channel_version},
            )
            per_checkpoint.append(clock() - start)
    return per_checkpoint


class Timed:
    """Wraps a callable, summing the seconds spent in it."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.func(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


AS_IS = "as is"
HELD = "held off"
DRAIN_MODES = (AS_IS, HELD)


@dataclass(frozen=True)
class DrainResult:
    mode: str
    checkpoints: int
    rows: int
    put_us_plain: float
    put_us_archive: float
    enqueue_us: float
    burst_s: float
    backlog: int
    flush_s: float
    flushed: bool
    written: int
    dropped: int
    retried: int
    in_clickhouse: int

    @property
    def drain_s(self) -> float:
        """From when the worker may write until ``flush()`` returned."""
        return self.burst_s + self.flush_s if self.mode == AS_IS else self.flush_s

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.drain_s

    @property
    def checkpoints_per_s(self) -> float:
        return self.checkpoints / self.drain_s


def plain_burst_us(checkpoints: int, thread_len: int) -> float:
    """Median µs per checkpoint of the same burst without an archive."""
    gc.collect()
    run_id = uuid.uuid4().hex[:8]
    plan = burst_plan(run_id, checkpoints, thread_len)
    with ContextEngineSaver(ContextEngine()) as saver:
        per = run_burst(saver, run_id, plan)
    return statistics.median(per) * 1e6


def run_drain(
    target: ClickHouseTarget,
    mode: str,
    checkpoints: int,
    thread_len: int,
    put_us_plain: float,
) -> DrainResult:
    """One burst through an archived memory engine, then flush; fresh database.

    ``AS_IS``: default settings, the worker drains while the burst runs.
    ``HELD``: the worker is held off during the burst (``batch_size`` and
    ``flush_interval`` out of reach), then the default settings are put back
    on the live archive and ``flush()`` drains the whole backlog in default
    batches: the drain alone, and the enqueue cost without a busy worker.
    """
    gc.collect()
    run_id = uuid.uuid4().hex[:8]
    plan = burst_plan(run_id, checkpoints, thread_len)
    warm = burst_plan(f"{run_id}w", 3, 3)
    defaults = target.settings()
    settings = defaults
    if mode == HELD:
        settings = replace(
            defaults,
            batch_size=2**62,
            flush_interval=1e9,
            max_queue=max(defaults.max_queue, 10 * checkpoints),
        )
    engine = ContextEngine(archive=settings)
    archive = engine.archive
    assert archive is not None
    try:
        with ContextEngineSaver(engine) as saver:
            run_burst(saver, f"{run_id}w", warm)
            # Connect and create the tables before the burst.
            archive.flush(FLUSH_TIMEOUT_S)
            before = archive.metrics()
            tier: Any = getattr(engine.checkpoints, "tier")  # noqa: B009
            put_timer = Timed(tier.archived_put)
            writes_timer = Timed(tier.archived_writes)
            tier.archived_put, tier.archived_writes = put_timer, writes_timer
            start = time.perf_counter()
            per = run_burst(saver, run_id, plan)
            burst_s = time.perf_counter() - start
            backlog = int(archive.metrics()["queued"])
            archive.settings = defaults
            start = time.perf_counter()
            flushed = archive.flush(FLUSH_TIMEOUT_S)
            flush_s = time.perf_counter() - start
            after = archive.metrics()
    finally:
        engine.close_sync()
    try:
        in_ch = archived_rows(target, settings.database) - int(before["written"])
    finally:
        drop_database(target, settings.database)
    return DrainResult(
        mode=mode,
        checkpoints=checkpoints,
        rows=int(after["enqueued"]) - int(before["enqueued"]),
        put_us_plain=put_us_plain,
        put_us_archive=statistics.median(per) * 1e6,
        enqueue_us=(put_timer.seconds + writes_timer.seconds) / checkpoints * 1e6,
        burst_s=burst_s,
        backlog=backlog,
        flush_s=flush_s,
        flushed=flushed,
        written=int(after["written"]) - int(before["written"]),
        dropped=int(after["dropped"]),
        retried=int(after["retried"]),
        in_clickhouse=in_ch,
    )


def drain_part(target: ClickHouseTarget, args: argparse.Namespace) -> list[DrainResult]:
    """Per repeat: the burst without an archive, then both modes (order alternated)."""
    results = []
    for repeat in range(args.repeat):
        start = time.perf_counter()
        plain = plain_burst_us(args.burst, args.thread_len)
        modes = DRAIN_MODES if repeat % 2 == 0 else DRAIN_MODES[::-1]
        for mode in modes:
            results.append(run_drain(target, mode, args.burst, args.thread_len, plain))
        print(
            f"[repeat {repeat + 1}/{args.repeat}] drain: "
            f"{time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )
    return results


def report_drain(results: Sequence[DrainResult], args: argparse.Namespace) -> None:
    defaults = ArchiveSettings()
    first = results[0]
    print(
        f"2. drain rate: burst of {args.burst} checkpoints (threads of "
        f"{args.thread_len}; put + put_writes each, one ~{MESSAGE_BYTES} B message "
        f"added per checkpoint) on the memory store, {first.rows} archive rows "
        f"({first.rows / first.checkpoints:.1f}/checkpoint), batch_size "
        f"{defaults.batch_size}, flush_interval {defaults.flush_interval} s, "
        f"repeat {args.repeat} (medians)"
    )
    plain = _median([r.put_us_plain for r in results if r.mode == AS_IS])
    print(f"put us without archive: {plain:.1f}")

    def med(values: Sequence[float], fmt: str) -> str:
        return format(_median(values), fmt)

    rows: list[tuple[str, ...]] = []
    for mode in DRAIN_MODES:
        runs = [r for r in results if r.mode == mode]
        rows.append(
            (
                f"worker {mode}",
                med([r.put_us_archive for r in runs], ".1f"),
                med([r.put_us_archive / r.put_us_plain for r in runs], ".2f") + "x",
                med([r.enqueue_us for r in runs], ".1f"),
                med([r.burst_s for r in runs], ".2f"),
                med([r.backlog for r in runs], ".0f"),
                med([r.flush_s for r in runs], ".2f"),
                med([r.rows_per_s for r in runs], ",.0f"),
                med([r.checkpoints_per_s for r in runs], ",.0f"),
            )
        )
    print_table(
        (
            "burst",
            "put us",
            "vs no-archive",
            "enqueue us",
            "burst s",
            "backlog",
            "flush s",
            "rows/s",
            "checkpoints/s",
        ),
        rows,
    )
    print()
    rows = []
    for mode in DRAIN_MODES:
        runs = [r for r in results if r.mode == mode]
        rows.append(
            (
                f"worker {mode}",
                med([r.rows for r in runs], ".0f"),
                med([r.written for r in runs], ".0f"),
                med([r.in_clickhouse for r in runs], ".0f"),
                str(sum(r.dropped for r in runs)),
                str(sum(r.retried for r in runs)),
                f"{sum(r.flushed for r in runs)}/{len(runs)}",
            )
        )
    print_table(
        ("burst", "rows", "written", "in CH", "dropped*", "retried*", "flushed"), rows
    )
    print(
        "(put us = median per checkpoint, put + put_writes; enqueue us = mean time "
        "per checkpoint in the tier's archived_put + archived_writes; rows/s and "
        "checkpoints/s = burst / (burst s + flush s) with the worker as is, burst "
        "/ flush s when held off; * = summed over repeats; in CH as in part 1, "
        "burst rows only)"
    )


# -- main ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invokes", type=int, default=200, help="default 200")
    parser.add_argument(
        "--repeat", type=int, default=3, help="repeats; medians reported (default 3)"
    )
    parser.add_argument(
        "--window", type=int, default=20, help="invokes per window (default 20)"
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=10_000,
        help="checkpoints in the drain burst (default 10000)",
    )
    parser.add_argument(
        "--thread-len",
        type=int,
        default=25,
        help="checkpoints per thread in the burst (default 25)",
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="PART[,PART]",
        help="run only these parts: overhead, drain (default both)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        metavar="URL",
        help="also measure ours-redis and ours-redis+archive (default: $REDIS_URL)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.window < 1 or args.invokes < 2 * args.window:
        parser.error("--invokes must be at least twice --window (and --window >= 1)")
    if args.burst < 1 or args.thread_len < 1:
        parser.error("--burst and --thread-len must be at least 1")
    parts = [p.strip() for p in args.only.split(",") if p.strip()] or list(PARTS)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    stores = [MEMORY] + ([REDIS] if args.redis_url else [])
    if not args.redis_url:
        print("ours-redis: skipped (no --redis-url / REDIS_URL)", file=sys.stderr)
    configs = [LoopConfig(s, archive) for s in stores for archive in (False, True)]
    began = time.perf_counter()
    with ExitStack() as stack:
        target = clickhouse_target(stack)
        print(
            f"python {platform.python_version()}, langgraph {_version('langgraph')}, "
            f"clickhouse-connect {_version('clickhouse-connect')}, "
            f"chdb-core {_version('chdb-core')}, {os.cpu_count()} cpus"
        )
        print(f"ClickHouse: {target.label}")
        print()
        if "overhead" in parts:
            loop_results = asyncio.run(overhead_part(configs, target, args))
            report_overhead(configs, loop_results, args)
            print()
        if "drain" in parts:
            report_drain(drain_part(target, args), args)
            print()
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
