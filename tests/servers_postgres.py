"""A throwaway PostgreSQL server for the tests (Debian's `postgresql` package).

`PostgresServer()` runs `initdb` into a temporary directory and starts
`postgres` on a free 127.0.0.1 port with durability off (fsync, synchronous
commit); `stop()` ends it and removes the directory. As root, the server runs
as the `postgres` user the Debian package creates (PostgreSQL refuses root).
`find_binaries()` returns None when PostgreSQL is not installed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers import HOST, find_free_port

_STARTUP_TIMEOUT = 30.0


def find_binaries() -> Path | None:
    """The directory holding `initdb` and `postgres`, newest version first."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).parent] if on_path else []
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0)
    candidates += [Path(p).parent for p in reversed(found)]
    for directory in candidates:
        if (directory / "postgres").exists():
            return directory
    return None


class PostgresServer:
    """One `postgres` process on a free port, its data in a temp directory."""

    def __init__(self, bindir: Path) -> None:
        self.port = find_free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="aiecs-pg-"))
        self._data = self._dir / "data"
        self._user = self._run_as()
        if self._user is not None:
            os.chown(self._dir, self._user.pw_uid, self._user.pw_gid)
        self._log = (self._dir / "log").open("wb")
        self._run([str(bindir / "initdb"), "-D", str(self._data), "-U", "postgres",
                   "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])  # fmt: skip
        self._proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(self._data), "-p", str(self.port),
             "-k", str(self._dir), "-c", f"listen_addresses={HOST}",
             "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off"],
            stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=self._demote,
        )  # fmt: skip
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    @staticmethod
    def _run_as() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError(
                "PostgreSQL refuses to run as root and there is no 'postgres' user"
            ) from exc

    def _demote(self) -> None:
        if self._user is not None:
            os.setgid(self._user.pw_gid)
            os.setuid(self._user.pw_uid)

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(
            argv, capture_output=True, preexec_fn=self._demote, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode()[-2000:]}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            # The port answers before the server accepts logins; a query proves it.
            import psycopg

            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        log = (self._dir / "log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"postgres did not start on port {self.port}:\n{log}")

    def stop(self) -> None:
        """Fast shutdown, then remove the data directory."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)
