"""A test-only ClickHouse HTTP front that runs every statement in chdb.

No modern ClickHouse server can be installed here, but chdb embeds the same
engine. This small server speaks the part of ClickHouse's HTTP interface that
``clickhouse_connect.get_client`` and ``get_async_client`` use, so tests talk to
a real engine through the real client transport. Data lives in ``--data-dir``
and survives a restart of the process on the same directory.

Run: ``python tests/chfront.py --port 0 --data-dir DIR [--user U --password P]``;
it prints ``READY <port>`` once it accepts connections and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

# URL parameters that are HTTP-interface controls, not engine settings.
_NOT_SETTINGS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "session_id",
        "session_timeout",
        "session_check",
        "query_id",
        "user",
        "password",
        "quota_key",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "enable_http_compression",
        "send_progress_in_http_headers",
        "cancel_http_readonly_queries_on_client_close",
        "add_http_cors_header",
    }
)
# ClickHouse's exceptionCodeToHTTPStatus, minus 503: clients retry that status.
_STATUS_BY_CODE = {
    **dict.fromkeys((192, 193, 497, 516), 403),
    **dict.fromkeys((6, 25, 26, 27, 36, 38, 41, 44, 53, 62, 72, 117, 321, 376), 400),
    **dict.fromkeys((46, 47, 50, 56, 57, 60, 63, 73, 81, 115, 336), 404),
    194: 401,
    48: 501,
    159: 408,
    202: 413,
}
_MAX_IDLE_CONNECTIONS = 8
_DEFAULT_SESSION_TIMEOUT = 60.0

_IDENT = rb"(?:`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"|[A-Za-z_][\w$]*)"
# `INSERT INTO db.t (cols) FORMAT Fmt` + data: the data goes through a file,
# because chdb's inline insert data stops at the first blank line.
_INSERT_WITH_DATA = re.compile(
    rb"\s*INSERT\s+INTO\s+(?:TABLE\s+)?(?P<target>"
    + _IDENT
    + rb"(?:\s*\.\s*"
    + _IDENT
    + rb")?(?:\s*\((?:[^()`]|`(?:[^`\\]|\\.)*`)*\))?)"
    rb"(?:\s+(?P<settings>SETTINGS\s[^\n]*?))?\s*FORMAT\s+(?P<fmt>\w+)[ \t\f]*\r?\n?",
    re.IGNORECASE,
)
_SKIP = rb"(?:\s|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*"
_RETURNS_ROWS = re.compile(
    _SKIP + rb"(?:SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN|CHECK)\b",
    re.IGNORECASE | re.DOTALL,
)
_CHANGES_CONTEXT = re.compile(
    _SKIP + rb"(?:SET|USE|CREATE\s+TEMPORARY)\b", re.IGNORECASE | re.DOTALL
)
_TRAILING_FORMAT = re.compile(rb"\bFORMAT\s+(\w+)\s*;?\s*\Z", re.IGNORECASE)
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
_SETTING_NAME = re.compile(r"\A\w+\Z")


class FrontError(Exception):
    """An error reported the way ClickHouse does: a code and a message."""

    def __init__(self, code: int, message: str, name: str | None = None) -> None:
        text = (
            message
            if message.startswith("Code:")
            else f"Code: {code}. DB::Exception: {message}"
        )
        if name:
            text += f". ({name})"
        super().__init__(text)
        self.code = code


def _from_engine(error: Exception) -> FrontError:
    message = str(error).strip()
    match = _ERROR_CODE.search(message)
    return FrontError(int(match.group(1)) if match else 1001, message)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _backquote(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _decompress(body: bytes, encoding: str) -> bytes:
    """Undo ``Content-Encoding`` (lz4/zstd frames are concatenated, one per block)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "lz4":
        import lz4.frame

        parts, rest = [], body
        while rest:
            decompressor = lz4.frame.LZ4FrameDecompressor()
            parts.append(decompressor.decompress(rest))
            rest = decompressor.unused_data
        return b"".join(parts)
    if encoding == "zstd":
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd
        return bytes(zstd.decompress(body))
    if encoding == "br":
        import brotli

        return bytes(brotli.decompress(body))
    raise FrontError(
        1001, f"Unsupported Content-Encoding {encoding!r}", "STD_EXCEPTION"
    )


def _multipart_fields(body: bytes, content_type: str) -> dict[str, str]:
    """The text fields of a ``multipart/form-data`` body (query and param_*)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise FrontError(36, "multipart/form-data without boundary", "BAD_ARGUMENTS")
    fields: dict[str, str] = {}
    for part in body.split(b"--" + match.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if b"filename=" in head:
            raise FrontError(48, "External data is not supported", "NOT_IMPLEMENTED")
        name = re.search(rb'name="([^"]*)"', head)
        if name:
            fields[name.group(1).decode()] = content.removesuffix(b"\r\n").decode()
    return fields


@dataclass
class _Connection:
    """One chdb connection; it has its own current database and settings."""

    handle: Any
    database: str | None = "default"
    settings: dict[str, str] = field(default_factory=dict)
    dirty: bool = False


@dataclass
class _Session:
    connection: _Connection
    timeout: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class Reply:
    """What to send back for one statement."""

    body: bytes
    result_format: str | None
    summary: dict[str, str]


class Engine:
    """chdb on one data directory: a connection per in-flight request."""

    def __init__(self, data_dir: str, statement_log: str | None = None) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self._statement_log = open(statement_log, "ab") if statement_log else None
        os.makedirs(self.data_dir, exist_ok=True)
        self._tmp_dir = tempfile.mkdtemp(prefix="chfront-")
        # Held open for the process lifetime so the engine never unloads.
        self._anchor = chdb.connect(self.data_dir)
        timezone = self._anchor.query("SELECT timezone()", "TabSeparated")
        self.timezone = timezone.bytes().decode().strip()
        self._lock = threading.Lock()
        self._quiet = threading.Condition(self._lock)
        self._active = 0
        self.closing = False
        self._idle: list[_Connection] = []
        self._sessions: dict[str, _Session] = {}

    def close(self, grace: float = 10.0) -> None:
        """Refuse new statements, let running ones finish, close every connection."""
        with self._lock:
            self.closing = True
            self._quiet.wait_for(lambda: self._active == 0, timeout=grace)
            connections = [
                *self._idle,
                *(s.connection for s in self._sessions.values()),
            ]
            self._idle.clear()
            self._sessions.clear()
        for connection in connections:
            connection.handle.close()
        self._anchor.close()
        if self._statement_log:
            self._statement_log.close()
        shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def _log_statement(self, text: bytes, params: dict[str, str]) -> None:
        """Append the statement as the engine parses it (never insert data) and
        the names of its bound parameters, one JSON line, when asked to."""
        if self._statement_log is None:
            return
        names = sorted(k[6:] for k in params if k.startswith("param_"))
        line = {"sql": text.decode(errors="backslashreplace"), "params": names}
        with self._lock:
            self._statement_log.write(json.dumps(line).encode() + b"\n")
            self._statement_log.flush()

    @contextmanager
    def _pooled(self) -> Iterator[_Connection]:
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = _Connection(chdb.connect(self.data_dir))
        try:
            yield connection
        finally:
            with self._lock:
                keep = not connection.dirty and len(self._idle) < _MAX_IDLE_CONNECTIONS
                if keep:
                    self._idle.append(connection)
            if not keep:
                connection.handle.close()

    @contextmanager
    def _session(
        self, session_id: str, params: dict[str, str]
    ) -> Iterator[_Connection]:
        timeout = float(params.get("session_timeout") or _DEFAULT_SESSION_TIMEOUT)
        now = time.monotonic()
        with self._lock:
            expired = [
                key
                for key, s in self._sessions.items()
                if now - s.last_used > s.timeout and not s.lock.locked()
            ]
            closing = [self._sessions.pop(key).connection for key in expired]
            session = self._sessions.get(session_id)
            if session is None:
                if params.get("session_check") == "1":
                    raise FrontError(
                        372, f"Session {session_id} not found", "SESSION_NOT_FOUND"
                    )
                session = _Session(_Connection(chdb.connect(self.data_dir)), timeout)
                self._sessions[session_id] = session
            locked = session.lock.acquire(blocking=False)
        for connection in closing:
            connection.handle.close()
        if not locked:
            raise FrontError(
                373,
                f"Session {session_id} is locked by a concurrent client",
                "SESSION_IS_LOCKED",
            )
        try:
            session.timeout = timeout
            yield session.connection
        finally:
            session.last_used = time.monotonic()
            session.lock.release()

    def execute(self, sql: bytes, params: dict[str, str]) -> Reply:
        """Run one statement with the request's database, settings and parameters."""
        query_params = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {
            k: v
            for k, v in params.items()
            if not k.startswith(("param_", "http_")) and k not in _NOT_SETTINGS
        }
        with self._lock:
            if self.closing:
                raise FrontError(236, "The server is shutting down", "ABORTED")
            self._active += 1
        try:
            return self._execute(sql, params, query_params, settings)
        finally:
            with self._lock:
                self._active -= 1
                self._quiet.notify_all()

    def _execute(
        self,
        sql: bytes,
        params: dict[str, str],
        query_params: dict[str, str],
        settings: dict[str, str],
    ) -> Reply:
        session_id = params.get("session_id")
        scope = self._session(session_id, params) if session_id else self._pooled()
        with scope as connection:
            database = params.get("database") or (None if session_id else "default")
            if database and database != connection.database:
                self._run(connection, f"USE {_backquote(database)}")
                connection.database = database
            self._apply_settings(connection, settings)
            result = self._statement(connection, sql, params, query_params)
            if _CHANGES_CONTEXT.match(sql):
                connection.dirty = not session_id
                connection.database = None
        return result

    def _statement(
        self,
        connection: _Connection,
        sql: bytes,
        params: dict[str, str],
        query_params: dict[str, str],
    ) -> Reply:
        insert = _INSERT_WITH_DATA.match(sql)
        self._log_statement(sql[: insert.end()] if insert else sql, params)
        if insert:
            return self._insert_from_file(connection, insert, sql[insert.end() :])
        default_format = params.get("default_format") or "TabSeparated"
        result = self._run(connection, sql, default_format, query_params)
        body = result.bytes() or b""
        result_format = None
        if _RETURNS_ROWS.match(sql):
            explicit = _TRAILING_FORMAT.search(sql)
            result_format = explicit.group(1).decode() if explicit else default_format
        return Reply(body, result_format, _summary(result, len(body)))

    def _insert_from_file(
        self, connection: _Connection, insert: re.Match[bytes], data: bytes
    ) -> Reply:
        fd, path = tempfile.mkstemp(dir=self._tmp_dir, suffix=".data")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            target = insert.group("target").decode()
            fmt = insert.group("fmt").decode()
            source = f"FROM INFILE {_quote(path)} COMPRESSION 'none'"
            settings = (insert.group("settings") or b"").decode()
            sql = f"INSERT INTO {target} {source} {settings} FORMAT {fmt}"
            result = self._run(connection, sql)
        finally:
            os.unlink(path)
        return Reply(b"", None, _summary(result, 0))

    def _apply_settings(
        self, connection: _Connection, settings: dict[str, str]
    ) -> None:
        """Give the connection the request's settings: SET changes, reset the rest.

        Clients repeat the same settings on every request, so in the steady state
        this runs nothing. In a session a URL setting overrides (and, once a later
        request omits it, resets) a ``SET`` of the same name.
        """
        for name in settings:
            if not _SETTING_NAME.match(name):
                raise FrontError(115, f"Unknown setting '{name}'", "UNKNOWN_SETTING")
        current = connection.settings
        changes = [
            f"{k} = {_quote(v)}" for k, v in settings.items() if current.get(k) != v
        ]
        changes += [f"{k} = DEFAULT" for k in current if k not in settings]
        if not changes:
            return
        try:
            self._run(connection, "SET " + ", ".join(changes))
        except FrontError:
            for name in {*settings, *current}:
                with suppress(FrontError):
                    self._run(connection, f"SET {name} = DEFAULT")
            connection.settings = {}
            raise
        connection.settings = dict(settings)

    @staticmethod
    def _run(
        connection: _Connection,
        sql: str | bytes,
        fmt: str = "TabSeparated",
        query_params: dict[str, str] | None = None,
    ) -> Any:
        try:
            return connection.handle.query(sql, fmt, params=query_params or {})
        except Exception as error:
            raise _from_engine(error) from None


def _summary(result: Any, result_bytes: int) -> dict[str, str]:
    return {
        "read_rows": str(result.rows_read()),
        "read_bytes": str(result.bytes_read()),
        "written_rows": str(result.rows_written()),
        "written_bytes": str(result.bytes_written()),
        "total_rows_to_read": "0",
        "result_bytes": str(result_bytes),
        "elapsed_ns": str(int(result.elapsed() * 1e9)),
    }


class FrontServer(ThreadingHTTPServer):
    """Threaded HTTP server holding the engine and the accepted credentials."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], engine: Engine, user: str, password: str
    ) -> None:
        super().__init__(address, Handler)
        self.engine = engine
        self.credentials = (user, password)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            print(
                f"chfront: error serving {client_address}: {error!r}", file=sys.stderr
            )


class Handler(BaseHTTPRequestHandler):
    """One keep-alive HTTP/1.1 connection: ``GET /ping`` and statements on ``/``."""

    protocol_version = "HTTP/1.1"
    server_version = "chfront/1"
    disable_nagle_algorithm = True
    wbufsize = 1 << 16
    timeout = 120
    server: FrontServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output should not carry an access log."""

    def do_GET(self) -> None:
        if self.server.engine.closing:
            self.close_connection = True
            return
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path in ("/ping", "/replicas_status") or (
            url.path == "/" and "query" not in params
        ):
            self._send(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
        elif url.path == "/":
            self._handle_statement(params, b"")
        else:
            self._send_error(FrontError(1001, f"No handler for {url.path}"), status=404)

    def do_POST(self) -> None:
        if self.server.engine.closing:
            self.close_connection = True
            return
        url = urlsplit(self.path)
        try:
            body = self._read_body()
        except Exception as error:
            self.close_connection = True
            self._send_error(FrontError(1001, f"Cannot read request body: {error!r}"))
            return
        if url.path != "/":
            self._send_error(FrontError(1001, f"No handler for {url.path}"), status=404)
            return
        self._handle_statement(dict(parse_qsl(url.query, keep_blank_values=True)), body)

    def _handle_statement(self, params: dict[str, str], body: bytes) -> None:
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            body = _decompress(body, self.headers.get("Content-Encoding", ""))
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("multipart/form-data"):
                params.update(_multipart_fields(body, content_type))
                body = b""
            self._authenticate(params)
            query = params.get("query", "").encode()
            sql = query + b"\n" + body if query and body else query or body
            if not sql.strip():
                raise FrontError(62, "Empty query", "SYNTAX_ERROR")
            reply = self.server.engine.execute(sql, params)
        except FrontError as error:
            self._send_error(error, query_id)
            return
        except Exception as error:
            self._send_error(FrontError(1001, repr(error), "STD_EXCEPTION"), query_id)
            return
        headers = {
            "Content-Type": "application/octet-stream"
            if reply.result_format in ("Native", "RowBinary", "Arrow", "Parquet")
            else "text/plain; charset=UTF-8",
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Summary": json.dumps(reply.summary),
        }
        if reply.result_format:
            headers["X-ClickHouse-Format"] = reply.result_format
        self._send(200, reply.body, headers)

    def _authenticate(self, params: dict[str, str]) -> None:
        authorization = self.headers.get("Authorization", "")
        if authorization.lower().startswith("basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            user, _, password = decoded.partition(":")
        else:
            user = (
                self.headers.get("X-ClickHouse-User") or params.get("user") or "default"
            )
            password = (
                self.headers.get("X-ClickHouse-Key") or params.get("password") or ""
            )
        if (user, password) != self.server.credentials:
            raise FrontError(
                516,
                f"{user}: Authentication failed: password is incorrect, "
                "or there is no user with such name",
                "AUTHENTICATION_FAILED",
            )

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_error(
        self, error: FrontError, query_id: str = "", status: int | None = None
    ) -> None:
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(error.code),
        }
        if query_id:
            headers["X-ClickHouse-Query-Id"] = query_id
        body = (str(error) + "\n").encode(errors="replace")
        self._send(status or _STATUS_BY_CODE.get(error.code, 500), body, headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Keep-Alive", "timeout=60")
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--user", default="default")
    parser.add_argument("--password", default="")
    parser.add_argument(
        "--statement-log",
        help="append each statement's text (not insert data) as a JSON line here",
    )
    args = parser.parse_args(argv)

    engine = Engine(args.data_dir, args.statement_log)
    server = FrontServer((args.host, args.port), engine, args.user, args.password)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    print(f"READY {server.server_address[1]}", flush=True)
    parent = os.getppid()
    # Also stop when the parent dies (e.g. a killed test run): no orphaned fronts.
    while not stop.wait(0.5) and os.getppid() == parent:
        pass
    server.shutdown()
    server.server_close()
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
