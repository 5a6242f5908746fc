"""Start and stop the chdb-backed ClickHouse HTTP front for the test suite.

No ClickHouse server binary can be installed here, so :class:`ClickHouseServer`
runs ``tests/chfront.py`` (the real engine, embedded by chdb, behind ClickHouse's
HTTP interface) as a child process on ``127.0.0.1``. Its data directory outlives
:meth:`ClickHouseServer.stop`, so :meth:`ClickHouseServer.restart` simulates an
outage and a recovery with the data intact.

Typical use::

    with ClickHouseServer() as server:
        client = clickhouse_connect.get_client(
            dsn=server.dsn, autogenerate_session_id=False
        )
        ...
        server.stop()     # queries now fail with a connection error
        server.start()    # same port, same data
        server.pause()    # SIGSTOP: connections hang instead of failing
        server.resume()   # SIGCONT

Set ``CLICKHOUSE_URL`` to run against a real server instead: tests read it with
:func:`external_clickhouse_url`.
"""

from __future__ import annotations

import atexit
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn
from urllib.parse import quote

__all__ = [
    "CHFRONT",
    "ClickHouseServer",
    "ClickHouseServerError",
    "external_clickhouse_url",
]

CHFRONT = Path(__file__).with_name("chfront.py")
"""The HTTP front script the server process runs."""

HOST = "127.0.0.1"
_STOP_TIMEOUT = 15.0
_LOG_TAIL_CHARS = 4000


class ClickHouseServerError(RuntimeError):
    """The front failed to start (its stderr is in the message)."""


def external_clickhouse_url() -> str | None:
    """``CLICKHOUSE_URL`` when set: tests then use that server instead of the front.

    It is a clickhouse-connect DSN, e.g. ``http://user:password@host:8123/db``.
    """
    return os.environ.get("CLICKHOUSE_URL") or None


_live_servers: set[ClickHouseServer] = set()


@atexit.register
def _stop_leftover_servers() -> None:
    for server in list(_live_servers):
        server.close()


class ClickHouseServer:
    """One ``tests/chfront.py`` process serving ClickHouse HTTP on ``127.0.0.1``.

    Args:
        data_dir: Where the engine keeps its data; a temp dir (removed by
            :meth:`close`) when omitted. A given directory is never removed.
        port: Port to listen on; the first start picks a free one when omitted,
            and later starts reuse it.
        user: User name the front accepts (``default`` like a fresh ClickHouse).
        password: Password the front accepts; any other is refused with 516.
        database: Database tests should use (reported by :attr:`database`).
        startup_timeout: Seconds to wait for ``READY``.
        autostart: Start in the constructor rather than on :meth:`start`.
        statement_log: File the front appends every statement's text to (one
            JSON line ``{"sql": ..., "params": [names]}``; insert data is never
            logged), to check what SQL the engine was sent.
    """

    host: str = HOST
    """Interface the front listens on."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int | None = None,
        user: str = "default",
        password: str = "",
        database: str = "default",
        startup_timeout: float = 30.0,
        autostart: bool = False,
        statement_log: str | Path | None = None,
    ) -> None:
        self.statement_log = Path(statement_log) if statement_log else None
        self._owns_data_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="chfront-data-"))
        self._port = port or 0
        self.user = user
        self.password = password
        self.database = database
        self.startup_timeout = startup_timeout
        self.startup_seconds: float | None = None
        """How long the last :meth:`start` took until ``READY``."""
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._paused = False
        if autostart:
            self.start()

    @property
    def port(self) -> int:
        """TCP port (0 until the first start has picked one)."""
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, without credentials."""
        return f"http://{self.host}:{self._port}"

    @property
    def dsn(self) -> str:
        """``http://user:password@127.0.0.1:PORT/database``, for ``dsn=``."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"http://{auth}@{self.host}:{self._port}/{quote(self.database, safe='')}"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``get_client`` / ``get_async_client``."""
        return {
            "host": self.host,
            "port": self._port,
            "username": self.user,
            "password": self.password,
            "database": self.database,
        }

    @property
    def is_running(self) -> bool:
        """Whether the front process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> ClickHouseServer:
        """Start the front and block until it prints ``READY <port>``.

        Raises:
            ClickHouseServerError: if it exits or stays silent past
                ``startup_timeout``; the message carries its stderr.
        """
        if self.is_running:
            raise ClickHouseServerError(f"the front on port {self._port} is running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = tempfile.TemporaryFile(prefix="chfront-log-")
        argv = [sys.executable, str(CHFRONT), "--port", str(self._port)]
        argv += ["--data-dir", str(self.data_dir)]
        argv += ["--user", self.user, "--password", self.password]
        if self.statement_log:
            argv += ["--statement-log", str(self.statement_log)]
        began = time.monotonic()
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            # Own session: Ctrl-C reaches pytest, which then stops the front in order.
            start_new_session=True,
        )
        _live_servers.add(self)
        try:
            self._port = self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Terminate the front (SIGTERM, then SIGKILL); keeps the data. Idempotent."""
        process, self._process = self._process, None
        if process is not None and self._paused and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
        self._paused = False
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        _live_servers.discard(self)

    def restart(self) -> ClickHouseServer:
        """Stop, then start on the same port and data dir (an outage and recovery)."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """Freeze the front with SIGSTOP: connections are accepted by the kernel
        and requests sent, but nothing is answered until :meth:`resume`."""
        if not self.is_running:
            raise ClickHouseServerError(f"the front on port {self._port} is stopped")
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        """Stop, and remove the data dir if this object created it."""
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> ClickHouseServer:
        if not self.is_running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.url} {state}>"

    def log_output(self) -> str:
        """The front's stderr so far."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _wait_until_ready(self) -> int:
        assert self._process is not None and self._process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._fail(
                        f"did not print READY within {self.startup_timeout:.1f}s"
                    )
                if selector.select(timeout=min(remaining, 0.5)):
                    line = self._process.stdout.readline().decode(errors="replace")
                    if line.startswith("READY "):
                        return int(line.split()[1])
                    if not line:
                        self._process.wait()
                        self._fail(f"exited with code {self._process.returncode}")
                elif self._process.poll() is not None:
                    self._fail(f"exited with code {self._process.returncode}")

    def _fail(self, what: str) -> NoReturn:
        tail = self.log_output()[-_LOG_TAIL_CHARS:].strip() or "(empty)"
        raise ClickHouseServerError(
            f"the ClickHouse front (port {self._port or 'any'}, data {self.data_dir}) "
            f"{what}.\n--- stderr ---\n{tail}\n--- end ---"
        )
