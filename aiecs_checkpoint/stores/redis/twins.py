"""The sync and asyncio redis-py clients the engine uses, from a URL or from
the user's client(s).

The engine needs both flavours (sync methods use the sync client, async
methods the asyncio one). Given only one client, the other, its *twin*, is
built with exactly the same connection settings: connection class (TCP, TLS,
unix socket), every connection option (credentials or credential provider,
db, protocol, timeouts, keepalive, health checks, TLS certificates, key, CA
and verification options, client name, retry policy), the pool's class and
size, and for a Redis Cluster its startup nodes and cluster options. Options
redis-py has in one flavour only, custom connection or pool classes (Sentinel
among them) and callables bound to one flavour are refused with
`InvalidConfigError` asking for both clients (`redis_client=` and
`aredis_client=`), never dropped: a twin that connects elsewhere, or
without TLS, would put data where it does not belong.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiecs_checkpoint.errors import InvalidConfigError
from aiecs_checkpoint.stores.redis.client import RedisURL

try:
    import redis
    import redis.asyncio as aredis
    import redis.asyncio.cluster as acluster
    import redis.asyncio.connection as aconnection
    import redis.asyncio.retry as aretry
    import redis.cluster as scluster
    import redis.connection as sconnection
    import redis.retry as sretry
    from redis.backoff import NoBackoff
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

SYNC, ASYNC = "sync", "asyncio"

_PORTABLE = frozenset(
    {
        "host",
        "port",
        "db",
        "path",
        "username",
        "password",
        "credential_provider",
        "protocol",
        "legacy_responses",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "socket_type",
        "socket_read_size",
        "encoding",
        "encoding_errors",
        "decode_responses",
        "retry_on_timeout",
        "retry_on_error",
        "health_check_interval",
        "client_name",
        "lib_name",
        "lib_version",
        "driver_info",
        "maint_notifications_config",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_include_verify_flags",
        "ssl_exclude_verify_flags",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
        "ssl_password",
    }
)
"""Connection options with the same meaning in both flavours: copied as is."""

_INTERNAL = frozenset(
    {
        "himport_registry",
        "maint_notifications_pool_handler",
        "oss_cluster_maint_notifications_handler",
        "orig_host_address",
        "orig_socket_timeout",
        "orig_socket_connect_timeout",
        "response_callbacks",
        "connection_class",
        "max_connections",
    }
)
"""Set by redis-py for each client it builds (the twin gets its own)."""


def _classes() -> dict[str, dict[str, type]]:
    return {
        SYNC: {
            "tcp": sconnection.Connection,
            "tls": sconnection.SSLConnection,
            "unix": sconnection.UnixDomainSocketConnection,
        },
        ASYNC: {
            "tcp": aconnection.Connection,
            "tls": aconnection.SSLConnection,
            "unix": aconnection.UnixDomainSocketConnection,
        },
    }


def _params(fn: Callable[..., Any] | type) -> dict[str, Any]:
    """Keyword parameters (name -> default) of a callable, or of a class's
    `__init__` along its MRO (redis-py passes `**kwargs` up the chain)."""
    owners = fn.__mro__ if isinstance(fn, type) else (fn,)
    out: dict[str, Any] = {}
    for owner in owners:
        init = owner.__dict__.get("__init__") if isinstance(fn, type) else owner
        if init is None:
            continue
        for name, p in inspect.signature(init).parameters.items():
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                out.setdefault(name, p.default)
    return out


def _refuse(twin: str, what: str) -> InvalidConfigError:
    return InvalidConfigError(
        f"cannot build the {twin} twin of the Redis client given: {what}. Pass "
        "both clients, configured alike: redis_client=<redis.Redis or "
        "redis.cluster.RedisCluster> and aredis_client=<redis.asyncio.Redis or "
        "redis.asyncio.cluster.RedisCluster>"
    )


def _is_sentinel(value: Any) -> bool:
    """redis-py's "not given" markers are bare `object()`s."""
    return type(value) is object


@dataclass(frozen=True)
class _Spec:
    """A client's connection settings, independent of its flavour."""

    kind: str
    kwargs: dict[str, Any]
    retry: Any = None
    pool: str = "plain"
    max_connections: int | None = None
    pool_timeout: float | None = None
    nodes: tuple[tuple[str, int], ...] = ()
    cluster_options: dict[str, Any] = field(default_factory=dict)

    @property
    def cluster(self) -> bool:
        return bool(self.nodes)


def _portable(
    twin: str,
    options: dict[str, Any],
    source: type,
    accepted: dict[str, Any],
    drop: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], Any]:
    """(options to copy, retry policy) of `options`, or `InvalidConfigError`
    naming the first one `accepted` (the twin's parameters) cannot take."""
    defaults = _params(source)
    out: dict[str, Any] = {}
    retry: Any = None
    for name, value in options.items():
        if name in _INTERNAL or name in drop or _is_sentinel(value):
            continue
        if name == "retry":
            retry = value
            continue
        if name not in _PORTABLE:
            if value is None or (name in defaults and value is defaults[name]):
                continue
            if name in defaults and _equal(value, defaults[name]):
                continue
            raise _refuse(twin, f"its option {name}={value!r} has no {twin} equivalent")
        if name not in accepted:
            if value is None or _equal(value, defaults.get(name, None)):
                continue
            raise _refuse(twin, f"redis-py's {twin} client has no option {name}")
        out[name] = value
    return out, retry


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # an odd __eq__ means "not equal"
        return False


def _translate_retry(twin: str, retry: Any) -> Any:
    """The same retry policy for the other flavour (None stays None)."""
    if retry is None:
        return None
    target = sretry.Retry if twin == SYNC else aretry.Retry
    if type(retry) not in (sretry.Retry, aretry.Retry):
        raise _refuse(twin, f"its retry policy is a custom {type(retry).__name__}")
    return target(
        backoff=retry._backoff,  # the backoff objects are shared by both flavours
        retries=retry.get_retries(),
        supported_errors=tuple(retry._supported_errors),
    )


def _kind(twin: str, flavour: str, connection_class: type) -> str:
    for kind, cls in _classes()[flavour].items():
        if connection_class is cls:
            return kind
    raise _refuse(
        twin,
        f"its connection class {connection_class.__module__}."
        f"{connection_class.__qualname__} is not one of redis-py's own",
    )


def _spec_of_standalone(client: Any, flavour: str, twin: str) -> _Spec:
    pool = client.connection_pool
    lib = redis if flavour == SYNC else aredis
    if type(pool) is lib.BlockingConnectionPool:
        kind_of_pool = "blocking"
    elif type(pool) is lib.ConnectionPool:
        kind_of_pool = "plain"
    else:
        raise _refuse(
            twin, f"its connection pool is a {type(pool).__qualname__} (Sentinel?)"
        )
    kind = _kind(twin, flavour, pool.connection_class)
    target = _classes()[twin][kind]
    kwargs, retry = _portable(
        twin, dict(pool.connection_kwargs), pool.connection_class, _params(target)
    )
    return _Spec(
        kind=kind,
        kwargs=kwargs,
        retry=retry,
        pool=kind_of_pool,
        max_connections=pool.max_connections,
        pool_timeout=getattr(pool, "timeout", None),
    )


_NODE_DROP = frozenset({"host", "port", "redis_connect_func", "retry"})


def _spec_of_sync_cluster(client: Any) -> _Spec:
    manager = client.nodes_manager
    nodes = tuple((n.host, int(n.port)) for n in manager.startup_nodes.values())
    pool = client.get_default_node().redis_connection.connection_pool
    kind = _kind(ASYNC, SYNC, pool.connection_class)
    accepted = _params(acluster.RedisCluster)
    kwargs, _ = _portable(
        ASYNC, dict(pool.connection_kwargs), pool.connection_class, accepted, _NODE_DROP
    )
    options = _cluster_options(client, manager._require_full_coverage)
    return _Spec(
        kind=kind,
        kwargs=kwargs,
        retry=client.retry,
        max_connections=pool.max_connections,
        nodes=nodes,
        cluster_options=options,
    )


def _spec_of_async_cluster(client: Any) -> _Spec:
    manager = client.nodes_manager
    nodes = tuple((n.host, int(n.port)) for n in manager.startup_nodes.values())
    options_in = dict(client.connection_kwargs)
    connection_class = options_in["connection_class"]
    kind = _kind(SYNC, ASYNC, connection_class)
    accepted = set(scluster.REDIS_ALLOWED_KEYS) - set(scluster.KWARGS_DISABLED_KEYS)
    kwargs, _ = _portable(
        SYNC,
        options_in,
        connection_class,
        dict.fromkeys(accepted),
        frozenset({"host", "port", "retry"}),
    )
    options = _cluster_options(client, manager.require_full_coverage)
    return _Spec(
        kind=kind,
        kwargs=kwargs,
        retry=client.retry,
        max_connections=options_in.get("max_connections"),
        nodes=nodes,
        cluster_options=options,
    )


def _cluster_options(client: Any, require_full_coverage: bool) -> dict[str, Any]:
    """The cluster-level options of a cluster client, as constructor arguments
    (`read_from_replicas` only when set: redis-py deprecates it)."""
    manager = client.nodes_manager
    options = {
        "require_full_coverage": require_full_coverage,
        "dynamic_startup_nodes": manager._dynamic_startup_nodes,
        "address_remap": manager.address_remap,
        "load_balancing_strategy": client.load_balancing_strategy,
        "reinitialize_steps": client.reinitialize_steps,
    }
    if client.read_from_replicas:
        options["read_from_replicas"] = True
    return options


def _build(spec: _Spec, twin: str) -> Any:
    """A new client of flavour `twin` with the settings of `spec`."""
    retry = _translate_retry(twin, spec.retry)
    if spec.cluster:
        lib_cluster = scluster if twin == SYNC else acluster
        nodes = [lib_cluster.ClusterNode(h, p) for h, p in spec.nodes]
        extra: dict[str, Any] = {}
        if spec.max_connections is not None:
            extra["max_connections"] = spec.max_connections
        if retry is not None:
            extra["retry"] = retry
        return lib_cluster.RedisCluster(
            startup_nodes=nodes,
            ssl=spec.kind == "tls",
            **spec.cluster_options,
            **spec.kwargs,
            **extra,
        )
    lib = redis if twin == SYNC else aredis
    kwargs: dict[str, Any] = dict(spec.kwargs)
    kwargs["connection_class"] = _classes()[twin][spec.kind]
    kwargs["retry"] = retry
    if spec.max_connections is not None:
        kwargs["max_connections"] = spec.max_connections
    pool: Any
    if spec.pool == "blocking":
        pool = lib.BlockingConnectionPool(timeout=spec.pool_timeout, **kwargs)
    else:
        pool = lib.ConnectionPool(**kwargs)
    return lib.Redis.from_pool(pool)


def _describe(spec: _Spec) -> str:
    """Where a client connects, without credentials."""
    if spec.cluster:
        nodes = ",".join(f"{h}:{p}" for h, p in spec.nodes)
        scheme = "rediss" if spec.kind == "tls" else "redis"
        return f"{scheme} cluster {nodes}"
    kw = spec.kwargs
    if spec.kind == "unix":
        return f"unix://{kw.get('path')}?db={kw.get('db', 0)}"
    scheme = "rediss" if spec.kind == "tls" else "redis"
    host, port = kw.get("host", "localhost"), kw.get("port", 6379)
    return f"{scheme}://{host}:{port}/{kw.get('db', 0)}"


@dataclass(frozen=True)
class Clients:
    """How the executors get their clients: a factory (called once for the
    sync client, once per event loop for asyncio ones) or a given client."""

    server: str
    cluster: bool | None
    make_sync: Callable[[], Any] | None = None
    sync: Any = None
    make_async: Callable[[], Any] | None = None
    async_: Any = None


def from_url(
    url: RedisURL, cluster: bool, timeouts: Mapping[str, float] | None = None
) -> Clients:
    """Clients built from a validated URL (cluster: `RedisCluster.from_url`),
    with `timeouts` (`socket_timeout`, `socket_connect_timeout`; options the
    URL's query sets win, as in redis-py). Standalone clients retry nothing
    themselves: the store's executor does, within its bound."""
    options: dict[str, Any] = dict(timeouts or {})
    if cluster:
        if url.scheme == "unix":
            raise InvalidConfigError(
                "a Redis Cluster is reached over TCP: use a redis:// or rediss:// "
                "URL of one of its nodes, not a unix socket"
            )
        if url.db != 0:
            raise InvalidConfigError(
                f"a Redis Cluster has only db 0, but redis_url names db {url.db}: "
                "remove the db index from the URL"
            )

        def make_sync() -> Any:
            return scluster.RedisCluster.from_url(url.url, **options)

        def make_async() -> Any:
            return acluster.RedisCluster.from_url(url.url, **options)

        server = f"{url.scheme} cluster {url.host}:{url.port}"
    else:

        def make_sync() -> Any:
            no_retry = sretry.Retry(NoBackoff(), 0)
            return redis.Redis.from_url(url.url, retry=no_retry, **options)

        def make_async() -> Any:
            no_retry = aretry.Retry(NoBackoff(), 0)
            return aredis.Redis.from_url(url.url, retry=no_retry, **options)

        server = url.server
    return Clients(server, cluster, make_sync=make_sync, make_async=make_async)


def _flavour(client: Any, option: str, want: str) -> bool:
    """True for a cluster client of flavour `want`, False for a standalone one;
    `InvalidConfigError` for anything else."""
    if want == SYNC:
        if isinstance(client, scluster.RedisCluster):
            return True
        if isinstance(client, redis.Redis):
            return False
        expected = "redis.Redis or redis.cluster.RedisCluster"
    else:
        if isinstance(client, acluster.RedisCluster):
            return True
        if isinstance(client, aredis.Redis):
            return False
        expected = "redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster"
    raise InvalidConfigError(f"{option} must be a {expected}, got {type(client)!r}")


def from_clients(client: Any, aclient: Any) -> Clients:
    """The clients of `redis_client=` (either flavour) and `aredis_client=`;
    a missing flavour is the twin of the other (or `InvalidConfigError`)."""
    if client is not None and aclient is None and _is_async(client):
        client, aclient = None, client
    sync_cluster = _flavour(client, "redis_client", SYNC) if client else None
    async_option = "aredis_client" if client is not None else "redis_client"
    async_cluster = _flavour(aclient, async_option, ASYNC) if aclient else None
    if client is not None and aclient is not None:
        if sync_cluster != async_cluster:
            raise InvalidConfigError(
                "redis_client and aredis_client must both be cluster clients or "
                "both standalone clients"
            )
        spec = _spec_for_name(client, bool(sync_cluster))
        return Clients(_describe(spec), sync_cluster, sync=client, async_=aclient)
    if client is not None:
        spec = (
            _spec_of_sync_cluster(client)
            if sync_cluster
            else _spec_of_standalone(client, SYNC, ASYNC)
        )
        return Clients(
            _describe(spec),
            sync_cluster,
            sync=client,
            make_async=lambda: _build(spec, ASYNC),
        )
    spec = (
        _spec_of_async_cluster(aclient)
        if async_cluster
        else _spec_of_standalone(aclient, ASYNC, SYNC)
    )
    return Clients(
        _describe(spec),
        async_cluster,
        make_sync=lambda: _build(spec, SYNC),
        async_=aclient,
    )


def _is_async(client: Any) -> bool:
    return isinstance(client, (aredis.Redis, acluster.RedisCluster))


def _spec_for_name(client: Any, cluster: bool) -> _Spec:
    """Enough of a sync client's settings to name its server."""
    if cluster:
        nodes = client.nodes_manager.startup_nodes.values()
        return _Spec("tcp", {}, nodes=tuple((n.host, int(n.port)) for n in nodes))
    pool = client.connection_pool
    kind = "tcp"
    for k, cls in _classes()[SYNC].items():
        if pool.connection_class is cls:
            kind = k
    return _Spec(kind, dict(pool.connection_kwargs))


__all__ = ["Clients", "from_clients", "from_url"]
