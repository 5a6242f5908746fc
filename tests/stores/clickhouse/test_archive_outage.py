"""ClickHouse down while the hot store has lost a thread (TTL, flushed Redis):
every read of the thread raises `StoreError` instead of answering "no such
thread" (a resumed graph would silently start it from scratch), health reports
the archive, and once ClickHouse is back the same read restores the thread."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langgraph.types import Command

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, StoreError
from aiecs_checkpoint.stores.clickhouse.archive import READ_BACKOFF_S, ArchiveSettings
from tests.conftest import engine_for
from tests.servers_clickhouse import ClickHouseServer, external_clickhouse_url
from tests.stores.clickhouse.test_archive import HOT, _cfg, _forget_hot, _graph

pytestmark = pytest.mark.slow


@pytest.fixture
def front() -> Iterator[ClickHouseServer]:
    """A ClickHouse front of this test's own, to stop and restart."""
    if external_clickhouse_url():
        pytest.skip("needs the local ClickHouse front")
    server = ClickHouseServer().start()
    yield server
    server.close()


def settings_for(server: ClickHouseServer) -> ArchiveSettings:
    return ArchiveSettings(
        host=server.host,
        port=server.port,
        database=f"o{uuid.uuid4().hex[:10]}",
        flush_interval=0.05,
        connect_timeout=1,
        close_timeout=1,
    )


def eventually(read: Callable[[], Any], timeout: float) -> Any:
    """`read()` once it stops raising StoreError (reads fail fast for a while
    after a failed one)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("hot", HOT)
def test_a_lost_thread_is_never_read_as_new_while_the_archive_is_down(
    front: ClickHouseServer, hot: str
) -> None:
    prefix = f"o{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"archive": settings_for(front)}
    if hot != "memory":
        options["key_prefix"] = prefix
    engine = engine_for(hot, **options)
    with ContextEngineSaver(engine) as saver:
        graph = _graph(saver)
        config = _cfg("lost")
        graph.invoke({"log": []}, config)  # paused on interrupt()
        before = graph.get_state(config)
        assert before.next == ("ask",)
        assert engine.archive is not None and engine.archive.flush(10)
        assert engine.health_check_sync()["status"] == "healthy"
        front.stop()
        _forget_hot(engine, prefix)
        reads: dict[str, Callable[[], Any]] = {
            "get_tuple": lambda: saver.get_tuple(config),
            "list": lambda: list(saver.list(config)),
            "get_state": lambda: graph.get_state(config),
            "history": lambda: list(graph.get_state_history(config)),
            "resume": lambda: graph.invoke(Command(resume="x"), config),
            "aget_tuple": lambda: asyncio.run(saver.aget_tuple(config)),
            "task_context": lambda: saver.get_task_context("lost"),
        }
        for name, read in reads.items():
            with pytest.raises(StoreError, match="ClickHouse archive") as info:
                read()
            assert "'lost'" in str(info.value), name
        health = engine.health_check_sync()
        assert health["status"] == "degraded"
        assert any("ClickHouse archive" in i for i in health["issues"])
        front.start()
        restored = eventually(lambda: saver.get_tuple(config), READ_BACKOFF_S + 10)
        assert restored is not None
        assert graph.get_state(config) == before
        result = graph.invoke(Command(resume="x"), config)
        assert result["log"] == ["start", "answer:x", "finish"]
        assert engine.health_check_sync()["status"] == "healthy"


def test_health_reports_an_unreachable_archive_right_after_start_up(
    front: ClickHouseServer,
) -> None:
    settings = settings_for(front)
    front.stop()
    engine = ContextEngine(archive=settings)
    try:
        health = engine.health_check_sync()
        assert health["status"] == "degraded"
        assert any(
            "ClickHouse archive" in issue and settings.server in issue
            for issue in health["issues"]
        )
        assert engine.archive is not None
        assert engine.archive.counters.last_error is None  # no write failed yet
        front.start()
        eventually(
            lambda: _raise_if_degraded(engine.health_check_sync()),
            READ_BACKOFF_S + 10,
        )
    finally:
        engine.close_sync()


def _raise_if_degraded(health: dict[str, Any]) -> None:
    if health["status"] != "healthy":
        raise StoreError(str(health["issues"]))


def test_a_thread_the_archive_positively_lacks_is_new_and_remembered(
    front: ClickHouseServer,
) -> None:
    """The absent memo: a thread ClickHouse said it lacks reads as new even if
    ClickHouse then goes down; one it could not be asked about raises."""
    engine = ContextEngine(archive=settings_for(front))
    with ContextEngineSaver(engine) as saver:
        assert saver.get_tuple(_cfg("new")) is None  # asked: ClickHouse lacks it
        front.stop()
        assert saver.get_tuple(_cfg("new")) is None  # remembered
        with pytest.raises(StoreError, match="'never-asked'"):
            saver.get_tuple(_cfg("never-asked"))
        front.start()
