"""`import --from`: threads copied out of LangGraph's SQLite and Postgres savers
(real files and a real PostgreSQL server) resume under ContextEngineSaver."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from tests.cli import graphs
from tests.cli.conftest import cli, fresh_prefix, redis_saver
from tests.conftest import redis_url
from tests.servers_postgres import PostgresServer, find_binaries


def check_copy(source: BaseCheckpointSaver[Any], target: Any) -> None:
    for thread_id in ("paused", "finished"):
        expected = graphs.history(source, thread_id)
        assert expected
        assert graphs.history(target, thread_id) == expected
    listed = target.list_threads(filter={"user_id": "u7"})
    assert [i.thread_id for i in listed] == ["paused"]  # resumed without user_id
    assert graphs.resume(target, "paused")["log"] == ["agent", "answer yes", "done"]


def test_import_from_a_sqlite_file_copies_threads_that_resume(tmp_path: Path) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    db = tmp_path / "langgraph.db"
    conn = sqlite3.connect(db, check_same_thread=False)
    source = SqliteSaver(conn)
    graphs.populate_source(source)
    prefix = fresh_prefix()
    done = cli("import", "--from", f"sqlite:{db}", "--url", redis_url(),
               "--prefix", prefix, "--json")  # fmt: skip
    assert done.code == 0, done.err
    assert sorted(done.json()["threads"]) == ["finished", "paused"]
    check_copy(source, redis_saver(prefix))
    again = cli("import", "--from", f"sqlite:{db}", "--url", redis_url(),
                "--prefix", prefix)  # fmt: skip
    assert again.code == 1 and "already exists" in again.err
    conn.close()


def test_import_from_any_saver_object_named_module_attribute() -> None:
    prefix = fresh_prefix()
    done = cli("import", "--from", "tests.cli.fixture_source:saver",
               "--url", redis_url(), "--prefix", prefix, "--json")  # fmt: skip
    assert done.code == 0, done.err
    assert sorted(done.json()["threads"]) == ["finished", "paused"]
    target = redis_saver(prefix)
    steps = [(h[3]["step"], h[1]) for h in graphs.history(target, "paused")]
    assert steps == [(1, ("approve",)), (0, ("agent",)), (-1, ("__start__",))]
    assert graphs.resume(target, "paused")["log"] == ["agent", "answer yes", "done"]
    wrong = cli("import", "--from", "tests.cli.graphs:builder", "--url", redis_url(),
                "--prefix", prefix)  # fmt: skip
    assert wrong.code == 1 and "not a LangGraph checkpoint saver" in wrong.err


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    bindir = find_binaries()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer(bindir)
    try:
        yield server.url
    finally:
        server.stop()


def test_import_from_postgres_copies_threads_that_resume(postgres: str) -> None:
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(postgres) as source:
        source.setup()
        graphs.populate_source(source)
        prefix = fresh_prefix()
        done = cli("import", "--from", postgres, "--url", redis_url(),
                   "--prefix", prefix)  # fmt: skip
        assert done.code == 0, done.err
        check_copy(source, redis_saver(prefix))
    unreachable = cli("import", "--from", "postgresql://postgres@127.0.0.1:1/x",
                      "--url", redis_url(), "--prefix", fresh_prefix())  # fmt: skip
    assert unreachable.code == 1
    assert unreachable.err.startswith("Error: Postgres failed")
