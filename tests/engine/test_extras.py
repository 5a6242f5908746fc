"""Without an optional extra, asking for what it provides says which extra to
install (a typed error at construction), and the embedded store still works.
Each case runs in a fresh interpreter where the extra cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import sys
    for name in sys.argv[1].split(","):
        sys.modules[name] = None  # as if the extra were not installed
    from aiecs_checkpoint import ContextEngine, ContextEngineSaver
    from aiecs_checkpoint.errors import InvalidConfigError

    saver = ContextEngineSaver()  # the embedded store needs no extra
    assert saver.get_tuple({"configurable": {"thread_id": "t"}}) is None
    for make in (
        lambda: ContextEngine(redis_url="redis://localhost:6379/0"),
        lambda: ContextEngineSaver.from_conn_string("redis://localhost:6379/0"),
        lambda: ContextEngine(archive={"host": "localhost"}),
    ):
        try:
            make()
        except InvalidConfigError as exc:
            print(f"InvalidConfigError: {exc}")
        else:
            print("no error")
    """
)


def run(blocked: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, blocked],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_without_the_redis_extra_redis_options_name_the_extra() -> None:
    redis_url, conn_string, archive = run("redis")
    for line in (redis_url, conn_string):
        assert line.startswith("InvalidConfigError")
        assert "pip install 'aiecs-checkpoint[redis]'" in line
    assert archive == "no error"


@pytest.mark.parametrize("module", ["clickhouse_connect", "aiohttp"])
def test_without_the_clickhouse_extra_the_archive_names_the_extra(module: str) -> None:
    *_, archive = run(module)
    assert archive.startswith("InvalidConfigError")
    assert "pip install 'aiecs-checkpoint[clickhouse]'" in archive
