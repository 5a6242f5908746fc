"""A process that leaves without closing its engine still archives what it
queued (flushed at interpreter exit, within `close_timeout`), and says how many
rows it dropped when it cannot (a WARNING), never losing them silently."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import clickhouse_connect

from aiecs_checkpoint.stores.clickhouse import layout as C
from aiecs_checkpoint.stores.clickhouse.archive import ArchiveSettings
from tests.conftest import archive_settings
from tests.servers import find_free_port

CHILD = textwrap.dedent(
    """
    import sys
    from langgraph.checkpoint.base import empty_checkpoint
    from aiecs_checkpoint import ContextEngine, ContextEngineSaver
    from aiecs_checkpoint.stores.clickhouse.archive import ArchiveSettings

    settings = ArchiveSettings(**eval(sys.argv[1]))
    saver = ContextEngineSaver(ContextEngine(archive=settings))
    config = {"configurable": {"thread_id": "left", "checkpoint_ns": ""}}
    for i in range(5):
        checkpoint = empty_checkpoint()
        version = f"{i + 1:032}.0"
        checkpoint["channel_values"] = {"n": i}
        checkpoint["channel_versions"] = {"n": version}
        config = saver.put(config, checkpoint, {"step": i}, {"n": version})
    print(saver.engine.archive.metrics()["queued"], flush=True)
    # no close(): the interpreter exits with the rows still queued
    """
)


def run_child(settings: ArchiveSettings) -> subprocess.CompletedProcess[str]:
    fields = {
        name: getattr(settings, name)
        for name in ("host", "port", "database", "flush_interval", "close_timeout")
    }
    fields["connect_timeout"] = 1
    return subprocess.run(
        [sys.executable, "-c", CHILD, repr(fields)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def count(settings: ArchiveSettings, thread: str) -> int:
    client = clickhouse_connect.get_client(
        **settings.client_options(), database=settings.database
    )
    try:
        query = f"SELECT count() FROM `{C.CHECKPOINTS}` FINAL WHERE thread_id = 'left'"
        return int(client.query(query).result_rows[0][0])
    finally:
        client.close()


def test_rows_queued_when_the_process_exits_without_close_are_archived() -> None:
    settings = archive_settings(flush_interval=600.0, close_timeout=30.0)
    done = run_child(settings)
    queued = int(done.stdout.split()[0])
    assert queued > 5  # nothing was delivered before exit
    assert count(settings, "left") == 5
    assert "dropped" not in done.stderr


def test_rows_that_cannot_be_archived_at_exit_are_counted_in_a_warning() -> None:
    settings = ArchiveSettings(
        host="127.0.0.1",
        port=find_free_port(),  # nothing listens there
        database=f"x{uuid.uuid4().hex[:8]}",
        flush_interval=600.0,
        close_timeout=1.0,
    )
    done = run_child(settings)
    queued = int(done.stdout.split()[0])
    assert f"{queued} rows and 0 deletes dropped at exit" in done.stderr
    assert "close_timeout=1.0s" in done.stderr
