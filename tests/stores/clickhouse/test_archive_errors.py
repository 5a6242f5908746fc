"""The archive reports ClickHouse failures as `StoreError` and never disguises a
programming error (or a configuration the driver rejects) as one."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, InvalidConfigError
from aiecs_checkpoint.stores.clickhouse.archive import Archive, ArchiveSettings
from tests.conftest import archive_settings


def started(settings: ArchiveSettings) -> Archive:
    archive = Archive(settings)
    archive.start()
    return archive


def test_a_sub_second_connect_timeout_works_for_reads() -> None:
    """clickhouse-connect's sync client truncates it to whole seconds: 0.2 used
    to become 0, rejected by urllib3, and reported as an unavailable archive."""
    archive = started(archive_settings(connect_timeout=0.2))
    try:
        assert archive.read_thread("nobody") == {}
        assert archive.probe() is None
    finally:
        archive.close(1)


@pytest.mark.parametrize("name", ["connect_timeout", "read_timeout"])
@pytest.mark.parametrize("bad", [0, -1, "5", True, float("inf")])
def test_an_invalid_timeout_is_refused(name: str, bad: Any) -> None:
    with pytest.raises(InvalidConfigError, match=name):
        ArchiveSettings(**{name: bad})


def test_a_sub_second_read_timeout_works_for_reads() -> None:
    """Like the connect timeout, the sync client truncates it to whole seconds
    (0.2 would become 0, which urllib3 rejects); the frozen-server bound itself
    is pinned in tests/faults/test_archive_outage.py."""
    archive = started(archive_settings(read_timeout=0.2))
    try:
        assert archive.read_thread("nobody") == {}
        assert archive.probe() is None
    finally:
        archive.close(1)


def test_a_programming_error_in_a_read_is_not_turned_into_store_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive = started(archive_settings())
    try:
        reader = archive._client()

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise AttributeError("a bug, not an outage")

        monkeypatch.setattr(reader, "query", broken)
        with pytest.raises(AttributeError, match="a bug, not an outage"):
            archive.read_thread("t")
        assert archive.counters.last_read_error is None
    finally:
        archive.close(1)


def test_a_programming_error_in_the_writer_is_logged_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = ContextEngine(archive=archive_settings(close_timeout=0.5))
    archive = engine.archive
    assert archive is not None

    async def broken(client: Any, batch: Any) -> None:
        raise TypeError("a bug in the writer")

    monkeypatch.setattr(archive, "_write", broken)
    with caplog.at_level(logging.WARNING, logger="aiecs_checkpoint.archive"):
        with ContextEngineSaver(engine) as saver:
            saver.put(
                {"configurable": {"thread_id": "t", "checkpoint_ns": ""}},
                empty_checkpoint(),
                {"step": 0},
                {},
            )
            deadline = time.monotonic() + 10
            while archive.counters.retried == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            health = engine.health_check_sync()
    bugs = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert bugs and bugs[0].exc_info is not None
    assert bugs[0].levelno == logging.ERROR
    assert "TypeError: a bug in the writer" in str(health["issues"])
