"""ContextEngine: the one storage engine behind the saver and the domain APIs.

The engine owns the checkpoint store: the embedded in-process memory store by
default (no server, no configuration), or Redis. The saver and the session /
conversation / task-context APIs see one storage whatever the deployment.

Redis is configured in one of three ways: `ContextEngine(redis_url=...)`,
`ContextEngine(redis_client=...)` with an existing redis-py client (sync or
asyncio), or `ContextEngine.from_env()` reading the variables the original
ContextEngine documented (`REDIS_URL`, else `REDIS_HOST`/`REDIS_PORT`/
`REDIS_DB`/`REDIS_PASSWORD`).

Start-up (`connect()` / `await initialize()`) pings Redis and detects a Redis
Cluster. If Redis is unreachable then, the engine falls back to the memory store
only when `fallback=True`, and says so loudly (WARNING log, `health_check()`
"degraded", `storage_backend` "memory"); otherwise it raises `StoreError`.
After start-up a Redis failure is never hidden: calls retry briefly, then raise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from aiecs_checkpoint.errors import InvalidConfigError, StoreError
from aiecs_checkpoint.stores.base import (
    AsyncCheckpointStore,
    CheckpointStore,
    InProcessAsync,
)
from aiecs_checkpoint.stores.memory import MemoryStore

logger = logging.getLogger("aiecs_checkpoint")

DEFAULT_PREFIX = "aiecs"


def redis_url_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The Redis URL the environment names, or None when it names none.

    `REDIS_URL` wins; otherwise `REDIS_HOST` (with `REDIS_PORT` 6379,
    `REDIS_DB` 1 and `REDIS_PASSWORD`, the original defaults) builds one.
    """
    env = os.environ if env is None else env
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    host = env.get("REDIS_HOST")
    if not host:
        return None
    port, db = env.get("REDIS_PORT", "6379"), env.get("REDIS_DB", "1")
    for name, raw in (("REDIS_PORT", port), ("REDIS_DB", db)):
        if not raw.isdigit():
            raise InvalidConfigError(
                f"{name} must be a non-negative integer, got {raw!r}"
            )
    password = env.get("REDIS_PASSWORD", "")
    from urllib.parse import quote

    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


class ContextEngine:
    """Owns the checkpoint store shared by `ContextEngineSaver` and the domain APIs.

    Args:
        redis_url: `redis://` or `rediss://` URL (password and db in the URL).
        redis_client: an existing redis-py client (sync or asyncio) to use.
        key_prefix: prefix of every Redis key, so applications can share a server.
        ttl: `{"default_ttl": minutes, "refresh_on_read": bool}`; off by default.
        cluster: force Redis Cluster mode; detected on connect when None.
        fallback: fall back to the memory store when Redis is unreachable at
            start-up (loudly). Off by default: a misconfigured URL is an error.
        store: a ready checkpoint store (advanced; tests and custom backends).
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        redis_client: Any = None,
        key_prefix: str = DEFAULT_PREFIX,
        ttl: Mapping[str, Any] | None = None,
        cluster: bool | None = None,
        fallback: bool = False,
        store: CheckpointStore | None = None,
    ) -> None:
        if redis_url is not None and not isinstance(redis_url, str):
            raise InvalidConfigError(f"redis_url must be a str, got {redis_url!r}")
        if redis_url is not None and not redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise InvalidConfigError(
                "redis_url must start with redis://, rediss:// or unix://"
            )
        if not isinstance(key_prefix, str) or not key_prefix:
            raise InvalidConfigError(
                f"key_prefix must be a non-empty str, got {key_prefix!r}"
            )
        self.redis_url = redis_url
        self.fallback = fallback
        self.degraded_reason: str | None = None
        self._redis_client = redis_client
        self._prefix = key_prefix
        self._ttl = ttl
        self._cluster = cluster
        self._connected = False
        self.checkpoints: CheckpointStore
        self.acheckpoints: AsyncCheckpointStore
        if store is not None:
            self._use(store, InProcessAsync(store))
        elif redis_url is not None or redis_client is not None:
            self._build_redis(cluster=bool(cluster))
        else:
            self._use_memory()

    @classmethod
    def from_env(cls, **options: Any) -> ContextEngine:
        """An engine from `REDIS_URL` or `REDIS_HOST`/... (memory when unset)."""
        url = redis_url_from_env()
        return cls(redis_url=url, **options) if url else cls(**options)

    # -- stores ------------------------------------------------------------------

    def _use(self, sync: CheckpointStore, async_: AsyncCheckpointStore) -> None:
        self.checkpoints = sync
        self.acheckpoints = async_

    def _use_memory(self) -> None:
        memory = MemoryStore()
        self._use(memory, InProcessAsync(memory))

    def _build_redis(self, cluster: bool) -> None:
        try:
            from aiecs_checkpoint.stores.redis import (
                AsyncRedisStore,
                RedisSettings,
                RedisStore,
                parse_ttl,
            )
        except ImportError as exc:  # pragma: no cover - only without the extra
            raise InvalidConfigError(
                "Redis support needs the extra: pip install 'aiecs-checkpoint[redis]'"
            ) from exc
        ttl_ms, refresh = parse_ttl(self._ttl)
        settings = RedisSettings(
            prefix=self._prefix, ttl_ms=ttl_ms, refresh_on_read=refresh, cluster=cluster
        )
        sync_client, async_client = _split_client(self._redis_client)
        self._use(
            RedisStore(self.redis_url, settings, client=sync_client),
            AsyncRedisStore(self.redis_url, settings, client=async_client),
        )

    @property
    def storage_backend(self) -> str:
        """Name of the store in use: "memory" or "redis"."""
        return self.checkpoints.backend

    # -- start-up ------------------------------------------------------------------

    def connect(self) -> ContextEngine:
        """Sync start-up: ping Redis, detect a cluster, apply the fallback policy."""
        if self._connected or self.storage_backend != "redis":
            self._connected = True
            return self
        store = self.checkpoints
        try:
            if self._cluster is None and _is_cluster(store):
                self._build_redis(cluster=True)
            self.checkpoints.ping()
        except StoreError as exc:
            self._degrade_or_raise(exc)
        self._connected = True
        return self

    async def initialize(self) -> bool:
        """Async start-up; True when the configured store is in use (not a fallback)."""
        if self._connected or self.storage_backend != "redis":
            self._connected = True
            return self.degraded_reason is None
        try:
            if self._cluster is None and _is_cluster(self.checkpoints):
                self._build_redis(cluster=True)
            await self.acheckpoints.ping()
        except StoreError as exc:
            self._degrade_or_raise(exc)
        self._connected = True
        return self.degraded_reason is None

    def _degrade_or_raise(self, exc: StoreError) -> None:
        if not self.fallback:
            raise exc
        self.degraded_reason = str(exc)
        logger.warning(
            "Redis unreachable at start-up, falling back to the in-process memory "
            "store (data will not be shared or survive a restart): %s",
            exc,
        )
        self._use_memory()

    def close_sync(self) -> None:
        """Release sync connections."""
        close = getattr(self.checkpoints, "close", None)
        if close is not None:
            close()

    async def close(self) -> None:
        """Release the stores' connections (the memory store holds none)."""
        self.close_sync()
        aclose = getattr(self.acheckpoints, "close", None)
        if aclose is not None:
            await aclose()

    # -- observability ---------------------------------------------------------------

    def health_check(self) -> dict[str, Any]:
        """Status of the engine: "healthy", or "degraded" with the reasons."""
        issues = [self.degraded_reason] if self.degraded_reason else []
        return {
            "status": "degraded" if issues else "healthy",
            "storage_backend": self.storage_backend,
            "redis_connected": self.storage_backend == "redis" and self._connected,
            "issues": issues,
        }

    def get_metrics_snapshot(self) -> dict[str, Any]:
        """Counts read from the store itself (not from this process's counters)."""
        return {
            "storage_backend": self.storage_backend,
            "total_checkpoints": self.checkpoints.count_checkpoints(),
        }


def _split_client(client: Any) -> tuple[Any, Any]:
    """(sync client, asyncio client) for a user's client; the missing twin is
    built from the same connection settings."""
    if client is None:
        return None, None
    import redis
    import redis.asyncio as aredis

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


def _is_cluster(store: Any) -> bool:
    """True when the server behind a (standalone-configured) store is a cluster."""
    try:
        info = store.client.info("cluster")
    except Exception as exc:
        raise StoreError(f"Redis at {store.server} failed: {exc}") from exc
    return bool(info.get("cluster_enabled"))
