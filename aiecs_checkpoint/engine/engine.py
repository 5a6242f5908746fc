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

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from typing import Any, cast

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from aiecs_checkpoint.engine.checkpoint_api import CheckpointAPI
from aiecs_checkpoint.engine.domain_api import DomainAPI, now_us
from aiecs_checkpoint.engine.latency import Latency
from aiecs_checkpoint.errors import InvalidConfigError, StoreError
from aiecs_checkpoint.stores.archived import ArchivedStore, AsyncArchivedStore
from aiecs_checkpoint.stores.base import (
    AsyncCheckpointStore,
    CheckpointStore,
    InProcessAsync,
)
from aiecs_checkpoint.stores.clickhouse import Archive, ArchiveSettings
from aiecs_checkpoint.stores.domain import AsyncDomainStore, DomainStore
from aiecs_checkpoint.stores.memory import MemoryStore
from aiecs_checkpoint.stores.memory_domain import (
    InProcessDomainAsync,
    MemoryDomainStore,
)

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


DEFAULT_MAX_MESSAGES = 1000
"""Messages kept per conversation (the newest), as the original's cap."""


class ContextEngine(DomainAPI, CheckpointAPI):
    """Owns the stores shared by `ContextEngineSaver` and the domain APIs.

    Args:
        redis_url: `redis://` or `rediss://` URL (password and db in the URL).
        redis_client: an existing redis-py client (sync or asyncio) to use.
        key_prefix: prefix of every Redis key, so applications can share a server.
        ttl: `{"default_ttl": minutes, "refresh_on_read": bool}`; off by default.
        cluster: force Redis Cluster mode; detected on connect when None.
        fallback: fall back to the memory store when Redis is unreachable at
            start-up (loudly). Off by default: a misconfigured URL is an error.
        store: a ready checkpoint store (advanced; tests and custom backends).
        serde: serializer of domain data (messages, metadata, task contexts);
            LangGraph's `JsonPlusSerializer` by default. A saver built without
            an engine passes its own, so `EncryptedSerializer` covers both.
        session_ttl: seconds a session's data (metrics, conversation, task
            context, conversation sessions) lives after its last write; off
            by default. Each session expires on its own.
        max_conversation_messages: messages kept per conversation (newest).
        archive: the ClickHouse cold archive (`ArchiveSettings` or its fields
            as a mapping); off by default. `from_env()` enables it with
            `CLICKHOUSE_ENABLED=true` and the `CLICKHOUSE_*` variables.
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
        serde: SerializerProtocol | None = None,
        session_ttl: float | None = None,
        max_conversation_messages: int = DEFAULT_MAX_MESSAGES,
        archive: ArchiveSettings | Mapping[str, Any] | None = None,
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
        if session_ttl is not None and (
            isinstance(session_ttl, bool)
            or not isinstance(session_ttl, (int, float))
            or not 0 < session_ttl < float("inf")
        ):
            raise InvalidConfigError(
                f"session_ttl must be a positive number of seconds, got {session_ttl!r}"
            )
        if (
            isinstance(max_conversation_messages, bool)
            or not isinstance(max_conversation_messages, int)
            or max_conversation_messages < 1
        ):
            raise InvalidConfigError(
                "max_conversation_messages must be an int >= 1, "
                f"got {max_conversation_messages!r}"
            )
        self.serde: SerializerProtocol = serde or JsonPlusSerializer()
        self.session_ttl = session_ttl
        self.max_conversation_messages = max_conversation_messages
        self._latency = Latency()
        self.archive: Archive | None = _archive(archive)
        self._tier: Any = None
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
        self.domain: DomainStore
        self.adomain: AsyncDomainStore
        if store is not None:
            self._use(store, InProcessAsync(store))
            self._use_memory_domain()
        elif redis_url is not None or redis_client is not None:
            self._build_redis(cluster=bool(cluster))
        else:
            self._use_memory()

    @classmethod
    def from_env(cls, **options: Any) -> ContextEngine:
        """An engine from `REDIS_URL` or `REDIS_HOST`/... (memory when unset),
        archiving to ClickHouse when `CLICKHOUSE_ENABLED=true`."""
        if "archive" not in options:
            options["archive"] = ArchiveSettings.from_env()
        url = redis_url_from_env()
        return cls(redis_url=url, **options) if url else cls(**options)

    # -- stores ------------------------------------------------------------------

    def _use(self, sync: CheckpointStore, async_: AsyncCheckpointStore) -> None:
        if self.archive is not None:
            archived = ArchivedStore(sync, self.archive)
            self._tier = archived.tier
            sync = cast(CheckpointStore, archived)
            async_ = cast(
                AsyncCheckpointStore, AsyncArchivedStore(async_, archived.tier)
            )
        self.checkpoints = sync
        self.acheckpoints = async_

    def _use_memory(self) -> None:
        memory = MemoryStore()
        self._use(memory, InProcessAsync(memory))
        self._use_memory_domain()

    def _use_memory_domain(self) -> None:
        domain = MemoryDomainStore(self.session_ttl)
        self.domain = domain
        self.adomain = cast(AsyncDomainStore, InProcessDomainAsync(domain))

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
        from aiecs_checkpoint.stores.redis_domain import (
            AsyncRedisDomainStore,
            RedisDomainStore,
        )

        sync_client, async_client = _split_client(self._redis_client)
        sync = RedisStore(self.redis_url, settings, client=sync_client)
        async_ = AsyncRedisStore(self.redis_url, settings, client=async_client)
        self._use(sync, async_)
        session_ms = round(self.session_ttl * 1000) if self.session_ttl else 0
        self.domain = cast(DomainStore, RedisDomainStore(sync, session_ms))
        self.adomain = cast(AsyncDomainStore, AsyncRedisDomainStore(async_, session_ms))

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
        """Flush the archive's outbox (within its `close_timeout`), release sync
        connections."""
        if self.archive is not None:
            self.archive.close()
        close = getattr(_hot(self.checkpoints), "close", None)
        if close is not None:
            close()

    async def close(self) -> None:
        """Flush the archive, release the stores' connections."""
        if self.archive is not None:
            await asyncio.to_thread(self.archive.close)
        close = getattr(_hot(self.checkpoints), "close", None)
        if close is not None:
            close()
        aclose = getattr(_hot(self.acheckpoints), "close", None)
        if aclose is not None:
            await aclose()

    # -- observability ---------------------------------------------------------------

    def _issues(self) -> list[str]:
        issues = [self.degraded_reason] if self.degraded_reason else []
        if self.archive is not None and self.archive.counters.last_error:
            issues.append(
                f"ClickHouse archive at {self.archive.settings.server} failing "
                f"(writes queued, retrying): {self.archive.counters.last_error}"
            )
        return issues

    def _health(self, reachable: str | None, counts: dict[str, Any]) -> dict[str, Any]:
        issues = self._issues() + ([reachable] if reachable else [])
        return {
            "status": "degraded" if issues else "healthy",
            "storage_backend": self.storage_backend,
            "redis_connected": self.storage_backend == "redis"
            and self._connected
            and reachable is None,
            **counts,
            "issues": issues,
        }

    def _counts(self, stats: Any, checkpoints: int) -> dict[str, Any]:
        return {
            "total_sessions": stats.total_sessions,
            "active_sessions": stats.active_sessions,
            "sessions_by_status": stats.by_status,
            "total_messages": stats.total_messages,
            "conversation_sessions": stats.conversation_sessions,
            "total_checkpoints": checkpoints,
            "archive": None if self.archive is None else self.archive.metrics(),
        }

    async def health_check(self) -> dict[str, Any]:
        """Status ("healthy" or "degraded" with the issues) and store counts."""
        try:
            start = time.perf_counter()
            await self.acheckpoints.ping()
            self._latency.add(time.perf_counter() - start)
            counts = await self._store_counts()
        except StoreError as exc:
            return self._health(str(exc), {})
        return self._health(None, counts)

    def health_check_sync(self) -> dict[str, Any]:
        """`health_check` for sync code."""
        try:
            self.checkpoints.ping()
            stats = self.domain.stats(now_us())
            counts = self._counts(stats, self.checkpoints.count_checkpoints())
        except StoreError as exc:
            return self._health(str(exc), {})
        return self._health(None, counts)

    async def _store_counts(self) -> dict[str, Any]:
        stats = await self.adomain.stats(now_us())
        checkpoints = await self.acheckpoints.count_checkpoints()
        return self._counts(stats, checkpoints)

    async def get_metrics(self) -> dict[str, Any]:
        """Counts read from the store (valid across processes) and this process's
        storage latency."""
        return {
            "storage_backend": self.storage_backend,
            **(await self._store_counts()),
            "storage_performance": self._latency.snapshot(),
        }

    def get_metrics_snapshot(self) -> dict[str, Any]:
        """`get_metrics` for sync code."""
        stats = self.domain.stats(now_us())
        return {
            "storage_backend": self.storage_backend,
            **self._counts(stats, self.checkpoints.count_checkpoints()),
            "storage_performance": self._latency.snapshot(),
        }

    async def _delete_thread(self, thread_id: str) -> None:
        await self.acheckpoints.delete_thread(thread_id)


def _archive(option: ArchiveSettings | Mapping[str, Any] | None) -> Archive | None:
    """The started archive an `archive=` option asks for (None when off)."""
    if option is None:
        return None
    if isinstance(option, Mapping):
        try:
            option = ArchiveSettings(**option)
        except TypeError as exc:
            raise InvalidConfigError(f"invalid archive options: {exc}") from exc
    if not isinstance(option, ArchiveSettings):
        raise InvalidConfigError(
            f"archive must be ArchiveSettings or a mapping, got {option!r}"
        )
    archive = Archive(option)
    archive.start()
    return archive


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


def _hot(store: Any) -> Any:
    """The hot store behind an archived one (or the store itself)."""
    return getattr(store, "hot", store)


def _is_cluster(store: Any) -> bool:
    """True when the server behind a (standalone-configured) store is a cluster."""
    store = _hot(store)
    try:
        info = store.client.info("cluster")
    except Exception as exc:
        raise StoreError(f"Redis at {store.server} failed: {exc}") from exc
    return bool(info.get("cluster_enabled"))
