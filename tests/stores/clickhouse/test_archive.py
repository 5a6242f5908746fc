"""The ClickHouse archive: restore of what the hot store lost, outages that never
touch the hot path, idempotent re-delivery, deletes everywhere, configuration."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import operator
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import clickhouse_connect
import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from aiecs_checkpoint.errors import InvalidConfigError, StoreError
from aiecs_checkpoint.stores.clickhouse import layout as C
from aiecs_checkpoint.stores.clickhouse.archive import ArchiveSettings
from tests.conftest import _redis_param, archive_settings, engine_for, redis_url
from tests.servers_clickhouse import ClickHouseServer, external_clickhouse_url

HOT = ["memory", _redis_param("redis")]


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def _graph(saver: ContextEngineSaver) -> Any:
    def ask(state: State) -> dict[str, Any]:
        answer = interrupt("name?")
        return {"log": [f"answer:{answer}"]}

    g = StateGraph(State)
    g.add_node("start", lambda s: {"log": ["start"]})
    g.add_node("ask", ask)
    g.add_node("finish", lambda s: {"log": ["finish"]})
    g.add_edge(START, "start")
    g.add_edge("start", "ask")
    g.add_edge("ask", "finish")
    g.add_edge("finish", END)
    return g.compile(checkpointer=saver)


def _cfg(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


def _history(graph: Any, thread: str) -> list[tuple[Any, ...]]:
    return [
        (s.config["configurable"]["checkpoint_id"], s.values, s.next, s.metadata)
        for s in graph.get_state_history(_cfg(thread))
    ]


def _forget_hot(engine: ContextEngine, prefix: str) -> None:
    """What a TTL expiry or a flushed / replaced Redis does to the hot store."""
    hot = engine.checkpoints.hot  # type: ignore[attr-defined]
    if hot.backend == "memory":
        hot._threads.clear()
        hot._runs.clear()
        return
    client = redis.Redis.from_url(redis_url())
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()


def _put_steps(saver: ContextEngineSaver, thread: str, runs: list[str]) -> None:
    """One checkpoint (and a pending write) per run id, put without reading:
    how a thread gets into the hot store while the archive cannot be read."""
    config: Any = _cfg(thread)
    for i, run_id in enumerate(runs):
        checkpoint = empty_checkpoint()
        version = f"{i + 1:032}.0"
        checkpoint["channel_values"] = {"log": [f"step {i}"] * (i + 1)}
        checkpoint["channel_versions"] = {"log": version}
        metadata = {"run_id": run_id, "step": i, "source": "loop"}
        config = saver.put(config, checkpoint, metadata, {"log": version})
        saver.put_writes(config, [("log", [f"w{i}"])], f"task-{i}")


def _count(settings: ArchiveSettings, table: str, thread: str) -> int:
    client = clickhouse_connect.get_client(
        **settings.client_options(), database=settings.database
    )
    try:
        return int(
            client.query(
                f"SELECT count() FROM `{table}` FINAL WHERE thread_id = {{t:String}}",
                parameters={"t": thread},
            ).result_rows[0][0]
        )
    finally:
        client.close()


@pytest.mark.parametrize("hot", HOT)
def test_interrupted_graphs_resume_from_the_archive_after_the_hot_store_lost_them(
    hot: str,
) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    engine = (
        engine_for(f"{hot}+archive", key_prefix=prefix)
        if hot != "memory"
        else (engine_for("memory+archive"))
    )
    with ContextEngineSaver(engine) as saver:
        graph = _graph(saver)
        threads = [f"t{i} :{{x}}* é" for i in range(4)]
        for t in threads:
            graph.invoke({"log": []}, _cfg(t))
        before = {t: _history(graph, t) for t in threads}
        assert engine.archive is not None and engine.archive.flush(10)
        _forget_hot(engine, prefix)
        hot = engine.checkpoints.hot  # type: ignore[attr-defined]
        assert engine.run(hot.get(threads[0], "", None)) is None
        for t in threads:
            assert _history(graph, t) == before[t]
        for t in threads:
            result = graph.invoke(Command(resume=t[:2]), _cfg(t))
            assert result["log"] == ["start", f"answer:{t[:2]}", "finish"]


@pytest.mark.parametrize("hot", HOT)
async def test_async_reads_restore_get_list_and_state_history(hot: str) -> None:
    async with ContextEngineSaver(engine_for(f"{hot}+archive")) as saver:
        graph = _graph(saver)
        await graph.ainvoke({"log": []}, _cfg("a"))
        before = [s async for s in graph.aget_state_history(_cfg("a"))]
        engine = saver.engine
        assert engine.archive is not None
        await asyncio.to_thread(engine.archive.flush, 10)
        await engine.arun(engine.checkpoints.hot.delete_thread("a"))  # type: ignore[attr-defined]
        listed = [t async for t in saver.alist(_cfg("a"))]
        assert [t.checkpoint["id"] for t in listed] == [
            s.config["configurable"]["checkpoint_id"] for s in before
        ]
        result = await graph.ainvoke(Command(resume="z"), _cfg("a"))
        assert result["log"] == ["start", "answer:z", "finish"]


def test_a_thread_in_neither_tier_is_new() -> None:
    with ContextEngineSaver(engine_for("memory+archive")) as saver:
        assert saver.get_tuple(_cfg("never-written")) is None
        assert list(saver.list(_cfg("never-written"))) == []


def test_redelivered_rows_are_not_seen_twice() -> None:
    settings = archive_settings()
    engine = ContextEngine(archive=settings)
    with ContextEngineSaver(engine) as saver:
        _graph(saver).invoke({"log": []}, _cfg("dup"))
        archive = engine.archive
        assert archive is not None and archive.flush(10)
        thread = engine.run(engine.checkpoints.hot.export_thread("dup"))  # type: ignore[attr-defined]
        for _ in range(2):
            rows = C.Rows.empty()
            C.thread_rows("dup", thread, rows)
            archive.enqueue(rows, "dup")
        assert archive.flush(10)
        n = len(thread[""].ids)
        assert _count(settings, C.CHECKPOINTS, "dup") == n
        assert archive.read_thread("dup")[""].ids == thread[""].ids


def _three_runs(saver: ContextEngineSaver, thread: str) -> list[str]:
    graph = _graph(saver)

    def run(value: Any) -> None:
        run_id = uuid.uuid4()
        config = {**_cfg(thread), "run_id": run_id, "metadata": {"run_id": str(run_id)}}
        graph.invoke(value, config)

    run({"log": []})
    run(Command(resume="x"))
    run({"log": []})
    return list(
        dict.fromkeys(
            t.metadata["run_id"]
            for t in saver.list(_cfg(thread))
            if t.metadata and "run_id" in t.metadata
        )
    )


def test_deletes_prune_and_copy_reach_the_archive() -> None:
    settings = archive_settings()
    engine = ContextEngine(archive=settings)
    archive = engine.archive
    assert archive is not None
    with ContextEngineSaver(engine) as saver:
        for t in ("gone", "pruned", "runs", "src"):
            _three_runs(saver, t)
        saver.delete_thread("gone")
        saver.prune(["pruned"], strategy="keep_latest")
        runs = _three_runs(saver, "runs")
        saver.delete_for_runs([runs[0]])
        assert archive.flush(10)
        engine.run(engine.checkpoints.hot.delete_thread("src"))  # type: ignore[attr-defined]
        saver.copy_thread("src", "dst")
        assert archive.flush(10)
        assert _count(settings, C.CHECKPOINTS, "gone") == 0
        assert _count(settings, C.WRITES, "gone") == 0
        assert _count(settings, C.CHECKPOINTS, "pruned") == 1
        remaining = {
            t.metadata.get("run_id") for t in saver.list(_cfg("runs")) if t.metadata
        }
        assert runs[0] not in remaining
        assert _count(settings, C.CHECKPOINTS, "runs") == len(
            list(saver.list(_cfg("runs")))
        )
        src = [t.checkpoint["id"] for t in saver.list(_cfg("src"))]
        assert [t.checkpoint["id"] for t in saver.list(_cfg("dst"))] == src
        assert _count(settings, C.CHECKPOINTS, "dst") == len(src)


def _two_processes(
    prefix: str,
) -> tuple[ContextEngine, ContextEngine, ArchiveSettings]:
    """Two engines as two processes would hold them: one Redis, one archive, each
    its own outbox; the first delivers only when flushed (a slow outbox)."""
    settings = archive_settings()
    slow = dataclasses.replace(settings, flush_interval=600.0)
    a = ContextEngine(redis_url=redis_url(), key_prefix=prefix, archive=slow)
    b = ContextEngine(redis_url=redis_url(), key_prefix=prefix, archive=settings)
    return a, b, settings


def test_a_thread_deleted_elsewhere_is_not_restored_while_its_delete_waits() -> None:
    prefix = f"x{uuid.uuid4().hex[:8]}"
    a, b, settings = _two_processes(prefix)
    with ContextEngineSaver(a) as saver_a, ContextEngineSaver(b) as saver_b:
        _graph(saver_b).invoke({"log": []}, _cfg("t"))
        assert b.archive is not None and b.archive.flush(10)
        assert _count(settings, C.CHECKPOINTS, "t") > 0
        saver_a.delete_thread("t")  # its archive delete is still queued in a
        assert _count(settings, C.CHECKPOINTS, "t") > 0
        assert saver_b.get_tuple(_cfg("t")) is None
        assert list(saver_b.list(_cfg("t"))) == []
        third = ContextEngine(
            redis_url=redis_url(), key_prefix=prefix, archive=settings
        )
        with ContextEngineSaver(third) as saver_c:  # a process started afterwards
            assert saver_c.get_tuple(_cfg("t")) is None
        assert a.archive is not None and a.archive.flush(10)
        assert _count(settings, C.CHECKPOINTS, "t") == 0


def test_a_late_delete_from_another_process_keeps_the_threads_newer_rows() -> None:
    prefix = f"x{uuid.uuid4().hex[:8]}"
    a, b, settings = _two_processes(prefix)
    with ContextEngineSaver(a) as saver_a, ContextEngineSaver(b) as saver_b:
        graph = _graph(saver_b)
        graph.invoke({"log": []}, _cfg("t"))
        assert b.archive is not None and b.archive.flush(10)
        saver_a.delete_thread("t")
        graph.invoke({"log": ["again"]}, _cfg("t"))
        newer = _history(graph, "t")
        assert b.archive.flush(10)
        assert a.archive is not None and a.archive.flush(10)  # the late delete
        assert _count(settings, C.CHECKPOINTS, "t") == len(newer)
        _forget_hot(b, prefix)
        assert _history(graph, "t") == newer


@pytest.fixture
def own_clickhouse() -> Iterator[ClickHouseServer]:
    if external_clickhouse_url():
        pytest.skip("outage test needs the local ClickHouse front")
    server = ClickHouseServer().start()
    yield server
    server.close()


async def test_outage_loses_nothing_and_never_reaches_the_hot_path(
    own_clickhouse: ClickHouseServer,
) -> None:
    settings = ArchiveSettings(
        host=own_clickhouse.host,
        port=own_clickhouse.port,
        database="outage",
        flush_interval=0.05,
        batch_size=50,
    )
    async with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        graph = _graph(saver)
        archive = saver.engine.archive
        assert archive is not None
        threads = [f"o{i}" for i in range(8)]
        await asyncio.gather(*(graph.ainvoke({"log": []}, _cfg(t)) for t in threads))
        assert await asyncio.to_thread(archive.flush, 10)
        own_clickhouse.stop()
        await asyncio.gather(
            *(graph.ainvoke(Command(resume="r"), _cfg(t)) for t in threads)
        )
        await asyncio.sleep(0.5)
        during = archive.metrics()
        assert during["retried"] >= 1 and during["queued"] > 0
        health = await saver.engine.health_check()
        assert health["status"] == "degraded"
        assert any("ClickHouse archive" in issue for issue in health["issues"])
        # a thread the hot store lacks cannot be told apart from a lost one
        with pytest.raises(StoreError, match="ClickHouse"):
            await graph.ainvoke({"log": []}, _cfg("started-during-the-outage"))
        own_clickhouse.start()
        assert await asyncio.to_thread(archive.flush, 30)
        after = archive.metrics()
        assert after["dropped"] == 0 and after["queued"] == 0
        assert after["written"] == after["enqueued"]
        for t in threads:
            hot = [c.checkpoint["id"] async for c in saver.alist(_cfg(t))]
            assert archive.read_thread(t)[""].ids == sorted(hot)


def test_full_outbox_drops_oldest_and_counts_it() -> None:
    settings = archive_settings(
        host="127.0.0.1", port=1, max_queue=10, connect_timeout=0.2
    )
    engine = ContextEngine(archive=settings)
    with ContextEngineSaver(engine) as saver:
        _put_steps(saver, "x", ["r1", "r2", "r3", "r4"])
        metrics = engine.archive.metrics()  # type: ignore[union-attr]
        assert metrics["queued"] == 10
        assert metrics["dropped"] == metrics["enqueued"] - 10 > 0
        assert saver.get_tuple(_cfg("x")) is not None
        engine.archive.close(0.1)  # type: ignore[union-attr]


def test_wrong_password_is_reported_once_and_graphs_in_the_hot_store_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = archive_settings(password="wrong", flush_interval=0.01)
    engine = ContextEngine(archive=settings)
    with caplog.at_level(logging.WARNING, logger="aiecs_checkpoint.archive"):
        saver = ContextEngineSaver(engine)
        graph = _graph(saver)
        for i in range(3):
            _put_steps(saver, f"w{i}", ["seed"])
            result = graph.invoke({"log": []}, _cfg(f"w{i}"))
            assert result["log"][-1] == "start"
        with pytest.raises(StoreError, match="Authentication failed"):
            graph.invoke({"log": []}, _cfg("not-in-the-hot-store"))
        archive = engine.archive
        assert archive is not None
        assert not archive.flush(1.0)
        health = engine.health_check_sync()
        assert health["status"] == "degraded"
        assert "Authentication failed" in str(health["issues"])
        assert "wrong" not in str(health["issues"])
        archive.close(0.1)
    failures = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(failures) == 1


def test_older_rows_delivered_after_a_delete_are_never_restored() -> None:
    prefix = f"x{uuid.uuid4().hex[:8]}"
    a, b, settings = _two_processes(prefix)
    with ContextEngineSaver(a) as saver_a, ContextEngineSaver(b) as saver_b:
        _graph(saver_a).invoke({"log": []}, _cfg("late"))  # queued in a's outbox
        saver_b.delete_thread("late")
        assert b.archive is not None and b.archive.flush(10)
        assert a.archive is not None and a.archive.flush(10)  # delivered late
        assert _count(settings, C.CHECKPOINTS, "late") > 0
        _forget_hot(b, prefix)  # the hot store's deletion mark is gone too
        third = ContextEngine(
            redis_url=redis_url(), key_prefix=prefix, archive=settings
        )
        with ContextEngineSaver(third) as saver_c:
            assert saver_c.get_tuple(_cfg("late")) is None
            assert list(saver_c.list(_cfg("late"))) == []


def test_delete_for_runs_refuses_while_the_archive_is_down_and_deletes_nothing() -> (
    None
):
    settings = archive_settings(password="wrong", close_timeout=0.5)
    engine = ContextEngine(archive=settings)
    with ContextEngineSaver(engine) as saver:
        runs = ["run-a", "run-b", "run-c"]
        _put_steps(saver, "kept", runs)
        before = [t.checkpoint["id"] for t in saver.list(_cfg("kept"))]
        with pytest.raises(StoreError, match="ClickHouse archive"):
            saver.delete_for_runs([runs[0]])
        assert [t.checkpoint["id"] for t in saver.list(_cfg("kept"))] == before
        assert engine.archive is not None
        engine.archive.close(0.1)


def test_delete_for_runs_finds_runs_still_queued_in_the_outbox() -> None:
    settings = archive_settings(flush_interval=600.0)
    engine = ContextEngine(archive=settings)
    archive = engine.archive
    assert archive is not None
    with ContextEngineSaver(engine) as saver:
        runs = _three_runs(saver, "queued")
        assert archive.metrics()["queued"] > 0  # nothing delivered yet
        saver.delete_for_runs([runs[0]])
        assert archive.flush(10)
        kept = [t.checkpoint["id"] for t in saver.list(_cfg("queued"))]
        assert _count(settings, C.CHECKPOINTS, "queued") == len(kept)
        engine.run(engine.checkpoints.hot.delete_thread("queued"))  # type: ignore[attr-defined]
        restored = [t.checkpoint["id"] for t in saver.list(_cfg("queued"))]
        assert restored == kept
        assert all(
            t.metadata.get("run_id") != runs[0] for t in saver.list(_cfg("queued"))
        )


def test_archive_settings_come_from_the_seed_variables() -> None:
    env = {
        "CLICKHOUSE_ENABLED": "true",
        "CLICKHOUSE_HOST": "ch.internal",
        "CLICKHOUSE_PORT": "9000",
        "CLICKHOUSE_USER": "u",
        "CLICKHOUSE_PASSWORD": "s3cr3t",
        "CLICKHOUSE_DATABASE": "ctx",
    }
    s = ArchiveSettings.from_env(env)
    assert s is not None
    assert (s.host, s.port, s.user, s.password, s.database) == (
        "ch.internal",
        9000,
        "u",
        "s3cr3t",
        "ctx",
    )
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in s.server
    assert ArchiveSettings.from_env({}) is None
    with pytest.raises(InvalidConfigError, match="CLICKHOUSE_ENABLED"):
        ArchiveSettings.from_env({"CLICKHOUSE_ENABLED": "maybe"})
    with pytest.raises(InvalidConfigError, match="CLICKHOUSE_PORT"):
        ArchiveSettings.from_env({"CLICKHOUSE_ENABLED": "1", "CLICKHOUSE_PORT": "x"})
    with pytest.raises(InvalidConfigError, match="database"):
        ArchiveSettings(database="x; DROP TABLE y")
    with pytest.raises(InvalidConfigError, match="overflow"):
        ArchiveSettings(overflow="ignore")  # type: ignore[arg-type]


async def test_sessions_and_messages_are_archived_and_cleanup_removes_them() -> None:
    settings = archive_settings()
    engine = ContextEngine(archive=settings)
    await engine.create_session("s1", "u1", {"k": "v"})
    await engine.add_conversation_message("s1", "user", "hello")
    archive = engine.archive
    assert archive is not None
    assert await asyncio.to_thread(archive.flush, 10)
    client = clickhouse_connect.get_client(
        **settings.client_options(), database=settings.database
    )
    try:

        def count(table: str) -> int:
            q = f"SELECT count() FROM `{table}` FINAL WHERE session_id = 's1'"
            return int(client.query(q).result_rows[0][0])

        assert count(C.SESSIONS) == 1 and count(C.CONVERSATIONS) == 1
        await engine.delete_session("s1")
        assert await asyncio.to_thread(archive.flush, 10)
        assert count(C.SESSIONS) == 0 and count(C.CONVERSATIONS) == 0
    finally:
        client.close()
        await engine.close()


async def test_archiving_messages_draws_no_uuid4(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 12 #5: message rows are keyed by store-made ids and clickhouse-connect
    makes no query ids, so a test suite's patched uuid4 (deterministic ids) is
    not advanced by the engine; every message is archived."""
    settings = archive_settings()
    engine = ContextEngine(archive=settings)
    drawn: list[int] = []

    def counter() -> uuid.UUID:
        drawn.append(1)
        return uuid.UUID(int=len(drawn))

    monkeypatch.setattr(uuid, "uuid4", counter)
    for text in ("one", "two", "three"):
        await engine.add_conversation_message("s1", "user", text)
    archive = engine.archive
    assert archive is not None
    assert await asyncio.to_thread(archive.flush, 10)
    assert drawn == []
    monkeypatch.undo()
    client = clickhouse_connect.get_client(
        **settings.client_options(), database=settings.database
    )
    try:
        q = f"SELECT count() FROM `{C.CONVERSATIONS}` FINAL WHERE session_id = 's1'"
        assert int(client.query(q).result_rows[0][0]) == 3
    finally:
        client.close()
        await engine.close()


def _lose(settings: ArchiveSettings, table: str, thread: str, where: str) -> None:
    """Remove archived rows of a thread (`where` them, in `table`): what an
    outbox that overflowed, or died with its process, leaves behind."""
    client = clickhouse_connect.get_client(
        **settings.client_options(), database=settings.database
    )
    try:
        client.command(
            f"ALTER TABLE `{table}` DELETE WHERE thread_id = {{t:String}} AND {where}",
            parameters={"t": thread},
            settings={"mutations_sync": 2},
        )
    finally:
        client.close()


def test_a_restore_leaves_out_checkpoints_missing_rows_and_heals_the_archive() -> None:
    """The archive lost the list element the last checkpoint added: a restore
    shows the checkpoints before it, each whole, and replaces the archived
    copy, so the thread resumes from there and a later restore sees it all."""
    settings = archive_settings()
    with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        graph = _graph(saver)
        graph.invoke({"log": []}, _cfg("t"))
        graph.invoke(Command(resume="x"), _cfg("t"))
        before = _history(graph, "t")
        assert saver.engine.archive is not None and saver.engine.archive.flush(10)
    _lose(settings, C.ITEMS, "t", "position = 2")  # the newest checkpoint's
    with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        graph = _graph(saver)
        assert _history(graph, "t") == before[1:]
        assert graph.invoke(None, _cfg("t"))["log"] == ["start", "answer:x", "finish"]
        after = _history(graph, "t")
        assert saver.engine.archive is not None and saver.engine.archive.flush(10)
    with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        assert _history(_graph(saver), "t") == after


def test_a_restore_with_no_whole_checkpoint_left_raises_store_error() -> None:
    settings = archive_settings()
    with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        _graph(saver).invoke({"log": []}, _cfg("t"))
        assert saver.engine.archive is not None and saver.engine.archive.flush(10)
    _lose(settings, C.VALUES, "t", "1")  # each checkpoint has channel values
    with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        with pytest.raises(StoreError, match="none of its"):
            saver.get_tuple(_cfg("t"))


def test_a_thread_that_lost_rows_to_an_overflow_is_archived_whole_on_its_next_put(
    own_clickhouse: ClickHouseServer,
) -> None:
    """The outbox dropped rows of a thread while ClickHouse was down; the
    thread's next checkpoint, once there is room, archives it whole again, so
    a restore shows its whole history (not only the checkpoints left whole)."""
    settings = ArchiveSettings(
        host=own_clickhouse.host,
        port=own_clickhouse.port,
        database="healing",
        flush_interval=0.05,
        max_queue=20,
    )
    with ContextEngineSaver(ContextEngine(archive=settings)) as saver:
        graph = _graph(saver)
        archive = saver.engine.archive
        assert archive is not None
        threads = ["t", "u", "v", "w"]
        for t in threads:  # each in the hot store before the outage
            graph.invoke({"log": []}, _cfg(t))
            assert archive.flush(10)
        own_clickhouse.stop()
        for t in threads:  # the others' rows push "t"'s out of the outbox
            graph.invoke(Command(resume="x"), _cfg(t))
        assert archive.metrics()["dropped"] > 0
        own_clickhouse.start()
        assert archive.flush(30)
        graph.update_state(_cfg("t"), {"log": ["more"]})
        assert archive.flush(30)
        expected = _history(graph, "t")
    with ContextEngineSaver(ContextEngine(archive=settings)) as cold:
        assert _history(_graph(cold), "t") == expected
