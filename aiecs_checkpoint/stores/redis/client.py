"""Redis connections: URLs, settings, and the executors of the store's `Call`s.

The store's operations (`stores.redis.checkpoints`, `stores.redis.domain`)
yield `Call`s; `RedisClient` performs them with redis-py's sync client and
`AsyncRedisClient` with its asyncio client, for the engine's `Runner` and
`AsyncRunner`. Both send identical commands: scripts are loaded once per
client (`EVALSHA`, falling back to `EVAL`), and a call failing with a
connection error or timeout is retried briefly with backoff, then raised as
`StoreError` naming the server (never the password). The next call
reconnects. Nothing is ever written somewhere else instead. A call with
`acks` (the engine's `replica_acks`) is sent with `WAIT` on one connection,
to the node holding its keys, and raises `StoreError` unless that many
replicas acknowledged it within `replica_acks_timeout_ms`. Rejected
credentials raise `StoreError` at once (never retried); a db index the server
does not have raises `InvalidConfigError`. `unreachable` tells the two apart
from a server that cannot be reached, the only case the engine's `fallback`
covers.

How long a call can take (the engine's `socket_timeout` T and
`socket_connect_timeout` C, `RedisSettings.retries` R, backoff delays b_i):

    bound = (R + 1) * (C + T) + sum(b_i)        # defaults: 4 * 2.0 + 1.05 = 9.05 s

An attempt is at most one connect (C) and one reply awaited (T); the client
redis-py builds here from a URL retries nothing itself (this executor does),
and a retry is skipped when it could not end before the bound. So a call to
a server that is down, unreachable or frozen (SIGSTOP, a network black hole)
raises `StoreError` within `bound`, sync or async. On a Redis Cluster the
clients built here get the same socket timeouts, but keep redis-py's cluster
retry policy (it follows a failover's slot moves), so a frozen node can hold
a call longer. A client the user passes (`redis_client=`) keeps its own
timeouts and retry policy; `call_bound` then does not apply.

`parse_url` validates a Redis URL completely before anything connects.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import re
import socket
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from aiecs_checkpoint.errors import (
    AiecsCheckpointError,
    InvalidConfigError,
    StoreError,
)
from aiecs_checkpoint.stores.ops import Op, Request
from aiecs_checkpoint.stores.redis import domain_scripts, scripts
from aiecs_checkpoint.stores.settings import parse_ttl

try:
    import redis
    import redis.asyncio as aredis
    from redis.asyncio.cluster import PipelineCommand
    from redis.exceptions import (
        AskError,
        ClusterDownError,
        NoScriptError,
        RedisClusterException,
        TryAgainError,
    )
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

INSTALLED = redis is not None
"""False without the `redis` extra (the engine then refuses Redis options)."""

SCRIPTS = {**scripts.SCRIPTS, **domain_scripts.SCRIPTS}
"""Every server-side script by name: checkpoints and domain data."""


@dataclass(frozen=True, slots=True)
class Call(Request):
    """One round trip: a script by name, or a raw command when `script` is None."""

    script: str | None
    keys: Sequence[str]
    args: Sequence[Any]
    command: str = ""
    acks: int = 0
    """Replicas that must acknowledge the call's writes before it returns."""


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """How the Redis store behaves; see `ContextEngine` for the user-facing options."""

    prefix: str = "aiecs"
    ttl_ms: int = 0
    refresh_on_read: bool = False
    cluster: bool = False
    retries: int = 3
    backoff_s: float = 0.05
    replica_acks: int = 0
    replica_acks_timeout_ms: int = 1000
    socket_timeout_s: float = 1.5
    socket_connect_timeout_s: float = 0.5
    bounded: bool = True
    """False for a client the user passed: its own timeouts apply."""


def call_bound(settings: RedisSettings) -> float:
    """Seconds a call can take at most on clients built here (see the module
    docstring): every attempt (connect and reply) plus the backoff delays."""
    attempt = settings.socket_connect_timeout_s + settings.socket_timeout_s
    return (settings.retries + 1) * attempt + sum(_backoff(settings))


# -- URLs ------------------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]+")
_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A validated Redis URL; `server` names it without credentials."""

    url: str
    scheme: str
    host: str | None
    port: int | None
    path: str | None
    db: int

    @property
    def server(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}?db={self.db}"
        return f"{self.scheme}://{self.host}:{self.port}/{self.db}"


def redact(url: str) -> str:
    """A URL with the password of its user info replaced by `***`."""
    return re.sub(r"^([a-z]+://[^/@?#]*?:)[^/?#]*@", r"\1***@", url, flags=re.I)


def parse_url(url: object, what: str = "redis_url") -> RedisURL:
    """Validate a `redis://`, `rediss://` or `unix://` URL completely (scheme,
    host, port, db, socket path, query options), without connecting.

    Raises `InvalidConfigError` naming the problem (never the password).
    """
    if not isinstance(url, str):
        raise InvalidConfigError(f"{what} must be a str, got {type(url).__name__}")
    shown = redact(url)

    def bad(problem: str) -> InvalidConfigError:
        return InvalidConfigError(f"{what} {shown!r}: {problem}")

    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise bad(f"not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES or not url.lower().startswith(f"{scheme}://"):
        raise bad("must start with redis://, rediss:// or unix://")
    if parts.fragment:
        raise bad("a Redis URL has no #fragment")
    query = _query(parts.query, bad)
    db_option = query.get("db")
    if db_option is not None and not _DIGITS.fullmatch(db_option):
        raise bad(f"db must be a non-negative integer, got {db_option!r}")
    if scheme == "unix":
        host_part = parts.netloc.rpartition("@")[2]
        if host_part:
            raise bad(
                "a unix socket URL takes an absolute path after unix:// "
                f"(unix:///path/to/redis.sock), not a host ({host_part!r})"
            )
        path = unquote(parts.path)
        if not path or path == "/":
            raise bad("the unix socket path is missing (unix:///path/to/redis.sock)")
        db = int(db_option or "0")
        host, port = None, None
    else:
        path = None
        host = parts.hostname
        if not host:
            raise bad("the host is missing (redis://host:6379/0)")
        try:
            port = parts.port
        except ValueError:
            raw = parts.netloc.rpartition("@")[2].rpartition(":")[2]
            raise bad(f"port must be an integer from 1 to 65535, got {raw!r}") from None
        if port is None:
            port = 6379
        elif port == 0:
            raise bad("port must be an integer from 1 to 65535, got 0")
        db_path = unquote(parts.path).strip("/")
        if db_path and not _DIGITS.fullmatch(db_path):
            raise bad(
                f"the path must be a db index (redis://host:6379/0), got {db_path!r}"
            )
        if db_path and db_option is not None and int(db_path) != int(db_option):
            raise bad(f"db {db_path} in the path and db={db_option} disagree")
        db = int(db_option if db_option is not None else db_path or "0")
    _check_redis_py_accepts(url, bad)
    return RedisURL(url, scheme, host, port, path, db)


def _query(raw: str, bad: Callable[[str], InvalidConfigError]) -> dict[str, str]:
    """Query options, each given once."""
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw))
    except ValueError as exc:
        raise bad(f"malformed query string ({exc})") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise bad(f"query option {name!r} is given twice")
        out[name] = value
    return out


def _check_redis_py_accepts(url: str, bad: Callable[[str], InvalidConfigError]) -> None:
    """Build (without connecting) the pools and a connection redis-py would
    build from `url`, sync and asyncio, so an unknown or malformed query option
    fails here rather than at the first command."""
    if redis is None:
        return
    for pool_class in (redis.ConnectionPool, aredis.ConnectionPool):
        try:
            pool_class.from_url(url).make_connection()
        except (TypeError, ValueError, redis.RedisError) as exc:
            text = str(exc).replace(url, redact(url))
            name = re.search(r"unexpected keyword argument '(\w+)'", text)
            if name:
                raise bad(f"redis-py has no option {name.group(1)!r}") from None
            raise bad(f"redis-py rejects it: {text}") from None


# -- errors ------------------------------------------------------------------------

_AUTH_REPLIES = ("NOAUTH", "WRONGPASS", "NOPERM", "invalid username-password")
_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ENOENT,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
    errno.ENETDOWN,
    errno.ECONNRESET,
}


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, AttributeError):
        return True  # only `_connection_reset` ones get here
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) and not (
        isinstance(exc, redis.AuthenticationError)
    )


_FAILURES: tuple[type[BaseException], ...] = (
    () if redis is None else (redis.RedisError, RedisClusterException)
)
"""What redis-py raises for a failed call (the executors make them typed)."""

_CAUGHT: tuple[type[BaseException], ...] = (*_FAILURES, AttributeError)
"""`_FAILURES`, and AttributeError for `_connection_reset` (others re-raised)."""

_CONNECTION_MODULES = ("redis/asyncio/connection.py", "redis/connection.py")


def _connection_reset(exc: AttributeError) -> bool:
    """True for redis-py's asyncio race where another task resets a connection
    while this one sends on it: the connection's writer is already None, so
    redis-py raises `AttributeError: 'NoneType' object has no attribute
    'writelines'` (or `write`) from its own connection code. It is a lost
    connection, not a bug of ours or the caller's: retried, then `StoreError`.
    Any other AttributeError (a programming error) propagates unchanged."""
    if exc.obj is not None or exc.name not in ("writelines", "write", "drain"):
        return False
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and last.replace("\\", "/").endswith(_CONNECTION_MODULES)


def _give_up(
    settings: RedisSettings,
    call: Call,
    exc: BaseException,
    started: float,
    delay: float | None,
) -> bool:
    """Whether a failed attempt of `call` ends the call (as `StoreError`) or is
    retried after `delay`; shared by the sync and async executors. Re-raises
    an `AttributeError` that is not redis-py's reset-connection error."""
    if isinstance(exc, AttributeError) and not _connection_reset(exc):
        raise exc
    acked_on_cluster = bool(call.acks) and settings.cluster
    again = _retryable(exc) or (acked_on_cluster and _redirected(exc))
    return delay is None or not _may_retry(settings, started, delay, again)


def _may_retry(
    settings: RedisSettings, started: float, delay: float, again: bool
) -> bool:
    """Whether a failed attempt is retried (there is a retry left): it may be,
    and (on clients built here) another attempt can end within `call_bound`."""
    if not again:
        return False
    if not settings.bounded:
        return True
    attempt = settings.socket_connect_timeout_s + settings.socket_timeout_s
    elapsed = time.monotonic() - started
    return elapsed + delay + attempt <= call_bound(settings)


def _is_auth(exc: BaseException) -> bool:
    if isinstance(exc, redis.AuthenticationError):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(_AUTH_REPLIES)


def _error(server: str, exc: BaseException) -> AiecsCheckpointError:
    """The typed error a failed redis-py call becomes."""
    kind = type(exc).__name__
    text = str(exc)
    if isinstance(exc, redis.ResponseError) and "DB index is out of range" in text:
        return InvalidConfigError(
            f"Redis at {server} has no such database ({text}): use a db index "
            "the server has (redis-server's `databases` setting, 16 by default)"
        )
    if _is_auth(exc):
        return StoreError(
            f"Redis at {server} rejected the credentials ({kind}: {text}): check "
            "the username and password (in the URL, or the client's settings)"
        )
    return StoreError(f"Redis at {server} failed: {kind}: {text}")


def unreachable(exc: BaseException) -> bool:
    """True when `exc` (a `StoreError` from a call) means the server could not
    be reached at all: connection refused, timeout, unknown host, no socket.
    Rejected credentials, TLS failures and server replies are not."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLError) or (redis and _is_auth(cause)):
            return False
        if isinstance(cause, (socket.gaierror, TimeoutError)):
            return True
        if redis and isinstance(cause, redis.TimeoutError):
            return True
        if isinstance(cause, OSError) and cause.errno in _UNREACHABLE_ERRNOS:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _backoff(settings: RedisSettings) -> list[float]:
    """Delays before each retry of a failed call."""
    return [settings.backoff_s * 4**i for i in range(settings.retries)]


# -- calls acknowledged by replicas (WAIT) -----------------------------------------


@functools.cache
def _sha(name: str) -> str:
    """The SHA1 digest `EVALSHA` knows the script `name` by."""
    return hashlib.sha1(SCRIPTS[name].encode()).hexdigest()


class _Reload(Exception):
    """The node does not have the call's script yet: send it again with it."""


def _acked_commands(call: Call, timeout_ms: int, load: bool) -> list[tuple[Any, ...]]:
    """The commands of an acknowledged call, sent together on one connection:
    `WAIT` counts the replicas that have the writes of *its own connection*,
    so it must follow the call on the connection that made it."""
    keys = list(call.keys)
    if call.script is None:
        sent: list[tuple[Any, ...]] = [(call.command, *keys, *call.args)]
    else:
        sent = [("EVALSHA", _sha(call.script), len(keys), *keys, *call.args)]
        if load:
            sent.insert(0, ("SCRIPT", "LOAD", SCRIPTS[call.script]))
    return [*sent, ("WAIT", call.acks, timeout_ms)]


def _acked_reply(
    call: Call, replies: Sequence[Any], server: str, timeout_ms: int
) -> Any:
    """The call's reply once `call.acks` replicas acknowledged it; else the
    command's error, or `StoreError` when too few replicas answered in time."""
    reply, acks = replies[-2], replies[-1]
    if isinstance(reply, NoScriptError):
        raise _Reload
    for failed in replies:
        if isinstance(failed, BaseException):
            raise failed
    if int(acks) < call.acks:
        raise StoreError(
            f"Redis at {server}: {acks} of the {call.acks} replicas required "
            f"(replica_acks) acknowledged the write within {timeout_ms} ms; it is "
            "on the master but a failover may lose it"
        )
    return reply


def _redirected(exc: BaseException) -> bool:
    """A cluster node answered that the slot is elsewhere, or not served yet."""
    return isinstance(
        exc, (AskError, TryAgainError, ClusterDownError, RedisClusterException)
    )


# -- executors ------------------------------------------------------------------------


class _Executor:
    """What both executors hold: the server's name for errors, the settings,
    and either a factory for clients built here or the user's `given` client."""

    def __init__(
        self,
        server: str,
        settings: RedisSettings,
        make: Callable[[], Any] | None = None,
        given: Any = None,
    ) -> None:
        self.server = server
        self.settings = settings
        self._make = make
        self._given = given
        self._start()

    def _start(self) -> None:
        """Set up the executor's own state (its clients and script caches)."""
        raise NotImplementedError


class RedisClient(_Executor):
    """Performs `Call`s with redis-py's pooled sync client.

    `make` builds the client on first use (it is then closed by `close`);
    a `given` client (the user's) is used as is and never closed here.
    """

    def _start(self) -> None:
        self._client: Any = None
        self._scripts: dict[str, Any] = {}

    @property
    def client(self) -> Any:
        """The redis-py client."""
        if self._given is not None:
            return self._given
        if self._client is None:
            assert self._make is not None
            self._client = self._make()
        return self._client

    def _send(self, call: Call) -> Any:
        if call.acks:
            return self._send_acked(call)
        if call.script is None:
            return self.client.execute_command(call.command, *call.keys, *call.args)
        script = self._scripts.get(call.script)
        if script is None:
            script = self.client.register_script(SCRIPTS[call.script])
            self._scripts[call.script] = script
        return script(keys=list(call.keys), args=list(call.args))

    def _send_acked(self, call: Call) -> Any:
        """The call then `WAIT`, pipelined on one connection to the node that
        holds the call's keys (they share one slot)."""
        timeout_ms = self.settings.replica_acks_timeout_ms
        client = self.client
        if self.settings.cluster:
            client = client.get_redis_connection(client.get_node_from_key(call.keys[0]))
        for load in (False, True):
            pipe = client.pipeline(transaction=False)
            for command in _acked_commands(call, timeout_ms, load):
                pipe.execute_command(*command)
            try:
                replies = pipe.execute(raise_on_error=False)
                return _acked_reply(call, replies, self.server, timeout_ms)
            except _Reload:
                continue
        raise StoreError(f"Redis at {self.server} lost script {call.script!r} twice")

    def _refresh_slots(self) -> None:
        """Read the cluster's slot table again (after a failover or a move);
        when no node answers, the retried call reports the failure."""
        try:
            self.client.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException):
            pass

    def execute(self, call: Call) -> Any:
        """One call, retried briefly on connection errors, else a typed error."""
        started = time.monotonic()
        for delay in [*_backoff(self.settings), None]:
            try:
                return self._send(call)
            except _CAUGHT as exc:
                if _give_up(self.settings, call, exc, started, delay):
                    raise _error(self.server, exc) from exc
                if call.acks and self.settings.cluster:
                    self._refresh_slots()
                time.sleep(delay)  # type: ignore[arg-type]
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Release the pool of a client built here (the next call reconnects)."""
        if self._client is not None:
            self._client.close()
            self._client = None
            self._scripts.clear()


@dataclass(eq=False)
class _LoopClient:
    """The asyncio client of one event loop and its loaded scripts."""

    loop: asyncio.AbstractEventLoop
    client: Any
    scripts: dict[str, Any] = field(default_factory=dict)
    hook: AsyncGenerator[None, None] | None = None
    closed: bool = False


class AsyncRedisClient(_Executor):
    """Performs `Call`s with redis-py's asyncio client: one client per event loop.

    redis-py's asyncio connections belong to the loop that opened them, so
    `make` builds a client for each loop the engine is used from. Each is
    closed when its loop shuts down (`asyncio.run` and `asyncio.Runner` close
    async generators first: a parked one closes the client), and a client
    whose loop was closed without that is dropped on the next use, so clients
    never pile up with loops. A `given` client (the user's) is used as is.
    """

    def _start(self) -> None:
        self._given_scripts: dict[str, Any] = {}
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClient] = {}

    @property
    def clients(self) -> int:
        """Clients this executor holds (one per live loop that used it)."""
        return len(self._loops)

    async def _entry(self) -> tuple[Any, dict[str, Any]]:
        """The running loop's client and script cache."""
        if self._given is not None:
            return self._given, self._given_scripts
        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop)
        if entry is None:
            self._drop_closed_loops()
            assert self._make is not None
            entry = _LoopClient(loop, self._make())
            self._loops[loop] = entry
            entry.hook = self._close_at_shutdown(entry)
            await entry.hook.__anext__()
        return entry.client, entry.scripts

    async def _close_at_shutdown(
        self, entry: _LoopClient
    ) -> AsyncGenerator[None, None]:
        """Parked at its first `yield`; the loop's `shutdown_asyncgens` closes
        it, and with it the loop's client, while the loop still runs."""
        try:
            yield
        finally:
            await self._close_entry(entry)

    async def _close_entry(self, entry: _LoopClient) -> None:
        if self._loops.get(entry.loop) is entry:
            self._loops.pop(entry.loop, None)
        if not entry.closed:
            entry.closed = True
            await entry.client.aclose()

    def _drop_closed_loops(self) -> None:
        """Forget the clients of loops closed without shutting down their
        async generators; their sockets close when the objects are collected
        (no I/O can run on a closed loop)."""
        for loop in [loop for loop in list(self._loops) if loop.is_closed()]:
            entry = self._loops.pop(loop, None)
            if entry is not None:
                entry.closed = True

    async def _send(self, call: Call) -> Any:
        client, loaded = await self._entry()
        if call.acks:
            return await self._send_acked(client, call)
        if call.script is None:
            return await client.execute_command(call.command, *call.keys, *call.args)
        script = loaded.get(call.script)
        if script is None:
            script = client.register_script(SCRIPTS[call.script])
            loaded[call.script] = script
        return await script(keys=list(call.keys), args=list(call.args))

    async def _send_acked(self, client: Any, call: Call) -> Any:
        """The call then `WAIT`, pipelined on one connection to the node that
        holds the call's keys (they share one slot)."""
        timeout_ms = self.settings.replica_acks_timeout_ms
        for load in (False, True):
            commands = _acked_commands(call, timeout_ms, load)
            if self.settings.cluster:
                await client.initialize()
                node = client.get_node_from_key(call.keys[0])
                queued = [PipelineCommand(i, *c) for i, c in enumerate(commands)]
                await node.execute_pipeline(queued)
                replies = [q.result for q in queued]
            else:
                pipe = client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
            try:
                return _acked_reply(call, replies, self.server, timeout_ms)
            except _Reload:
                continue
        raise StoreError(f"Redis at {self.server} lost script {call.script!r} twice")

    async def _refresh_slots(self) -> None:
        """Read the cluster's slot table again (after a failover or a move);
        when no node answers, the retried call reports the failure."""
        client, _ = await self._entry()
        try:
            await client.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException):
            pass

    async def execute(self, call: Call) -> Any:
        """One call, retried briefly on connection errors, else a typed error."""
        started = time.monotonic()
        for delay in [*_backoff(self.settings), None]:
            try:
                return await self._send(call)
            except _CAUGHT as exc:
                if _give_up(self.settings, call, exc, started, delay):
                    raise _error(self.server, exc) from exc
                if call.acks and self.settings.cluster:
                    await self._refresh_slots()
                await asyncio.sleep(delay)  # type: ignore[arg-type]
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the running loop's client; forget those of closed loops."""
        self._drop_closed_loops()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        entry = self._loops.get(loop)
        if entry is None:
            return
        await self._close_entry(entry)
        if entry.hook is not None:
            await entry.hook.aclose()


def cluster_probe() -> Op[bool]:
    """True when the server is a Redis Cluster node (`StoreError` if down)."""
    info = yield Call(None, [], ["cluster"], command="INFO")
    return bool(info.get("cluster_enabled"))


__all__ = [
    "AsyncRedisClient",
    "Call",
    "RedisClient",
    "RedisSettings",
    "RedisURL",
    "call_bound",
    "cluster_probe",
    "parse_ttl",
    "parse_url",
    "redact",
    "unreachable",
]
