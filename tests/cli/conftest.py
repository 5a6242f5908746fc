"""Fixtures of the CLI tests: the CLI as a subprocess, populated stores.

`cli(*args)` runs `python -m aiecs_checkpoint ARGS` from the repository root
(so `--saver tests.cli.fixture_app:saver` imports), with no REDIS_* or
CLICKHOUSE_* variable inherited. The `store` fixture gives the arguments
naming a populated store: the embedded memory store of `fixture_app` (each CLI
process populates its own) or a Redis prefix populated here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from tests.cli import graphs
from tests.conftest import REDIS_INSTALLED, redis_url

ROOT = Path(__file__).resolve().parents[2]
MEMORY = ["--saver", "tests.cli.fixture_app:saver"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def _start(args: Sequence[str], env: dict[str, str] | None) -> subprocess.Popen[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "CLICKHOUSE_"))
    }
    return subprocess.Popen(
        [sys.executable, "-m", "aiecs_checkpoint", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**base, "COLUMNS": "250", **(env or {})},
    )


def _finish(proc: subprocess.Popen[str], input: str | None) -> Result:
    out, err = proc.communicate(input or "", timeout=120)
    return Result(proc.returncode, out, err)


def cli(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> Result:
    """Run the CLI; COLUMNS is wide so tables never fold ids."""
    return _finish(_start(args, env), input)


def cli_all(*calls: Sequence[str]) -> list[Result]:
    """Run independent CLI calls side by side (each process starts slowly)."""
    procs = [_start(args, None) for args in calls]
    return [_finish(p, None) for p in procs]


def redis_saver(prefix: str, **kwargs: Any) -> ContextEngineSaver:
    """A connected saver on the session's Redis under `prefix`."""
    engine = ContextEngine(redis_url=redis_url(), key_prefix=prefix)
    return ContextEngineSaver(engine, **kwargs).__enter__()


def fresh_prefix() -> str:
    return f"cli{uuid.uuid4().hex[:10]}"


def _redis_usable() -> None:
    if not (REDIS_INSTALLED or os.environ.get("REDIS_URL") or os.environ.get("CI")):
        pytest.skip(
            "redis-server not installed (apt-get install redis-server redis-tools)"
        )


@pytest.fixture
def redis_store() -> Iterator[tuple[list[str], ContextEngineSaver]]:
    """(CLI arguments, saver) of a fresh Redis prefix populated by
    `graphs.populate`, for tests that change it."""
    _redis_usable()
    prefix = fresh_prefix()
    saver = redis_saver(prefix)
    graphs.populate(saver)
    yield ["--url", redis_url(), "--prefix", prefix], saver
    saver.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared_redis_store() -> Iterator[list[str]]:
    """CLI arguments of a populated Redis prefix that tests only read."""
    _redis_usable()
    prefix = fresh_prefix()
    saver = redis_saver(prefix)
    graphs.populate(saver)
    yield ["--url", redis_url(), "--prefix", prefix]
    saver.__exit__(None, None, None)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """CLI arguments naming a populated store, memory or Redis."""
    if request.param == "memory":
        yield MEMORY
    else:
        yield request.getfixturevalue("shared_redis_store")
