"""ClickHouse outage under load (issue 13, section 4).

The archive (a ClickHouse front of its own, so stopping it disturbs no other
test) goes down while many graph runs write; the hot path must not notice, and
once ClickHouse is back the archive must hold, row by row, what the hot store
holds. With the outbox forced to overflow, the configured policy applies and
the drop counter equals what is missing. A thread the hot store lost cannot be
restored while the archive is down: that must fail loudly, then succeed.

Latency is not asserted here (house rule): `benchmarks/archive_outage.py`
measures the ratio to a run without an outage.
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
from aiecs_checkpoint.stores.clickhouse.layout import column_names
from tests.conftest import _redis_param, redis_url
from tests.faults._support import (
    CALL_BOUND_S,
    ArchiveSettings,
    GraphSpec,
    RecordingSaver,
    archive_settings_for,
    build_graph,
    cfg,
    clickhouse_client,
    fresh_prefix,
    resume_to_completion,
    seeded,
)
from tests.faults.scenarios import Run, drive, mixed_plan, wait_for
from tests.servers_clickhouse import ClickHouseServer, external_clickhouse_url

TABLES = (
    "context_checkpoints",
    "context_channel_values",
    "context_list_items",
    "context_checkpoint_writes",
    "context_threads",
)
"""The archive tables a graph run writes (`stores/clickhouse_layout.py`)."""


@pytest.fixture(scope="module")
def front() -> Iterator[ClickHouseServer]:
    if external_clickhouse_url():
        pytest.skip("outage tests stop and start their own ClickHouse front")
    server = ClickHouseServer().start()
    yield server
    server.close()


@pytest.fixture
def up(front: ClickHouseServer) -> Iterator[ClickHouseServer]:
    """The front, running when the test starts and again when it ends."""
    if not front.is_running:
        front.start()
    yield front
    if not front.is_running:
        front.start()


def _hot_engine(hot: str, settings: ArchiveSettings) -> tuple[ContextEngine, str]:
    """An engine on `hot` with the archive, and its key prefix."""
    prefix = fresh_prefix("ao")
    if hot == "redis":
        engine = ContextEngine(
            redis_url=redis_url(), key_prefix=prefix, archive=settings
        )
        return engine, prefix
    return ContextEngine(archive=settings), prefix


async def _run_with_outage(
    saver: RecordingSaver,
    plan: list[Run],
    front: ClickHouseServer,
    down_after: int,
    up_after: int | None,
) -> dict[str, BaseException]:
    """Run `plan`; stop the front once `down_after` puts were acknowledged and
    start it again after `up_after` (or once the runs ended, when None)."""
    failures: dict[str, BaseException] = {}
    pool = ThreadPoolExecutor(max_workers=len(plan))
    try:
        runs = drive(saver, plan, "run", pool, failures)
        threads = {r.thread for r in plan}

        def started() -> bool:
            acked = list(saver.log.acked)
            return len(acked) >= down_after and {a[0] for a in acked} >= threads

        # Every thread is in the hot store before the outage: no run then
        # needs the archive (a first read of a thread does, see the last test).
        await wait_for(started, runs, "the outage")
        await asyncio.to_thread(front.stop)
        if up_after is not None:
            await wait_for(lambda: len(saver.log.acked) >= up_after, runs, "recovery")
            await asyncio.to_thread(front.start)
        await asyncio.gather(*runs)
        if up_after is None:
            await asyncio.to_thread(front.start)
    finally:
        pool.shutdown()
    return failures


def _archived_checkpoints(settings: ArchiveSettings) -> set[tuple[str, str, str, str]]:
    client = clickhouse_client(settings)
    try:
        rows = client.query(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_id "
            "FROM context_checkpoints FINAL"
        ).result_rows
    finally:
        client.close()
    return {tuple(r) for r in rows}  # type: ignore[misc]


def _archived_write_tasks(settings: ArchiveSettings) -> set[tuple[str, str, str]]:
    client = clickhouse_client(settings)
    try:
        rows = client.query(
            "SELECT DISTINCT thread_id, checkpoint_id, task_id "
            "FROM context_checkpoint_writes FINAL"
        ).result_rows
    finally:
        client.close()
    return {tuple(r) for r in rows}  # type: ignore[misc]


def _check_archive_complete(
    hot: ContextEngineSaver, settings: ArchiveSettings, threads: list[str]
) -> int:
    """Row by row: each hot checkpoint (id and parent) has its archived row and
    no other is archived; each task with pending writes has archived writes;
    and a saver with an empty hot store restores every thread from the archive
    alone exactly as the hot store has it (values, writes, records).
    Returns the number of checkpoints compared."""
    hot_rows: set[tuple[str, str, str, str]] = set()
    hot_tasks: set[tuple[str, str, str]] = set()
    history: dict[str, list[Any]] = {}
    for t in threads:
        history[t] = list(hot.list(cfg(t)))
        for tup in history[t]:
            conf = tup.config["configurable"]
            parent = (
                tup.parent_config["configurable"]["checkpoint_id"]
                if (tup.parent_config)
                else ""
            )
            hot_rows.add((t, conf["checkpoint_ns"], conf["checkpoint_id"], parent))
            hot_tasks.update(
                (t, conf["checkpoint_id"], w[0]) for w in tup.pending_writes
            )
    archived = _archived_checkpoints(settings)
    assert archived == hot_rows, (
        f"missing from the archive: {sorted(hot_rows - archived)[:5]}; "
        f"only in the archive: {sorted(archived - hot_rows)[:5]}"
    )
    missing_tasks = hot_tasks - _archived_write_tasks(settings)
    assert not missing_tasks, sorted(missing_tasks)[:5]
    with ContextEngineSaver(ContextEngine(archive=settings)) as cold:
        for t in threads:
            restored = list(cold.list(cfg(t)))
            assert [r.checkpoint for r in restored] == [
                h.checkpoint for h in history[t]
            ], t
            assert [r.metadata for r in restored] == [h.metadata for h in history[t]]
            assert [r.pending_writes for r in restored] == [
                h.pending_writes for h in history[t]
            ], t
            assert [c["mode"] for c in cold.get_task_context(t).model_tracker] == [
                c["mode"] for c in hot.get_task_context(t).model_tracker
            ], t
    return len(hot_rows)


@pytest.mark.parametrize("hot", ["memory", _redis_param("redis")])
async def test_an_archive_outage_under_load_never_reaches_the_hot_path_and_loses_no_row(
    up: ClickHouseServer, hot: str
) -> None:
    rng = seeded(f"archive-outage-{hot}")
    settings = archive_settings_for(up.host, up.port, batch_size=200)
    plan = mixed_plan(24, rng, steps=6, tag="ao")
    engine, prefix = _hot_engine(hot, settings)
    async with RecordingSaver(engine) as saver:
        failures = await _run_with_outage(saver, plan, up, 40, 160)
        archive = engine.archive
        assert archive is not None
        assert await asyncio.to_thread(archive.flush, 60)
        metrics = (await engine.get_metrics())["archive"]
    assert not failures, failures
    assert not saver.log.errors(), saver.log.errors()
    assert metrics["retried"] >= 1, "the outage never reached the archive's writer"
    assert metrics["dropped"] == 0 and metrics["queued"] == 0, metrics
    assert metrics["written"] == metrics["enqueued"], metrics
    assert metrics["failed_reads"] == 0, "a run read the archive during the outage"
    with ContextEngineSaver(_reader(engine, prefix)) as reader:
        compared = _check_archive_complete(reader, settings, [r.thread for r in plan])
    print(f"{hot}: {compared} checkpoints compared; archive {metrics}")


def _reader(engine: ContextEngine, prefix: str) -> ContextEngine:
    """An engine on the same hot store (for Redis) without the archive; the
    memory store cannot be shared, so there the writer's engine is reused."""
    if engine.storage_backend == "redis":
        return ContextEngine(redis_url=redis_url(), key_prefix=prefix)
    return engine


# -- a full outbox ---------------------------------------------------------------------


def _plain_tables(front: ClickHouseServer, settings: ArchiveSettings) -> None:
    """Create the archive's tables beforehand as copies (same columns) keyed
    on every column, so only rows identical to the byte are ever merged: the
    distinct rows are exactly the rows that arrived. (ReplacingMergeTree, as
    the archive's reads use `FINAL`, which plain MergeTree refuses.)"""
    reference = archive_settings_for(front.host, front.port)
    with ContextEngineSaver(ContextEngine(archive=reference)) as saver:
        build_graph(saver, GraphSpec(steps=2), "ddl").invoke(
            {"log": [], "marks": []}, cfg("ddl")
        )
        assert saver.engine.archive is not None
        assert saver.engine.archive.flush(30)
    client = clickhouse_client(reference)
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS `{settings.database}`")
        for table in TABLES:
            client.command(
                f"CREATE TABLE `{settings.database}`.`{table}` AS "
                f"`{reference.database}`.`{table}` ENGINE = ReplacingMergeTree "
                f"ORDER BY ({', '.join(f'`{c}`' for c in column_names(table))})"
            )
    finally:
        client.close()


def _arrived_rows(settings: ArchiveSettings) -> int:
    """Distinct rows that reached the plain tables: a batch delivered again
    after a failure (at-least-once) repeats rows identical to the byte, while
    two queued rows always differ (their `version` is a fresh timestamp)."""
    client = clickhouse_client(settings)
    try:
        return sum(
            int(
                client.query(
                    f"SELECT count() FROM (SELECT DISTINCT * FROM `{t}`)"
                ).result_rows[0][0]
            )
            for t in TABLES
        )
    finally:
        client.close()


async def _overflow(
    front: ClickHouseServer, frozen: bool
) -> tuple[dict[str, Any], int]:
    """Every thread runs once with the archive up (so each exists in the hot
    store and nothing is queued), then the archive goes down (stopped, or
    frozen with SIGSTOP) and every thread runs again at once, overflowing a
    small outbox; then the archive comes back. Returns the archive's counters
    and the peak queue length seen."""
    rng = seeded(f"archive-overflow-{'frozen' if frozen else 'down'}")
    settings = archive_settings_for(
        front.host, front.port, max_queue=300, overflow="drop_oldest", batch_size=100
    )
    _plain_tables(front, settings)
    plan = mixed_plan(16, rng, steps=6, tag="of")
    engine = ContextEngine(archive=settings)
    archive = engine.archive
    assert archive is not None
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, archive.metrics()["queued"])
            await asyncio.sleep(0.005)

    failures: dict[str, BaseException] = {}
    async with RecordingSaver(engine) as saver:
        graph = build_graph(saver, GraphSpec(steps=6), "run")
        for run in plan:  # one at a time, each delivered before the next
            await graph.ainvoke({"log": [], "marks": []}, cfg(run.thread))
            assert await asyncio.to_thread(archive.flush, 60)
        assert archive.metrics()["dropped"] == 0

        async def again(run: Run) -> None:
            try:
                if run.sync:
                    await asyncio.to_thread(
                        graph.invoke, {"log": [], "marks": []}, cfg(run.thread)
                    )
                else:
                    await graph.ainvoke({"log": [], "marks": []}, cfg(run.thread))
            except Exception as exc:
                failures[run.thread] = exc

        await asyncio.to_thread(front.pause if frozen else front.stop)
        sampler = asyncio.ensure_future(sample())
        try:
            await asyncio.gather(*(again(run) for run in plan))
        finally:
            sampler.cancel()
            await asyncio.to_thread(front.resume if frozen else front.start)
        assert await asyncio.to_thread(archive.flush, 60)
        metrics = archive.metrics()
    assert not failures and not saver.log.errors()
    assert metrics["dropped"] > 0, f"the outbox never overflowed: {metrics}"
    assert peak <= settings.max_queue, f"queue grew to {peak}"
    missing = metrics["enqueued"] - _arrived_rows(settings)
    print(f"overflow (frozen={frozen}): {metrics}; missing {missing}; peak {peak}")
    return metrics, missing


async def test_a_full_outbox_drops_the_oldest_and_counts_exactly_what_is_missing(
    up: ClickHouseServer,
) -> None:
    """ClickHouse stopped: the queue never exceeds `max_queue`, the hot path
    sees no error, and `dropped` equals the rows that never arrived."""
    metrics, missing = await _overflow(up, frozen=False)
    assert metrics["dropped"] == missing


async def test_a_full_outbox_behind_a_frozen_archive_counts_exactly_what_is_missing(
    up: ClickHouseServer,
) -> None:
    """ClickHouse frozen (SIGSTOP): a batch is in flight for the whole outage
    while the outbox overflows; `dropped` must still equal what is missing."""
    metrics, missing = await _overflow(up, frozen=True)
    assert metrics["dropped"] == missing


async def test_a_blocking_outbox_waits_out_a_short_outage_and_loses_nothing(
    up: ClickHouseServer,
) -> None:
    """overflow="block" with a block_timeout longer than the outage: writers
    wait for room instead of dropping, so the archive ends complete."""
    rng = seeded("archive-block")
    settings = archive_settings_for(
        up.host, up.port, max_queue=300, overflow="block", block_timeout=60.0
    )
    plan = [r for r in mixed_plan(12, rng, steps=6, tag="bl") if r.sync]
    engine = ContextEngine(archive=settings)
    archive = engine.archive
    assert archive is not None

    async def outage() -> None:
        while archive.metrics()["queued"] < settings.max_queue - 20:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(up.stop)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(up.start)

    async with RecordingSaver(engine) as saver:
        pool = ThreadPoolExecutor(max_workers=len(plan))
        failures: dict[str, BaseException] = {}
        runs = drive(saver, plan, "run", pool, failures)
        await asyncio.gather(outage(), *runs)
        pool.shutdown()
        assert await asyncio.to_thread(archive.flush, 60)
        metrics = archive.metrics()
        assert not failures and not saver.log.errors()
        assert metrics["dropped"] == 0 and metrics["written"] == metrics["enqueued"]
        _check_archive_complete(saver, settings, [r.thread for r in plan])


def test_after_an_overflow_a_restored_thread_shows_only_whole_checkpoints(
    up: ClickHouseServer,
) -> None:
    """Rows dropped from a full outbox may leave a thread's archive partial;
    what a restore then shows must still be whole (or nothing, loudly)."""
    settings = archive_settings_for(up.host, up.port, max_queue=40)
    spec = GraphSpec(steps=2)
    with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        graph = build_graph(saver, spec, "run")
        # "t" starts with the archive up: the hot store must hold it before
        # the outage (a thread it lacks cannot be read while ClickHouse is down)
        assert saver.engine.archive is not None
        for thread in ("warm", "t"):
            graph.invoke({"log": [], "marks": []}, cfg(thread))
            assert saver.engine.archive.flush(30)
        up.stop()
        for _ in range(6):
            graph.invoke({"log": [], "marks": []}, cfg("t"))
        up.start()
        assert saver.engine.archive.flush(30)
        assert saver.engine.archive.metrics()["dropped"] > 0
        kept = {t.checkpoint["id"]: t.checkpoint for t in saver.list(cfg("t"))}
    with ContextEngineSaver(ContextEngine(archive=settings)) as cold:
        try:
            restored = list(cold.list(cfg("t")))
        except StoreError:
            return  # loud: acceptable
        for tup in restored:
            assert tup.checkpoint == kept[tup.checkpoint["id"]]


# -- restore while the archive is down ---------------------------------------------


def test_restore_while_the_archive_is_down_fails_loudly_then_succeeds(
    up: ClickHouseServer,
) -> None:
    settings = archive_settings_for(up.host, up.port)
    spec = GraphSpec(steps=4, ask=True)
    threads = [f"r{i}" for i in range(3)]
    with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        graph = build_graph(saver, spec, "first")
        for t in threads:
            graph.invoke({"log": [], "marks": []}, cfg(t))  # stops at interrupt()
        before = {t: saver.get_tuple(cfg(t)).checkpoint for t in threads}  # type: ignore[union-attr]
        assert saver.engine.archive is not None and saver.engine.archive.flush(30)
    # The hot store (memory) is lost with the process; a new one starts empty.
    with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        graph = build_graph(saver, spec, "second")
        up.stop()
        for t in threads:
            with pytest.raises(StoreError):
                saver.get_tuple(cfg(t))
            with pytest.raises(StoreError):
                graph.get_state(cfg(t))
        up.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                found = saver.get_tuple(cfg(threads[0]))
                break
            except StoreError:
                assert time.monotonic() < deadline, "restore never succeeded"
                time.sleep(0.2)
        assert found is not None and found.checkpoint == before[threads[0]]
        for t in threads:
            assert resume_to_completion(graph, t)["log"][-1] == f"n{spec.steps - 1}"


@pytest.mark.slow  # waits out the bound (~12 s), kept out of the default run's budget
def test_a_restore_from_a_frozen_archive_ends_within_the_bound(
    up: ClickHouseServer,
) -> None:
    """The hot store lost a thread and ClickHouse is frozen (SIGSTOP): the
    read must end (loudly) within `CALL_BOUND_S`, not wait on the socket."""
    settings = archive_settings_for(up.host, up.port)
    with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        build_graph(saver, GraphSpec(steps=2), "a").invoke(
            {"log": [], "marks": []}, cfg("frozen")
        )
        assert saver.engine.archive is not None and saver.engine.archive.flush(30)
    with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        outcome: list[BaseException | None] = []

        def read() -> None:
            try:
                saver.get_tuple(cfg("frozen"))
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        up.pause()
        reader = threading.Thread(target=read, daemon=True)
        started = time.monotonic()
        reader.start()
        reader.join(CALL_BOUND_S + 1)
        waited = time.monotonic() - started
        up.resume()
        reader.join(60)
        assert waited <= CALL_BOUND_S, f"still reading after {waited:.0f}s"
        assert outcome and isinstance(outcome[0], StoreError), outcome
