"""The ClickHouse cold archive: a bounded outbox, a background writer, reads.

Writes never block or fail the hot path: the hot store's caller only appends
rows to an in-process outbox (a deque under a lock). A worker thread, running
its own event loop and clickhouse-connect's async client, creates the tables,
then flushes the outbox in batches (when `batch_size` rows wait, or the oldest
has waited `flush_interval` seconds), retrying with backoff while ClickHouse is
unreachable; a failing batch stays at the head, so order is kept and nothing is
lost while the outbox has room. When it is full, `overflow` decides: drop the
oldest entries (counted in `dropped`) or block the writer for at most
`block_timeout` seconds, then drop. An entry dropped while the batch holding it
is being written is counted once that write ends: as written if it succeeded,
else as dropped, so `dropped` is exactly what never reached ClickHouse. The
keys (threads, sessions) that lost rows are remembered (`damaged`), so the hot
store's side can archive such a thread whole again on its next write.
`close()` flushes what is left, within `close_timeout`.

Deletes travel through the same outbox as barriers, so a delete never
overtakes the rows it should remove. They are `ALTER TABLE ... DELETE`
mutations sent with `mutations_sync = 2`: the worker waits until every replica
has applied one before sending later rows (mutations only touch rows that exist
when they start, so rows written after a delete are kept). A thread's delete
is also bounded by time (`archived_at <= until`): when another process's outbox
delivers newer rows of the thread first, the late delete leaves them alone.

Reads (restoring a thread the hot store no longer has, a page of the thread
listing from `context_threads`) use a sync client with bound parameters
(`{thread:String}`) and `FINAL`, so a re-delivered batch is never seen twice.
A read that cannot reach ClickHouse, or gets no answer within `read_timeout`
seconds (a frozen or overloaded server), raises `StoreError`; `probe()` tells a
health check whether reads and writes work now.

An archive that is not closed is closed at interpreter exit: what is queued
is flushed within `close_timeout`, and what could not be is logged (WARNING,
with the count) instead of vanishing silently.

Only ClickHouse and network failures (`clickhouse_connect`'s `ClickHouseError`,
`OSError`, timeouts) count as an unavailable archive; anything else is a bug,
logged with its traceback, never disguised as `StoreError`.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import importlib.util
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

from aiecs_checkpoint.errors import InvalidConfigError, StoreError
from aiecs_checkpoint.stores import thread_model as model
from aiecs_checkpoint.stores.clickhouse import layout as C

logger = logging.getLogger("aiecs_checkpoint.archive")

Overflow = Literal["drop_oldest", "block"]

T = TypeVar("T")

MAX_DAMAGED = 100_000
"""Most keys remembered as having lost rows to an overflow (then no more)."""

READ_BACKOFF_S = 5.0
"""After a failed archive read, reads fail fast for this long."""

INSTALLED = all(
    importlib.util.find_spec(name) is not None
    for name in ("clickhouse_connect", "aiohttp")  # the async client needs both
)
"""False without the `clickhouse` extra (the engine then refuses `archive=`)."""


def failures() -> tuple[type[BaseException], ...]:
    """What an unavailable or failing ClickHouse raises (imported late: the
    driver takes a quarter of a second to import)."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    return (ClickHouseError, OSError, asyncio.TimeoutError)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    """Where the archive lives and how its outbox behaves."""

    host: str = "localhost"
    port: int = 8123
    user: str = "default"
    password: str = field(default="", repr=False)
    database: str = "default"
    secure: bool = False
    cluster: str | None = None
    batch_size: int = 1000
    flush_interval: float = 0.5
    max_queue: int = 100_000
    overflow: Overflow = "drop_oldest"
    block_timeout: float = 5.0
    close_timeout: float = 10.0
    connect_timeout: float = 5.0
    read_timeout: float = 5.0
    """Longest wait, in seconds (whole, rounded up), for each read request's
    answer (restores, thread listing, health probes), then `StoreError`; the
    background writer is not bound by it."""

    def __post_init__(self) -> None:
        _check(isinstance(self.host, str) and bool(self.host), "host", self.host)
        _check(isinstance(self.port, int) and 0 < self.port < 65536, "port", self.port)
        ident = self.database.replace("_", "").isalnum() if self.database else False
        _check(ident, "database", self.database)
        if self.cluster is not None:
            ok = bool(self.cluster) and self.cluster.replace("_", "").isalnum()
            _check(ok, "cluster", self.cluster)
        for name in ("batch_size", "max_queue"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, name, value)
        for name in ("flush_interval", "block_timeout", "close_timeout"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and value >= 0, name, value)
        for name in ("connect_timeout", "read_timeout"):
            timeout = getattr(self, name)
            _check(
                isinstance(timeout, (int, float))
                and not isinstance(timeout, bool)
                and 0 < timeout < float("inf"),
                name,
                timeout,
            )
        _check(self.overflow in ("drop_oldest", "block"), "overflow", self.overflow)

    @property
    def server(self) -> str:
        """The server, without credentials (for messages)."""
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.host}:{self.port}/{self.database}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ArchiveSettings | None:
        """Settings from `CLICKHOUSE_ENABLED` / `CLICKHOUSE_*`; None when disabled."""
        env = os.environ if env is None else env
        enabled = env.get("CLICKHOUSE_ENABLED", "false").strip().lower()
        if enabled not in _TRUE | _FALSE:
            raise InvalidConfigError(
                f"CLICKHOUSE_ENABLED must be true or false, got {enabled!r}"
            )
        if enabled in _FALSE:
            return None
        port = env.get("CLICKHOUSE_PORT", "8123")
        if not port.isdigit():
            raise InvalidConfigError(f"CLICKHOUSE_PORT must be a port, got {port!r}")
        return cls(
            host=env.get("CLICKHOUSE_HOST", "localhost"),
            port=int(port),
            user=env.get("CLICKHOUSE_USER", "default"),
            password=env.get("CLICKHOUSE_PASSWORD", ""),
            database=env.get("CLICKHOUSE_DATABASE", "default"),
        )

    def client_options(self, asynchronous: bool = False) -> dict[str, Any]:
        """clickhouse-connect's client arguments (the sync client takes whole
        seconds of connect and read timeout: rounded up, never down to 0); the
        sync client (the reader) waits `read_timeout` for an answer."""
        timeout = self.connect_timeout
        read = max(1, math.ceil(self.read_timeout))
        reads = {} if asynchronous else {"send_receive_timeout": read}
        return reads | {
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "password": self.password,
            "secure": self.secure,
            "connect_timeout": timeout if asynchronous else max(1, math.ceil(timeout)),
            "autogenerate_session_id": False,
            # clickhouse-connect would draw a uuid.uuid4() per request: test
            # suites patch uuid4 for deterministic ids, which must not shift
            "autogenerate_query_id": False,
        }


def _check(ok: bool, name: str, value: object) -> None:
    if not ok:
        raise InvalidConfigError(f"archive option {name} is invalid: {value!r}")


@dataclass(slots=True)
class _Insert:
    table: str
    row: tuple[Any, ...]
    key: str


@dataclass(slots=True)
class _Delete:
    """Remove every row whose `column` is `value` from `tables` (a barrier);
    with `until`, only rows archived at or before it."""

    tables: tuple[str, ...]
    column: str
    value: str
    until: datetime | None = None

    @property
    def key(self) -> str:
        return self.value


_Entry = _Insert | _Delete


@dataclass
class ArchiveCounters:
    enqueued: int = 0
    written: int = 0
    retried: int = 0
    dropped: int = 0
    failed_reads: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_read_error: str | None = None


class Archive:
    """Dual-write target and restore source; safe to share between threads."""

    def __init__(self, settings: ArchiveSettings) -> None:
        if not INSTALLED:
            raise InvalidConfigError(
                "the ClickHouse archive needs the clickhouse extra: "
                "pip install 'aiecs-checkpoint[clickhouse]'"
            )
        self.settings = settings
        self.counters = ArchiveCounters()
        self._queue: deque[tuple[int, _Entry]] = deque()
        self._cond = threading.Condition()
        self._seq = 0
        self._done = 0
        self._pending: dict[str, int] = {}
        self._first_at = 0.0
        self._flush_to = 0
        self._stopping = False
        self._ready = False
        self._thread: threading.Thread | None = None
        self._reader: Any = None
        self._reader_lock = threading.Lock()
        self._reported: str | None = None
        self._reader_down_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch_last = 0
        self._in_flight = False
        self._dropped_in_flight: list[_Entry] = []
        self._damaged: set[str] = set()
        self._wake: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the background writer (idempotent; restarts after `close`)."""
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(
                target=self._main, name="aiecs-archive", daemon=True
            )
            self._thread.start()
            _LIVE.add(self)

    def close(self, timeout: float | None = None) -> bool:
        """Flush what is queued (within the timeout), stop the writer; True when
        nothing was left behind."""
        timeout = self.settings.close_timeout if timeout is None else timeout
        _LIVE.discard(self)
        flushed = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._wake_worker()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, timeout))
            self._thread = None
        with self._cond:
            rows, deletes = self._left()
        if rows or deletes:
            logger.error(
                "ClickHouse archive at %s closed with %d rows and %d deletes not "
                "archived (%s)",
                self.settings.server,
                rows,
                deletes,
                self.counters.last_error,
            )
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        return flushed and not (rows or deletes)

    def _left(self) -> tuple[int, int]:
        """(rows, deletes) still queued (call with `_cond` held)."""
        rows = sum(isinstance(entry, _Insert) for _, entry in self._queue)
        return rows, len(self._queue) - rows

    def _at_exit(self) -> None:
        """Flush at interpreter exit (never closed): within `close_timeout`,
        then log a WARNING with what was dropped."""
        timeout = self.settings.close_timeout
        if self.flush(timeout):
            return
        with self._cond:
            rows, deletes = self._left()
        if rows or deletes:
            logger.warning(
                "ClickHouse archive at %s: %d rows and %d deletes dropped at exit, "
                "not archived within close_timeout=%ss (call close() or "
                "ContextEngine.close() before exiting): %s",
                self.settings.server,
                rows,
                deletes,
                timeout,
                self.counters.last_error or "timed out",
            )

    # -- the hot path's side: enqueue -------------------------------------------------

    def enqueue(self, rows: C.Rows, key: str) -> None:
        """Queue rows (of thread / session `key`); never raises, never waits
        except under `overflow="block"` with a full queue."""
        entries = [
            _Insert(table, row, key) for table, rs in rows.tables.items() for row in rs
        ]
        self._put(entries)

    def enqueue_delete(
        self,
        tables: Iterable[str],
        column: str,
        value: str,
        until: datetime | None = None,
    ) -> None:
        """Queue removal of the rows of `value` (behind everything queued); with
        `until`, only those archived at or before it (see the module docstring)."""
        self._put([_Delete(tuple(tables), column, value, until)])

    def _put(self, entries: Sequence[_Entry]) -> None:
        if not entries:
            return
        if self._thread is None:
            self.start()
        s = self.settings
        with self._cond:
            if len(self._queue) + len(entries) > s.max_queue and s.overflow == "block":
                deadline = time.monotonic() + s.block_timeout
                while len(self._queue) + len(entries) > s.max_queue:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._cond.wait(left):
                        break
            while self._queue and len(self._queue) + len(entries) > s.max_queue:
                seq, entry = self._queue.popleft()
                self._forget(entry)
                self._done += 1
                if self._in_flight and seq <= self._batch_last:
                    # part of the batch being written: counted when it ends
                    self._dropped_in_flight.append(entry)
                else:
                    self.counters.dropped += 1
                    self._lost(entry)
            if not self._queue:
                self._first_at = time.monotonic()
            for entry in entries:
                self._seq += 1
                self._queue.append((self._seq, entry))
                self._pending[entry.key] = self._pending.get(entry.key, 0) + 1
            self.counters.enqueued += len(entries)
            if len(self._queue) - len(entries) < s.batch_size <= len(self._queue):
                # Wake once, when a batch fills up: a wake per put would keep
                # the worker's loop reading its self-pipe instead of writing.
                self._wake_worker()

    def _lost(self, entry: _Entry) -> None:
        """Remember that `entry`'s key lost a row (call with `_cond` held)."""
        if isinstance(entry, _Insert) and len(self._damaged) < MAX_DAMAGED:
            self._damaged.add(entry.key)

    def damaged(self, key: str) -> bool:
        """True, once, when rows of `key` were dropped and the outbox is at most
        half full again: the caller should then queue it whole (its archived
        copy lacks rows). While the outbox is fuller, False (it is kept)."""
        if key not in self._damaged:  # the hot path's usual answer, lock-free
            return False
        with self._cond:
            if key not in self._damaged:
                return False
            if len(self._queue) > self.settings.max_queue // 2:
                return False
            self._damaged.discard(key)
            return True

    def _forget(self, entry: _Entry) -> None:
        n = self._pending.get(entry.key, 0) - 1
        if n > 0:
            self._pending[entry.key] = n
        else:
            self._pending.pop(entry.key, None)

    def pending(self, key: str) -> bool:
        """True while rows or deletes of `key` wait in the outbox."""
        with self._cond:
            return key in self._pending

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is archived."""
        with self._cond:
            target = self._seq
            self._flush_to = max(self._flush_to, target)
            self._wake_worker()
            deadline = time.monotonic() + (
                self.settings.close_timeout if timeout is None else timeout
            )
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    # -- the worker  ------------------------------------------------------------------

    def _main(self) -> None:
        asyncio.run(self._run())

    def _wake_worker(self) -> None:
        """Wake the worker's loop (from any thread); call with `_cond` held."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop has just closed
                pass

    async def _run(self) -> None:
        import clickhouse_connect

        with self._cond:
            self._loop = asyncio.get_running_loop()
            self._loop.set_default_executor(_ThreadPerCall())
            self._wake = asyncio.Event()
        client: Any = None
        delay = 0.1
        try:
            while True:
                batch, wait = self._next_batch()
                if batch is None:
                    if wait is None:
                        break
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), wait)
                    except asyncio.TimeoutError:
                        pass
                    continue
                try:
                    if client is None:
                        client = await clickhouse_connect.get_async_client(
                            **self.settings.client_options(asynchronous=True),
                            compress=False,
                        )
                    if not self._ready:
                        await self._create_tables(client)
                        self._ready = True
                    await self._write(client, batch)
                except Exception as exc:
                    self._landed(False)
                    if not isinstance(exc, failures()):
                        logger.exception(
                            "ClickHouse archive writer failed unexpectedly; the "
                            "batch stays queued and is retried"
                        )
                    self._failed(exc)
                    if client is not None:
                        await _close_quietly(client)
                        client = None
                    with self._cond:
                        if self._stopping:
                            break
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.1
                self._succeeded()
        finally:
            with self._cond:
                self._loop = self._wake = None
            if client is not None:
                await _close_quietly(client)

    def _next_batch(self) -> tuple[list[_Entry] | None, float | None]:
        """(the batch due now, None) or (None, seconds to wait); (None, None)
        when stopping with nothing left."""
        s = self.settings
        with self._cond:
            if not self._queue:
                return None, (None if self._stopping else 1.0)
            age = time.monotonic() - self._first_at
            due = (
                len(self._queue) >= s.batch_size
                or self._flush_to > self._done
                or self._stopping
                or age >= s.flush_interval
            )
            if due:
                self._in_flight = True
                return self._peek(), None
            return None, max(s.flush_interval - age, 0.001)

    def _peek(self) -> list[_Entry]:
        """The head batch: one delete, or up to `batch_size` inserts (call with
        `_cond` held; remembers the batch's last sequence number)."""
        seq, head = self._queue[0]
        self._batch_last = seq
        if isinstance(head, _Delete):
            return [head]
        batch: list[_Entry] = []
        for seq, entry in self._queue:
            if isinstance(entry, _Delete) or len(batch) >= self.settings.batch_size:
                break
            batch.append(entry)
            self._batch_last = seq
        return batch

    async def _create_tables(self, client: Any) -> None:
        for statement in self._ddl():
            await client.command(statement)

    async def _write(self, client: Any, batch: list[_Entry]) -> None:
        head = batch[0]
        if isinstance(head, _Delete):
            where = f"`{head.column}` = {{value:String}}"
            parameters: dict[str, Any] = {"value": head.value}
            if head.until is not None:
                where += " AND archived_at <= {until:DateTime64(6)}"
                parameters["until"] = head.until
            for table in head.tables:
                await client.command(
                    f"ALTER TABLE `{self.settings.database}`.`{table}` "
                    f"DELETE WHERE {where}",
                    parameters=parameters,
                    settings={"mutations_sync": 2},
                )
            return
        by_table: dict[str, list[tuple[Any, ...]]] = {}
        for entry in batch:
            assert isinstance(entry, _Insert)
            by_table.setdefault(entry.table, []).append(entry.row)
        for table, rows in by_table.items():
            await client.insert(
                table,
                rows,
                column_names=C.column_names(table),
                database=self.settings.database,
            )

    def _landed(self, written: bool) -> None:
        """The batch's write ended: count the entries a drop took out of it
        meanwhile as `written` or, when it failed, as `dropped`."""
        with self._cond:
            taken = self._dropped_in_flight
            if written:
                self.counters.written += sum(isinstance(e, _Insert) for e in taken)
            else:
                self.counters.dropped += len(taken)
                for entry in taken:
                    self._lost(entry)
            self._dropped_in_flight = []
            self._in_flight = False

    def _failed(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        with self._cond:
            self.counters.retried += 1
            self.counters.last_error = message
            self.counters.last_error_at = time.time()
        if message != self._reported:
            self._reported = message
            logger.warning(
                "ClickHouse archive at %s unavailable, retrying in the background "
                "(graph runs are not affected): %s",
                self.settings.server,
                message,
            )

    def _succeeded(self) -> None:
        """Remove the delivered batch (by sequence number: `drop_oldest` may have
        removed some of its entries from the head meanwhile)."""
        self._landed(True)
        with self._cond:
            while self._queue and self._queue[0][0] <= self._batch_last:
                _, entry = self._queue.popleft()
                self._forget(entry)
                self._done += 1
                if isinstance(entry, _Insert):
                    self.counters.written += 1
            self._reader_down_until = 0.0
            if self._queue:
                self._first_at = time.monotonic()
            self.counters.last_error = None
            self._cond.notify_all()
        if self._reported is not None:
            logger.warning(
                "ClickHouse archive at %s reachable again", self.settings.server
            )
            self._reported = None

    # -- observability  ---------------------------------------------------------------

    @property
    def status(self) -> str:
        if self._thread is None:
            return "stopped"
        if self.counters.last_error is not None:
            return "retrying"
        return "ok" if self._ready else "starting"

    def metrics(self) -> dict[str, Any]:
        with self._cond:
            c = self.counters
            return {
                "status": self.status,
                "server": self.settings.server,
                "queued": len(self._queue),
                "enqueued": c.enqueued,
                "written": c.written,
                "retried": c.retried,
                "dropped": c.dropped,
                "failed_reads": c.failed_reads,
                "last_error": c.last_error,
                "overflow": self.settings.overflow,
            }

    # -- reads  -----------------------------------------------------------------------

    def _client(self) -> Any:
        """The sync reader; creates the tables if the writer has not yet."""
        with self._reader_lock:
            if self._reader is None:
                import clickhouse_connect

                reader = clickhouse_connect.get_client(
                    **self.settings.client_options(), compress=False
                )
                if not self._ready:
                    for statement in self._ddl():
                        reader.command(statement)
                self._reader = reader
            return self._reader

    def _ddl(self) -> list[str]:
        s = self.settings
        on_cluster = f" ON CLUSTER `{s.cluster}`" if s.cluster else ""
        return [f"CREATE DATABASE IF NOT EXISTS `{s.database}`{on_cluster}"] + [
            C.create_table(s.database, table, s.cluster) for table in C.COLUMNS
        ]

    def _query(self, sql: str, parameters: dict[str, Any], table: str) -> list[Any]:
        """Run a read; while the archive is known to be failing, fail fast (a
        graph's first read of a new thread must not wait on a dead server).
        `StoreError` when ClickHouse cannot answer."""
        failing = self.counters.last_error
        if failing is not None or time.monotonic() < self._reader_down_until:
            raise StoreError(
                f"ClickHouse archive at {self.settings.server} unavailable: "
                f"{failing or self.counters.last_read_error or 'recent read failed'}"
            )
        try:
            result = self._client().query(
                sql, parameters=parameters, column_formats=C.BINARY[table]
            )
        except failures() as exc:
            raise self._read_failed(exc) from exc
        self.counters.last_read_error = None
        return list(result.result_rows)

    def _read_failed(self, exc: BaseException) -> StoreError:
        """Note a failed read (reads fail fast for `READ_BACKOFF_S`)."""
        message = f"{type(exc).__name__}: {exc}"
        with self._reader_lock:
            self._reader = None
            self._reader_down_until = time.monotonic() + READ_BACKOFF_S
            self.counters.last_read_error = message
        server = self.settings.server
        return StoreError(f"ClickHouse archive at {server} failed: {message}")

    def probe(self) -> str | None:
        """What fails now (for health checks), None when ClickHouse answers:
        failing writes, a read failure in the last `READ_BACKOFF_S` seconds, or
        else a ping (so an archive is reported unreachable from start-up, before
        any write or read failed). Blocking: run it off the event loop."""
        server = self.settings.server
        if self.counters.last_error is not None:
            return (
                f"ClickHouse archive at {server} failing (writes queued, "
                f"retrying): {self.counters.last_error}"
            )
        if time.monotonic() < self._reader_down_until:
            return (
                f"ClickHouse archive at {server} failing (reads of threads the "
                f"hot store lost raise StoreError): {self.counters.last_read_error}"
            )
        try:
            answered = self._client().ping()
        except failures() as exc:
            error = self._read_failed(exc)
            return f"{error} (reads of threads the hot store lost raise StoreError)"
        if not answered:
            self._read_failed(ConnectionError("ping failed"))
            return f"ClickHouse archive at {server} does not answer ping"
        return None

    def read_thread(
        self, thread_id: str, after: datetime | None = None
    ) -> model.Thread:
        """Every archived row of a thread archived after its last delete (the
        later of `after` and `context_thread_deletes`), as `model` holds it ({}
        when none)."""
        db = self.settings.database
        where = (
            "thread_id = {thread:String} AND archived_at > greatest("
            "{after:DateTime64(6)}, (SELECT max(deleted_at) "
            f"FROM `{db}`.`{C.DELETES}` WHERE thread_id = {{thread:String}}))"
        )
        parameters: dict[str, Any] = {
            "thread": thread_id,
            "after": after or datetime(1970, 1, 1, tzinfo=timezone.utc),
        }
        parts = {
            table: self._query(
                f"{select} FROM `{db}`.`{table}` FINAL WHERE {where}",
                parameters,
                table,
            )
            for table, select in C.THREAD_QUERIES.items()
        }
        return C.thread_from_rows(
            thread_id,
            parts[C.CHECKPOINTS],
            parts[C.VALUES],
            parts[C.ITEMS],
            parts[C.WRITES],
        )

    def thread_heads(
        self, before: tuple[int, str] | None, limit: int
    ) -> list[C.ArchivedThread]:
        """Up to `limit` archived threads after `before`, newest activity first
        (the newest `archived_at` of the thread's rows, then the thread id)."""
        parameters: dict[str, Any] = {"limit": limit}
        if before is not None:
            parameters.update(ms=before[0], thread=before[1])
        sql = C.thread_heads_query(self.settings.database, before is not None)
        rows = self._query(sql, parameters, C.THREADS)
        return [C.archived_thread(r) for r in rows]

    def queued_threads_for_runs(self, run_keys: Iterable[str]) -> list[str]:
        """Threads whose outbox holds checkpoint rows of those run digests."""
        keys = set(run_keys)
        if not keys:
            return []
        with self._cond:
            found = {
                entry.key
                for _, entry in self._queue
                if isinstance(entry, _Insert)
                and entry.table == C.CHECKPOINTS
                and entry.row[C.RUN_KEY_COLUMN] in keys
            }
        return sorted(found)

    def threads_for_runs(self, run_keys: Iterable[str]) -> list[str]:
        """Archived threads holding checkpoints of those run digests."""
        keys = list(run_keys)
        if not keys:
            return []
        db = self.settings.database
        rows = self._query(
            f"SELECT DISTINCT thread_id FROM `{db}`.`{C.CHECKPOINTS}` FINAL "
            "WHERE has({runs:Array(String)}, run_key)",
            {"runs": keys},
            C.CHECKPOINTS,
        )
        return [r[0] for r in rows]


class _ThreadPerCall(concurrent.futures.ThreadPoolExecutor):
    """The worker loop's default executor: each blocking helper of the client
    (DNS lookups, response parsing) runs in a thread of its own. Unlike a
    thread pool, it keeps working at interpreter exit, when pools refuse new
    work: the exit flush needs it. (A `ThreadPoolExecutor` subclass because
    asyncio accepts no other; its pool is never used.)"""

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name="aiecs-archive-io", daemon=True).start()
        return future


_LIVE: weakref.WeakSet[Archive] = weakref.WeakSet()
"""Started archives not closed yet (closed at interpreter exit)."""


@atexit.register
def _close_at_exit() -> None:
    for archive in list(_LIVE):
        archive._at_exit()


async def _close_quietly(client: Any) -> None:
    try:
        await client.close()
    except Exception:  # pragma: no cover - closing a broken client
        logger.debug("closing the archive client failed", exc_info=True)
