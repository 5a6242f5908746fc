"""The engine's core: which stores it uses, and the runners of their operations.

The engine owns a checkpoint store and a domain store of one backend: the
embedded in-process memory store by default (no server, no configuration), or
Redis, either one optionally wrapped by the ClickHouse archive. Store methods
return operations (`stores.ops`); `run` / `iterate` perform them with blocking
I/O, `arun` / `aiterate` with asyncio, so every caller above (the domain API,
the saver, tracking) writes each operation once for both.

Redis is configured in one of three ways: `redis_url=...` (validated
completely, before anything connects), `redis_client=...` with an existing
redis-py client (sync or asyncio, standalone or cluster; the other flavour is
built with exactly its connection settings, or pass it as `aredis_client=`),
or `ContextEngine.from_env()` reading the variables the original ContextEngine
documented (`REDIS_URL`, else `REDIS_HOST`/`REDIS_PORT`/`REDIS_DB`/
`REDIS_PASSWORD`).

Start-up (`connect()` / `await initialize()`) pings Redis and detects a Redis
Cluster. If Redis cannot be reached then (connection refused, timeout, unknown
host, missing socket), the engine falls back to the memory store only when
`fallback=True`, and says so loudly (WARNING log, `health_check()` "degraded",
`storage_backend` "memory"); otherwise it raises `StoreError`. Rejected
credentials (`StoreError`) and a db the server lacks (`InvalidConfigError`)
always raise: a fallback would hide a misconfiguration. After start-up a Redis
failure is never hidden: calls retry briefly, then raise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from langgraph.checkpoint.serde.base import SerializerProtocol

from aiecs_checkpoint.config import apply_log_level
from aiecs_checkpoint.domain.serde import CheckedSerializer, checked, unwrap
from aiecs_checkpoint.engine.latency import Latency
from aiecs_checkpoint.errors import InvalidConfigError, StoreError
from aiecs_checkpoint.stores.clickhouse.archive import Archive, ArchiveSettings
from aiecs_checkpoint.stores.clickhouse.tiered import ArchivedStore
from aiecs_checkpoint.stores.memory.checkpoints import MemoryStore
from aiecs_checkpoint.stores.memory.domain import MemoryDomainStore
from aiecs_checkpoint.stores.ops import AsyncRunner, Op, Runner, Stream
from aiecs_checkpoint.stores.protocols import CheckpointStore, DomainStore
from aiecs_checkpoint.stores.redis import client as rc
from aiecs_checkpoint.stores.redis import twins
from aiecs_checkpoint.stores.redis.checkpoints import RedisCheckpointStore
from aiecs_checkpoint.stores.redis.domain import RedisDomainStore
from aiecs_checkpoint.stores.settings import parse_ttl

logger = logging.getLogger("aiecs_checkpoint")

T = TypeVar("T")

DEFAULT_PREFIX = "aiecs"

DEFAULT_MAX_MESSAGES = 1000
"""Messages kept per conversation (the newest), as the original's cap."""

DEFAULT_REPLICA_ACKS_TIMEOUT = 1.0
"""Seconds `put` / `put_writes` wait for `replica_acks` acknowledgements."""

DEFAULT_SOCKET_TIMEOUT = 1.5
"""Seconds a Redis client built by the engine waits for a reply."""

DEFAULT_SOCKET_CONNECT_TIMEOUT = 0.5
"""Seconds a Redis client built by the engine waits to connect."""

WAIT_MARGIN = 0.5
"""With `replica_acks`, the default `socket_timeout` is at least
`replica_acks_timeout` plus this (a `WAIT` holds the reply that long)."""

_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")


class EngineCore:
    """Owns the stores and runs their operations (see the module docstring).

    Args:
        redis_url: `redis://`, `rediss://` or `unix://` URL (password and db in
            the URL).
        redis_client: an existing redis-py client to use: `redis.Redis`,
            `redis.asyncio.Redis` or their `RedisCluster`s. The other flavour
            is built with exactly the same connection settings; when redis-py
            cannot express them in that flavour, `InvalidConfigError` asks
            for both clients.
        aredis_client: the asyncio client to use with a sync `redis_client`
            (both configured alike, for the same server).
        key_prefix: prefix of every Redis key, so applications can share a server.
            Validated on every store; it has no effect on the memory store,
            whose data is private to the engine already (so one configuration,
            e.g. `from_env(key_prefix=...)`, serves with and without Redis).
        ttl: `{"default_ttl": minutes, "refresh_on_read": bool}`; off by default.
            Honoured by the memory and the Redis store alike: each thread
            expires `default_ttl` minutes after its last write (or read, with
            `refresh_on_read`).
        cluster: force Redis Cluster mode; detected on connect when None.
            `cluster=True` without Redis raises `InvalidConfigError`.
        fallback: fall back to the memory store when Redis is unreachable at
            start-up (loudly). Off by default: a misconfigured URL is an error.
        store: a ready checkpoint store (advanced; tests and custom backends).
        serde: serializer of everything stored (domain data, and the
            checkpoints of every saver on this engine), wrapped in a
            `CheckedSerializer` (allowlisted types, typed decode errors); a
            strict `JsonPlusSerializer` by default. An engine built without one
            adopts the serde of the first saver given one, as long as nothing
            was stored or read with the default yet; a saver with another
            serde is refused (`use_serde`).
        session_ttl: seconds a session's data (metrics, conversation, task
            context, conversation sessions) lives after its last write; off
            by default. Each session expires on its own.
        max_conversation_messages: messages kept per conversation (newest).
        archive: the ClickHouse cold archive (`ArchiveSettings` or its fields
            as a mapping); off by default. `from_env()` enables it with
            `CLICKHOUSE_ENABLED=true` and the `CLICKHOUSE_*` variables.
        replica_acks: Redis only. With N > 0, `put` and `put_writes` return
            only once N replicas of the node that took the write acknowledged
            it (`WAIT`), and raise `StoreError` when fewer did within
            `replica_acks_timeout`. 0 (default): return once the master has it
            (replication is asynchronous; a failover may lose it).
        replica_acks_timeout: seconds `put` / `put_writes` wait for the
            replicas' acknowledgements (default 1.0; milliseconds precision).
            Must be below `socket_timeout` when `replica_acks` is set.
        socket_timeout: seconds the Redis clients the engine builds (from
            `redis_url` or `from_env()`) wait for a reply (default 1.5; with
            `replica_acks`, at least `replica_acks_timeout` + 0.5, and a
            value not above `replica_acks_timeout` is refused).
        socket_connect_timeout: seconds they wait to connect (default 0.5).
            With both, every Redis call ends (or raises `StoreError`) within
            `(retries + 1) * (connect + reply) + backoff` = 4 * 2.0 + 1.05 =
            9.05 s by default, whatever the server does (see
            `stores.redis.client`). A value in the URL's query
            (`?socket_timeout=3`) is used when the option is not given; both
            raise `InvalidConfigError`. Clients passed with `redis_client=` /
            `aredis_client=` keep their own timeouts and retry policy (the
            engine never changes them; these options are refused with them).
    """

    checkpoints: CheckpointStore
    domain: DomainStore

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        redis_client: Any = None,
        aredis_client: Any = None,
        key_prefix: str = DEFAULT_PREFIX,
        ttl: Mapping[str, Any] | None = None,
        cluster: bool | None = None,
        fallback: bool = False,
        store: CheckpointStore | None = None,
        serde: SerializerProtocol | None = None,
        session_ttl: float | None = None,
        max_conversation_messages: int = DEFAULT_MAX_MESSAGES,
        archive: ArchiveSettings | Mapping[str, Any] | None = None,
        replica_acks: int = 0,
        replica_acks_timeout: float = DEFAULT_REPLICA_ACKS_TIMEOUT,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
    ) -> None:
        _check_options(key_prefix, session_ttl, max_conversation_messages)
        apply_log_level()
        self._ttl_ms, self._refresh_on_read = parse_ttl(ttl)
        if cluster is not None and not isinstance(cluster, bool):
            raise InvalidConfigError(
                f"cluster must be True, False or None, got {cluster!r}"
            )
        self._url = _check_redis(redis_url, redis_client, aredis_client)
        redis = (redis_url, redis_client, aredis_client) != (None, None, None)
        if cluster and not redis:
            raise InvalidConfigError(
                "cluster=True needs Redis: pass redis_url=... or redis_client=... "
                "(with from_env(), set REDIS_URL or REDIS_HOST)"
            )
        if store is not None and (ttl is not None or redis):
            raise InvalidConfigError(
                "store=... is a ready store: ttl and Redis options do not apply to it"
            )
        self._clients = (
            None
            if redis_client is None and aredis_client is None
            else twins.from_clients(redis_client, aredis_client)
        )
        self._serde = checked(serde)
        self._serde_bound = serde is not None
        self._acks = _check_acks(
            replica_acks,
            replica_acks_timeout,
            redis=self._url is not None or self._clients is not None,
            store=store is not None,
            fallback=fallback,
        )
        self._timeouts = _check_timeouts(
            self._url,
            self._clients is not None,
            {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": socket_connect_timeout,
            },
            self._acks[1] / 1000 if self._acks[0] else 0.0,
        )
        self.session_ttl = session_ttl
        self.max_conversation_messages = max_conversation_messages
        self._latency = Latency()
        self.archive: Archive | None = _archive(archive)
        self.redis_url = redis_url
        self.fallback = fallback
        self.degraded_reason: str | None = None
        self._prefix = key_prefix
        self._cluster = cluster
        self._connected = False
        self._redis: Any = None
        self._aredis: Any = None
        if store is not None:
            self._use(store, MemoryDomainStore(session_ttl), {}, {})
        elif self._clients is not None:
            if cluster is not None and cluster != self._clients.cluster:
                kind = "a cluster" if self._clients.cluster else "a standalone"
                raise InvalidConfigError(
                    f"cluster={cluster} but the Redis client given is {kind} client"
                )
            if self._clients.cluster:
                self._cluster = True
            self._build_redis(cluster=bool(self._clients.cluster))
        elif redis_url is not None:
            self._build_redis(cluster=bool(cluster))
        else:
            self._use_memory()

    # -- the serializer ----------------------------------------------------------

    @property
    def serde(self) -> CheckedSerializer:
        """The serializer of everything this engine stores; using it binds it
        (a saver can no longer bring another)."""
        self._serde_bound = True
        return self._serde

    def use_serde(self, serde: SerializerProtocol | None) -> CheckedSerializer:
        """The serializer a saver on this engine must use.

        None: the engine's. The engine's own (or its inner serializer): the
        engine's. Another one: adopted when the engine was built without a
        serde and has not used its default yet, else `InvalidConfigError`
        (data stored with one and read with the other would be unreadable,
        or stored in plaintext next to encrypted checkpoints).
        """
        if serde is None or unwrap(serde) is unwrap(self._serde):
            return self.serde
        if self._serde_bound:
            raise InvalidConfigError(
                f"this engine already stores with {unwrap(self._serde)!r}, "
                f"not the saver's {unwrap(serde)!r}: give the serializer to the "
                "engine only (ContextEngine(serde=...)) or the same object to both"
            )
        self._serde = checked(serde)
        return self.serde

    # -- running operations ------------------------------------------------------

    def run(self, op: Op[T]) -> T:
        """Perform a store operation with blocking I/O."""
        return self._runner.run(op)

    async def arun(self, op: Op[T]) -> T:
        """Perform a store operation with asyncio (archive reads in a thread)."""
        return await self._arunner.run(op)

    def iterate(self, stream: Stream) -> Iterator[Any]:
        """The items of a store listing, fetched page by page."""
        return self._runner.iterate(stream)

    def aiterate(self, stream: Stream) -> AsyncIterator[Any]:
        """Async `iterate`."""
        return self._arunner.iterate(stream)

    # -- stores ------------------------------------------------------------------

    def _use(
        self,
        checkpoints: CheckpointStore,
        domain: DomainStore,
        handlers: Mapping[type, Any],
        ahandlers: Mapping[type, Any],
    ) -> None:
        if self.archive is not None:
            checkpoints = ArchivedStore(checkpoints, self.archive)
        self.checkpoints = checkpoints
        self.domain = domain
        self._runner = Runner(handlers)
        self._arunner = AsyncRunner(ahandlers)

    def _use_memory(self) -> None:
        self._redis = self._aredis = None
        store = MemoryStore(self._ttl_ms, self._refresh_on_read)
        self._use(store, MemoryDomainStore(self.session_ttl), {}, {})

    def _build_redis(self, cluster: bool) -> None:
        settings = rc.RedisSettings(
            prefix=self._prefix,
            ttl_ms=self._ttl_ms,
            refresh_on_read=self._refresh_on_read,
            cluster=cluster,
            replica_acks=self._acks[0],
            replica_acks_timeout_ms=self._acks[1],
            socket_timeout_s=self._timeouts["socket_timeout"],
            socket_connect_timeout_s=self._timeouts["socket_connect_timeout"],
            bounded=self._clients is None,
        )
        if self._clients is not None:
            clients = self._clients
        else:
            assert self._url is not None
            clients = twins.from_url(self._url, cluster, self._timeouts)
        self._redis = rc.RedisClient(
            clients.server, settings, make=clients.make_sync, given=clients.sync
        )
        self._aredis = rc.AsyncRedisClient(
            clients.server, settings, make=clients.make_async, given=clients.async_
        )
        session_ms = round(self.session_ttl * 1000) if self.session_ttl else 0
        self._use(
            RedisCheckpointStore(settings),
            RedisDomainStore(settings, session_ms, serde=lambda: self.serde),
            {rc.Call: self._redis.execute},
            {rc.Call: self._aredis.execute},
        )

    @property
    def storage_backend(self) -> str:
        """Name of the store in use: "memory" or "redis"."""
        return self.checkpoints.backend

    # -- start-up ------------------------------------------------------------------

    def connect(self) -> EngineCore:
        """Sync start-up: ping Redis, detect a cluster, apply the fallback policy."""
        if self._connected or self._redis is None:
            self._connected = True
            return self
        try:
            if self._cluster is None and self.run(rc.cluster_probe()):
                self._use_cluster()
            self.run(self.checkpoints.ping())
        except StoreError as exc:
            self._degrade_or_raise(exc)
        self._connected = True
        return self

    async def initialize(self) -> bool:
        """Async start-up; True when the configured store is in use (not a fallback)."""
        if self._connected or self._redis is None:
            self._connected = True
            return self.degraded_reason is None
        try:
            if self._cluster is None and await self.arun(rc.cluster_probe()):
                self._use_cluster()
            await self.arun(self.checkpoints.ping())
        except StoreError as exc:
            self._degrade_or_raise(exc)
        self._connected = True
        return self.degraded_reason is None

    def _use_cluster(self) -> None:
        """The server is a Redis Cluster node: use cluster clients."""
        if self._clients is not None:
            raise InvalidConfigError(
                f"the Redis client given ({self._clients.server}) is connected to a "
                "Redis Cluster node: pass redis.cluster.RedisCluster (or "
                "redis.asyncio.cluster.RedisCluster) clients instead"
            )
        self._build_redis(cluster=True)

    def _degrade_or_raise(self, exc: StoreError) -> None:
        """Fall back to memory when allowed and Redis cannot be reached at all;
        rejected credentials and server errors always raise."""
        if not self.fallback or not rc.unreachable(exc):
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
        if self._redis is not None:
            self._redis.close()

    async def close(self) -> None:
        """Flush the archive, release the stores' connections."""
        if self.archive is not None:
            await asyncio.to_thread(self.archive.close)
        if self._redis is not None:
            self._redis.close()
        if self._aredis is not None:
            await self._aredis.close()


def _check_redis(
    redis_url: object, redis_client: Any, aredis_client: Any
) -> rc.RedisURL | None:
    """The validated Redis URL (None without one); `InvalidConfigError` for a
    bad URL, conflicting options or a missing `redis` extra."""
    if redis_url is None and redis_client is None and aredis_client is None:
        return None
    if not rc.INSTALLED:
        raise InvalidConfigError(
            "Redis support needs the redis extra: pip install 'aiecs-checkpoint[redis]'"
        )
    if redis_url is not None and (redis_client, aredis_client) != (None, None):
        raise InvalidConfigError(
            "pass either redis_url or redis_client/aredis_client, not both"
        )
    if aredis_client is not None and redis_client is None:
        raise InvalidConfigError(
            "aredis_client goes with a sync redis_client; to pass only an "
            "asyncio client, pass it as redis_client"
        )
    return None if redis_url is None else rc.parse_url(redis_url)


def _check_timeouts(
    url: rc.RedisURL | None,
    given_clients: bool,
    options: dict[str, float | None],
    wait_s: float,
) -> dict[str, float]:
    """`socket_timeout` and `socket_connect_timeout` in seconds for the clients
    the engine builds: the option, else the URL's query, else the default
    (raised to `wait_s` + `WAIT_MARGIN` with `replica_acks`, whose `WAIT`
    holds the reply up to `wait_s`); `InvalidConfigError` for a bad value, a
    value set twice, one given with the user's clients (theirs apply), or a
    `socket_timeout` a `WAIT` could outlast."""
    defaults = {
        "socket_timeout": max(DEFAULT_SOCKET_TIMEOUT, wait_s + WAIT_MARGIN)
        if wait_s
        else DEFAULT_SOCKET_TIMEOUT,
        "socket_connect_timeout": DEFAULT_SOCKET_CONNECT_TIMEOUT,
    }
    query = dict(parse_qsl(urlsplit(url.url).query)) if url is not None else {}
    out: dict[str, float] = {}
    for name in _TIMEOUTS:
        value: object = options[name]
        if value is not None and given_clients:
            raise InvalidConfigError(
                f"{name} applies to the Redis clients the engine builds; the "
                "clients passed (redis_client/aredis_client) keep their own: set "
                f"{name} on them instead"
            )
        if value is not None and name in query:
            raise InvalidConfigError(
                f"{name} is set both as an option and in redis_url's query: set it once"
            )
        if value is None and name in query:
            try:
                value = float(query[name])
            except ValueError:
                value = query[name]
            what = f"{name} in redis_url's query"
        else:
            what = name
        if value is None:
            value = defaults[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 < value < float("inf")
        ):
            raise InvalidConfigError(
                f"{what} must be a positive number of seconds, got {value!r}"
            )
        out[name] = float(value)
    if not given_clients and wait_s and out["socket_timeout"] <= wait_s:
        raise InvalidConfigError(
            f"socket_timeout ({out['socket_timeout']} s) must be above "
            f"replica_acks_timeout ({wait_s} s): a WAIT still running would be "
            "reported as a lost connection"
        )
    return out


def _check_acks(
    replica_acks: object,
    timeout: object,
    *,
    redis: bool,
    store: bool,
    fallback: bool,
) -> tuple[int, int]:
    """(replicas, timeout in ms) for `RedisSettings`; `InvalidConfigError`
    for a bad value, or replica acknowledgements no write could get."""
    if (
        isinstance(replica_acks, bool)
        or not isinstance(replica_acks, int)
        or replica_acks < 0
    ):
        raise InvalidConfigError(
            f"replica_acks must be an int >= 0, got {replica_acks!r}"
        )
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout < float("inf")
    ):
        raise InvalidConfigError(
            "replica_acks_timeout must be a positive number of seconds, "
            f"got {timeout!r}"
        )
    timeout_ms = max(1, round(timeout * 1000))
    if replica_acks == 0:
        return 0, timeout_ms
    if store or not redis:
        where = "a custom store" if store else "the in-process memory store"
        raise InvalidConfigError(
            f"replica_acks={replica_acks} needs Redis replicas, but the engine uses "
            f"{where}: pass redis_url (or redis_client), or leave replica_acks at 0"
        )
    if fallback:
        raise InvalidConfigError(
            f"replica_acks={replica_acks} with fallback=True: a fallback to the "
            "in-process memory store would drop the replication it asks for; "
            "choose one"
        )
    return replica_acks, timeout_ms


def _check_options(
    key_prefix: object,
    session_ttl: object,
    max_conversation_messages: object,
) -> None:
    """Raise `InvalidConfigError` naming the first invalid option."""
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
