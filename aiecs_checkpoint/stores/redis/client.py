"""Redis connections: the settings, and the executors of the store's `Call`s.

The store's operations (`stores.redis.checkpoints`, `stores.redis.domain`)
yield `Call`s; `RedisClient` performs them with redis-py's sync client and
`AsyncRedisClient` with its asyncio client, for the engine's `Runner` and
`AsyncRunner`. Both send identical commands: scripts are loaded once per
client (`EVALSHA`, falling back to `EVAL`), and a call failing with a
connection error or timeout is retried briefly with backoff, then raised as
`StoreError` naming the server (never the password). The next call
reconnects. Nothing is ever written somewhere else instead.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiecs_checkpoint.errors import InvalidConfigError, StoreError
from aiecs_checkpoint.stores.ops import Op, Request
from aiecs_checkpoint.stores.redis import domain_scripts, scripts
from aiecs_checkpoint.stores.settings import parse_ttl

try:
    import redis
    import redis.asyncio as aredis
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster
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


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """How the Redis store behaves; see `ContextEngine` for the user-facing options."""

    prefix: str = "aiecs"
    ttl_ms: int = 0
    refresh_on_read: bool = False
    cluster: bool = False
    retries: int = 3
    backoff_s: float = 0.05


def describe_server(url: str) -> str:
    """host:port/db of a Redis URL, without credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    db = parts.path.lstrip("/") or "0"
    return f"{parts.scheme}://{host}:{port}/{db}"


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) and not (
        isinstance(exc, redis.AuthenticationError)
    )


def _store_error(server: str, exc: BaseException) -> StoreError:
    kind = type(exc).__name__
    return StoreError(f"Redis at {server} failed: {kind}: {exc}")


def _backoff(settings: RedisSettings) -> list[float]:
    """Delays before each retry of a failed call."""
    return [settings.backoff_s * 4**i for i in range(settings.retries)]


class _Connection:
    """What both executors share: settings, the server's name, the URL."""

    def __init__(self, url: str | None, settings: RedisSettings) -> None:
        self.settings = settings
        self.url = url
        self.server = describe_server(url) if url else "redis (client passed in)"


class RedisClient(_Connection):
    """Performs `Call`s with redis-py's pooled sync client."""

    def __init__(
        self, url: str | None, settings: RedisSettings, client: Any = None
    ) -> None:
        super().__init__(url, settings)
        self._client = client
        self._scripts: dict[str, Any] = {}

    @property
    def client(self) -> Any:
        """The redis-py client (created from the URL on first use)."""
        if self._client is None:
            assert self.url is not None
            if self.settings.cluster:
                self._client = RedisCluster.from_url(self.url)
            else:
                self._client = redis.Redis.from_url(self.url)
        return self._client

    def _send(self, call: Call) -> Any:
        if call.script is None:
            return self.client.execute_command(call.command, *call.keys, *call.args)
        script = self._scripts.get(call.script)
        if script is None:
            script = self.client.register_script(SCRIPTS[call.script])
            self._scripts[call.script] = script
        return script(keys=list(call.keys), args=list(call.args))

    def execute(self, call: Call) -> Any:
        """One call, retried briefly on connection errors, else `StoreError`."""
        for delay in [*_backoff(self.settings), None]:
            try:
                return self._send(call)
            except redis.RedisError as exc:
                if delay is None or not _retryable(exc):
                    raise _store_error(self.server, exc) from exc
                time.sleep(delay)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Release the pool (the next call reconnects)."""
        if self._client is not None:
            self._client.close()
            self._client = None


class AsyncRedisClient(_Connection):
    """Performs `Call`s with redis-py's asyncio client: one client per event loop.

    redis-py's asyncio connections belong to the loop that opened them, so a
    client is created for each loop the engine is used from (a client passed
    in is used as is).
    """

    def __init__(
        self, url: str | None, settings: RedisSettings, client: Any = None
    ) -> None:
        super().__init__(url, settings)
        self._given = client
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._scripts: dict[tuple[int, str], Any] = {}

    def client(self) -> Any:
        """The asyncio client of the running loop."""
        if self._given is not None:
            return self._given
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            assert self.url is not None
            if self.settings.cluster:
                client = AsyncRedisCluster.from_url(self.url)
            else:
                client = aredis.Redis.from_url(self.url)
            self._clients[loop] = client
        return client

    async def _send(self, call: Call) -> Any:
        client = self.client()
        if call.script is None:
            return await client.execute_command(call.command, *call.keys, *call.args)
        key = (id(client), call.script)
        script = self._scripts.get(key)
        if script is None:
            script = client.register_script(SCRIPTS[call.script])
            self._scripts[key] = script
        return await script(keys=list(call.keys), args=list(call.args))

    async def execute(self, call: Call) -> Any:
        """One call, retried briefly on connection errors, else `StoreError`."""
        for delay in [*_backoff(self.settings), None]:
            try:
                return await self._send(call)
            except redis.RedisError as exc:
                if delay is None or not _retryable(exc):
                    raise _store_error(self.server, exc) from exc
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the running loop's client."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        client = self._clients.pop(loop, None) if loop is not None else None
        if client is not None:
            await client.aclose()


def cluster_probe() -> Op[bool]:
    """True when the server is a Redis Cluster node (`StoreError` if down)."""
    info = yield Call(None, [], ["cluster"], command="INFO")
    return bool(info.get("cluster_enabled"))


def client_pair(client: Any) -> tuple[Any, Any]:
    """(sync client, asyncio client) for a user's client; the missing twin is
    built from the same connection settings."""
    if client is None:
        return None, None
    if isinstance(client, aredis.Redis):
        kwargs = dict(client.connection_pool.connection_kwargs)
        return redis.Redis(**_portable(kwargs)), client
    if isinstance(client, redis.Redis):
        kwargs = dict(client.connection_pool.connection_kwargs)
        return client, aredis.Redis(**_portable(kwargs))
    raise InvalidConfigError(
        "redis_client must be a redis.Redis or redis.asyncio.Redis, "
        f"got {type(client)!r}"
    )


def _portable(kwargs: dict[str, Any]) -> dict[str, Any]:
    keep = ("host", "port", "db", "username", "password", "socket_timeout")
    return {k: v for k, v in kwargs.items() if k in keep}


__all__ = [
    "AsyncRedisClient",
    "Call",
    "RedisClient",
    "RedisSettings",
    "client_pair",
    "cluster_probe",
    "describe_server",
    "parse_ttl",
]
