"""Connecting to Redis: URLs, the user's clients and their twins, start-up
failures, and connections per event loop.

Every test talks to real redis-server processes: a unix-socket server, a TLS
server with a throwaway CA (made with `openssl`), password and ACL servers,
and the session's Redis Cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
import redis.asyncio.connection as aconnection
import redis.connection as sconnection
from langgraph.checkpoint.base import empty_checkpoint
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import ConstantBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.credentials import UsernamePasswordCredentialProvider

from aiecs_checkpoint import (
    ContextEngine,
    ContextEngineSaver,
    InvalidConfigError,
    StoreError,
)
from aiecs_checkpoint.stores.redis.client import parse_url
from tests.conftest import REDIS_INSTALLED, cluster_url, redis_url
from tests.servers import RedisServer, find_free_port

pytestmark = pytest.mark.skipif(
    not REDIS_INSTALLED and not os.environ.get("CI"),
    reason="redis-server not installed (apt-get install redis-server redis-tools)",
)

THREAD = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}


def one_checkpoint(value: Any) -> tuple[Any, dict[str, str]]:
    cp = empty_checkpoint()
    cp["channel_values"] = {"v": value}
    cp["channel_versions"] = {"v": "1"}
    return cp, {"v": "1"}


def sync_round_trip(engine: ContextEngine, thread: str = "t") -> Any:
    with ContextEngineSaver(engine) as saver:
        config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        cp, versions = one_checkpoint(f"sync {thread}")
        saver.put(config, cp, {}, versions)
        got = saver.get_tuple({"configurable": {"thread_id": thread}})
        assert got is not None
        return got.checkpoint["channel_values"]["v"]


async def async_round_trip(engine: ContextEngine, thread: str = "t") -> Any:
    saver = ContextEngineSaver(engine)
    await engine.initialize()
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    cp, versions = one_checkpoint(f"async {thread}")
    await saver.aput(config, cp, {}, versions)
    got = await saver.aget_tuple({"configurable": {"thread_id": thread}})
    assert got is not None
    await engine._aredis.close()
    return got.checkpoint["channel_values"]["v"]


def named_connections(server: RedisServer, name: str) -> list[dict[str, Any]]:
    """CLIENT LIST entries of connections called `name`."""
    inspect = redis.Redis(host=server.host, port=server.port, password=server.password)
    try:
        return [c for c in inspect.client_list() if c.get("name") == name]
    finally:
        inspect.close()


def keys_in_db(server: RedisServer, db: int, prefix: str) -> list[bytes]:
    inspect = redis.Redis(
        host=server.host, port=server.port, db=db, password=server.password
    )
    try:
        return list(inspect.scan_iter(match=f"{prefix}:*"))
    finally:
        inspect.close()


# -- servers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def unix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server on a unix socket (and a TCP port, for inspection only)."""
    path = tmp_path_factory.mktemp("sock") / "redis.sock"
    args = ["--unixsocket", str(path), "--unixsocketperm", "700"]
    with RedisServer(extra_args=args) as server:
        server.socket_path = str(path)  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, and a server and a client certificate it signed."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.crt", "-days", "2", "-subj", "/CN=aiecs-test-ca",
    )  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who in ("server", "client"):
        run(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key",
            "-out", f"{who}.csr", "-subj", f"/CN={who}",
        )  # fmt: skip
        run(
            "x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey",
            "ca.key", "-CAcreateserial", "-out", f"{who}.crt", "-days", "2",
            "-extfile", "ext.cnf",
        )  # fmt: skip
    return d


@pytest.fixture(scope="module")
def tls_server(certs: Path) -> Iterator[tuple[RedisServer, int]]:
    """A server whose TLS port requires a client certificate of the test CA
    (its plain port is for inspection only)."""
    port = find_free_port()
    args = [
        "--tls-port", str(port),
        "--tls-cert-file", str(certs / "server.crt"),
        "--tls-key-file", str(certs / "server.key"),
        "--tls-ca-cert-file", str(certs / "ca.crt"),
        "--tls-auth-clients", "yes",
    ]  # fmt: skip
    try:
        server = RedisServer(extra_args=args)
    except Exception as exc:  # a redis-server built without TLS
        pytest.skip(f"redis-server cannot serve TLS here: {exc}")
    with server:
        yield server, port


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    """A server with a password for `default` and an ACL user `app`/`app-pw`."""
    with RedisServer(password="default-pw") as server:
        server.command("ACL", "SETUSER", "app", "on", ">app-pw", "~*", "+@all")
        yield server


# -- #2: the twin of a user's client uses exactly its connection settings -------------


def test_the_async_twin_of_a_unix_socket_client_uses_that_socket_and_db(
    unix_server: RedisServer,
) -> None:
    path = unix_server.socket_path  # type: ignore[attr-defined]
    prefix = f"u{uuid.uuid4().hex[:8]}"
    client = redis.Redis(unix_socket_path=path, db=3, client_name="twin-unix")
    engine = ContextEngine(redis_client=client, key_prefix=prefix)
    assert asyncio.run(async_round_trip(engine)) == "async t"
    # only the asyncio twin has connected so far: the keys landed in db 3 of
    # the server behind the socket
    assert keys_in_db(unix_server, 3, prefix)
    assert not keys_in_db(unix_server, 0, prefix)
    assert sync_round_trip(engine, "t2") == "sync t2"
    client.close()


def test_the_twins_connections_are_the_servers_unix_socket_clients(
    unix_server: RedisServer,
) -> None:
    path = unix_server.socket_path  # type: ignore[attr-defined]
    client = redis.Redis(unix_socket_path=path, db=5, client_name="twin-live")
    engine = ContextEngine(redis_client=client, key_prefix=f"u{uuid.uuid4().hex[:8]}")

    async def main() -> list[dict[str, Any]]:
        await async_round_trip(engine)
        await engine.initialize()
        saver = ContextEngineSaver(engine)
        await saver.aget_tuple(THREAD)  # the twin is connected now
        live = named_connections(unix_server, "twin-live")
        await engine._aredis.close()
        return live

    live = asyncio.run(main())
    assert live and all(c["addr"].startswith(path) for c in live)
    assert all(int(c["db"]) == 5 for c in live)


def test_the_sync_twin_of_an_async_unix_socket_client_uses_that_socket(
    unix_server: RedisServer,
) -> None:
    path = unix_server.socket_path  # type: ignore[attr-defined]
    prefix = f"u{uuid.uuid4().hex[:8]}"
    aclient = aredis.Redis(unix_socket_path=path, db=4, client_name="twin-sync")
    engine = ContextEngine(redis_client=aclient, key_prefix=prefix)
    saver = ContextEngineSaver(engine.connect())
    cp, versions = one_checkpoint("sync")
    saver.put(THREAD, cp, {}, versions)
    live = named_connections(unix_server, "twin-sync")
    assert live and all(c["addr"].startswith(path) for c in live)
    assert all(int(c["db"]) == 4 for c in live)
    assert keys_in_db(unix_server, 4, prefix)
    engine.close_sync()


def tls_options(certs: Path) -> dict[str, Any]:
    return {
        "ssl_ca_certs": str(certs / "ca.crt"),
        "ssl_certfile": str(certs / "client.crt"),
        "ssl_keyfile": str(certs / "client.key"),
    }


def test_the_async_twin_of_a_tls_client_keeps_tls_and_its_certificates(
    tls_server: tuple[RedisServer, int], certs: Path
) -> None:
    server, port = tls_server
    prefix = f"s{uuid.uuid4().hex[:8]}"
    client = redis.Redis(
        host="127.0.0.1", port=port, db=2, ssl=True, **tls_options(certs)
    )
    engine = ContextEngine(redis_client=client, key_prefix=prefix)
    assert asyncio.run(async_round_trip(engine)) == "async t"
    assert keys_in_db(server, 2, prefix)
    assert sync_round_trip(engine, "t2") == "sync t2"


def test_the_sync_twin_of_a_rediss_async_client_keeps_tls_and_its_certificates(
    tls_server: tuple[RedisServer, int], certs: Path
) -> None:
    server, port = tls_server
    prefix = f"s{uuid.uuid4().hex[:8]}"
    query = "&".join(f"{k}={v}" for k, v in tls_options(certs).items())
    aclient = aredis.Redis.from_url(f"rediss://127.0.0.1:{port}/3?{query}")
    engine = ContextEngine(redis_client=aclient, key_prefix=prefix)
    assert sync_round_trip(engine) == "sync t"
    assert keys_in_db(server, 3, prefix)
    engine.close_sync()


def test_a_rediss_url_with_certificate_options_works_both_ways(
    tls_server: tuple[RedisServer, int], certs: Path
) -> None:
    server, port = tls_server
    prefix = f"s{uuid.uuid4().hex[:8]}"
    query = "&".join(f"{k}={v}" for k, v in tls_options(certs).items())
    engine = ContextEngine(
        redis_url=f"rediss://127.0.0.1:{port}/6?{query}", key_prefix=prefix
    )
    assert asyncio.run(async_round_trip(engine)) == "async t"
    assert sync_round_trip(engine, "t2") == "sync t2"
    keys = keys_in_db(server, 6, prefix)
    assert {k.split(b"}")[0] for k in keys} >= {
        f"{prefix}:{{t".encode(),
        f"{prefix}:{{t2".encode(),
    }


def test_the_twin_copies_every_connection_option_and_the_pool(
    acl_server: RedisServer,
) -> None:
    provider = UsernamePasswordCredentialProvider("app", "app-pw")
    retry = redis.retry.Retry(ConstantBackoff(0.01), 2)
    pool = redis.BlockingConnectionPool(
        host="127.0.0.1",
        port=acl_server.port,
        db=1,
        credential_provider=provider,
        protocol=3,
        health_check_interval=7,
        socket_timeout=4.5,
        socket_connect_timeout=2.5,
        socket_keepalive=True,
        client_name="twin-options",
        retry=retry,
        max_connections=7,
        timeout=3,
    )
    client = redis.Redis(connection_pool=pool)
    prefix = f"o{uuid.uuid4().hex[:8]}"
    engine = ContextEngine(redis_client=client, key_prefix=prefix)
    make = engine._aredis._make
    assert make is not None
    twin = make()
    tpool = twin.connection_pool
    assert type(tpool) is aredis.BlockingConnectionPool
    assert (tpool.max_connections, tpool.timeout) == (7, 3)
    assert tpool.connection_class is aconnection.Connection
    mine = pool.connection_kwargs
    theirs = tpool.connection_kwargs
    for option in (
        "host",
        "port",
        "db",
        "credential_provider",
        "protocol",
        "health_check_interval",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "client_name",
    ):
        assert theirs[option] == mine[option], option
    assert isinstance(theirs["retry"], redis.asyncio.retry.Retry)
    assert theirs["retry"].get_retries() == 2
    assert theirs["retry"]._backoff is retry._backoff
    # the credentials come from the provider: the default user's password is
    # unknown to the twin, so a round trip proves the provider is used
    assert asyncio.run(async_round_trip(engine)) == "async t"
    assert keys_in_db(acl_server, 1, prefix)


def test_cluster_clients_get_cluster_twins_with_their_nodes_and_options() -> None:
    host, _, port = cluster_url().removeprefix("redis://").partition(":")
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, int(port))],
        socket_timeout=4,
        client_name="twin-cluster",
        require_full_coverage=False,
    )
    engine = ContextEngine(redis_client=client, key_prefix=f"c{uuid.uuid4().hex[:8]}")
    assert engine.checkpoints.s.cluster  # type: ignore[attr-defined]
    make = engine._aredis._make
    assert make is not None
    twin = make()
    assert isinstance(twin, AsyncRedisCluster)
    assert twin.connection_kwargs["socket_timeout"] == 4
    assert twin.connection_kwargs["client_name"] == "twin-cluster"
    assert not twin.nodes_manager.require_full_coverage

    async def threads_in_many_slots() -> list[Any]:
        return [await async_round_trip(engine, f"t{i}") for i in range(6)]

    assert asyncio.run(threads_in_many_slots()) == [f"async t{i}" for i in range(6)]
    assert sync_round_trip(engine, "t9") == "sync t9"
    client.close()


def test_an_async_cluster_client_gets_a_sync_cluster_twin() -> None:
    host, _, port = cluster_url().removeprefix("redis://").partition(":")
    aclient = AsyncRedisCluster(
        startup_nodes=[AsyncClusterNode(host, int(port))], socket_timeout=3
    )
    engine = ContextEngine(redis_client=aclient, key_prefix=f"c{uuid.uuid4().hex[:8]}")
    assert [sync_round_trip(engine, f"t{i}") for i in range(6)] == [
        f"sync t{i}" for i in range(6)
    ]
    sync_twin = engine._redis.client
    assert isinstance(sync_twin, RedisCluster)
    assert (
        sync_twin.get_default_node().redis_connection.connection_pool.connection_kwargs[
            "socket_timeout"
        ]
        == 3
    )
    engine.close_sync()


def test_both_clients_given_are_used_as_they_are(unix_server: RedisServer) -> None:
    path = unix_server.socket_path  # type: ignore[attr-defined]
    client = redis.Redis(unix_socket_path=path)
    aclient = aredis.Redis(unix_socket_path=path)
    engine = ContextEngine(redis_client=client, aredis_client=aclient)
    assert engine._redis.client is client
    assert engine._aredis._given is aclient
    assert sync_round_trip(engine) == "sync t"


class OwnConnection(sconnection.Connection):
    """A connection class redis-py's asyncio client has no twin of."""


class OwnPool(redis.ConnectionPool):
    """A pool class (as Sentinel's) redis-py's asyncio client has no twin of."""


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (
            lambda: redis.Redis(
                connection_pool=redis.ConnectionPool(
                    connection_class=OwnConnection, host="127.0.0.1"
                )
            ),
            "OwnConnection",
        ),
        (lambda: redis.Redis(connection_pool=OwnPool(host="127.0.0.1")), "OwnPool"),
        (
            lambda: redis.Redis(host="127.0.0.1", ssl=True, ssl_validate_ocsp=True),
            "ssl_validate_ocsp",
        ),
    ],
    ids=["connection class", "pool class", "sync-only option"],
)
def test_a_client_without_an_exact_twin_is_refused_naming_what_to_pass(
    make: Any, named: str
) -> None:
    with pytest.raises(InvalidConfigError) as err:
        ContextEngine(redis_client=make())
    assert named in str(err.value)
    assert "aredis_client=" in str(err.value)


def test_a_standalone_client_of_a_cluster_node_is_refused_at_connect() -> None:
    host, _, port = cluster_url().removeprefix("redis://").partition(":")
    engine = ContextEngine(redis_client=redis.Redis(host=host, port=int(port)))
    with pytest.raises(InvalidConfigError, match="RedisCluster"):
        engine.connect()


@pytest.mark.parametrize(
    "options",
    [
        {"redis_url": "redis://127.0.0.1:1/0", "redis_client": "client"},
        {"aredis_client": "aclient"},
        {"redis_client": "not a client"},
        {"redis_client": "client", "aredis_client": "client"},
        {"redis_client": "client", "cluster": True},
    ],
    ids=["url and client", "async only", "not a client", "two sync", "cluster"],
)
def test_conflicting_client_options_are_refused(options: dict[str, Any]) -> None:
    values = {"client": redis.Redis(), "aclient": aredis.Redis()}
    given = {k: values.get(v, v) for k, v in options.items()}
    with pytest.raises(InvalidConfigError):
        ContextEngine(**given)


# -- #9: fallback only when the server cannot be reached -----------------------------


def start(engine: ContextEngine, use_async: bool) -> None:
    if use_async:
        asyncio.run(engine.initialize())
    else:
        engine.connect()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_wrong_password_raises_even_with_fallback(
    acl_server: RedisServer, use_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiecs_checkpoint")
    for url in (
        f"redis://:not-it@127.0.0.1:{acl_server.port}/0",
        f"redis://app:not-it@127.0.0.1:{acl_server.port}/0",
        f"redis://127.0.0.1:{acl_server.port}/0",  # no password at all
    ):
        engine = ContextEngine(redis_url=url, fallback=True)
        with pytest.raises(StoreError) as err:
            start(engine, use_async)
        assert "not-it" not in str(err.value) and "default-pw" not in str(err.value)
        assert f"127.0.0.1:{acl_server.port}" in str(err.value)
        assert "credentials" in str(err.value)
        assert engine.storage_backend == "redis"
    assert not any("falling back" in r.message for r in caplog.records)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_db_index_the_server_lacks_raises_even_with_fallback(
    acl_server: RedisServer, use_async: bool
) -> None:
    url = f"redis://:default-pw@127.0.0.1:{acl_server.port}/99"
    engine = ContextEngine(redis_url=url, fallback=True)
    with pytest.raises(InvalidConfigError) as err:
        start(engine, use_async)
    assert "default-pw" not in str(err.value)
    assert "no such database" in str(err.value)
    assert engine.storage_backend == "redis"


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_client_with_a_wrong_password_raises_even_with_fallback(
    acl_server: RedisServer, use_async: bool
) -> None:
    client = redis.Redis(host="127.0.0.1", port=acl_server.port, password="not-it")
    engine = ContextEngine(redis_client=client, fallback=True)
    with pytest.raises(StoreError) as err:
        start(engine, use_async)
    assert "not-it" not in str(err.value)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:{free}/0",
        "unix:///nonexistent/aiecs-test.sock",
        "redis://aiecs-nowhere.invalid:6379/0",
    ],
    ids=["refused", "no socket", "unknown host"],
)
def test_an_unreachable_server_falls_back_when_asked(
    url: str, use_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiecs_checkpoint")
    engine = ContextEngine(redis_url=url.format(free=find_free_port()), fallback=True)
    start(engine, use_async)
    assert engine.storage_backend == "memory"
    assert any("falling back" in r.message for r in caplog.records)


# -- #10: URLs are validated completely, before anything connects ------------------


BAD_URLS = {
    "db not a number": "redis://127.0.0.1:6379/abc",
    "db path too deep": "redis://127.0.0.1:6379/1/2",
    "negative db": "redis://127.0.0.1:6379/-1",
    "db query not a number": "redis://127.0.0.1:6379?db=x",
    "db path and query disagree": "redis://127.0.0.1:6379/1?db=2",
    "port out of range": "redis://:s3cret@127.0.0.1:99999/0",
    "port zero": "redis://127.0.0.1:0/0",
    "port not a number": "redis://127.0.0.1:http/0",
    "no host": "redis://:s3cret@/0",
    "unknown scheme": "http://127.0.0.1:6379/0",
    "no scheme": "127.0.0.1:6379",
    "unix without path": "unix://",
    "unix with a host": "unix://tmp/redis.sock",
    "unknown option": "redis://127.0.0.1:6379/0?sockettimeout=3",
    "bad option value": "redis://127.0.0.1:6379/0?socket_timeout=soon",
    "option twice": "redis://127.0.0.1:6379/0?db=1&db=1",
    "fragment": "redis://127.0.0.1:6379/0#x",
    "not a str": b"redis://127.0.0.1:6379/0",
}


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to connect."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("connected before validating the URL")

    monkeypatch.setattr(sconnection.AbstractConnection, "connect", refuse)
    monkeypatch.setattr(aconnection.AbstractConnection, "connect", refuse)


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_a_bad_url_is_a_typed_error_before_anything_connects(
    url: Any, no_connections: None
) -> None:
    for build in (
        lambda: ContextEngine(redis_url=url),
        lambda: ContextEngineSaver.from_conn_string(url),
    ):
        with pytest.raises(InvalidConfigError) as err:
            build()
        assert "s3cret" not in str(err.value)


def test_redis_port_from_the_environment_is_validated(
    monkeypatch: pytest.MonkeyPatch, no_connections: None
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", "99999")
    with pytest.raises(InvalidConfigError, match="port"):
        ContextEngine.from_env()


GOOD_URLS = {
    "redis://cache.local": ("cache.local", 6379, None, 0),
    "redis://u:p%40ss@cache.local:6380/15": ("cache.local", 6380, None, 15),
    "redis://[::1]:7000/2": ("::1", 7000, None, 2),
    "redis://h/3?socket_timeout=2.5&health_check_interval=10": ("h", 6379, None, 3),
    "rediss://h:6380/0?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem": ("h", 6380, None, 0),
    "unix:///run/redis.sock?db=4": (None, None, "/run/redis.sock", 4),
    "unix://:pw@/run/redis.sock": (None, None, "/run/redis.sock", 0),
    "redis://h:6379/?db=7": ("h", 6379, None, 7),
}


@pytest.mark.parametrize("url", GOOD_URLS, ids=GOOD_URLS.keys())
def test_valid_urls_parse_to_what_redis_py_connects_to(
    url: str, no_connections: None
) -> None:
    parsed = parse_url(url)
    assert (parsed.host, parsed.port, parsed.path, parsed.db) == GOOD_URLS[url]
    assert "p%40ss" not in parsed.server and "pw" not in parsed.server
    ContextEngine(redis_url=url)


# -- #17: one client per live event loop, closed with its loop ----------------------


def connections(server: RedisServer) -> int:
    inspect = redis.Redis(host=server.host, port=server.port)
    try:
        return len(inspect.client_list()) - 1
    finally:
        inspect.close()


def test_a_saver_used_from_many_event_loops_keeps_a_bounded_number_of_connections() -> (
    None
):
    with RedisServer() as server:
        engine = ContextEngine(redis_url=server.url)
        saver = ContextEngineSaver(engine)

        async def one_call() -> None:
            await saver.aget_tuple(THREAD)

        for _ in range(200):
            asyncio.run(one_call())
        assert engine._aredis.clients == 0
        assert connections(server) <= 2

        # loops closed without shutting down their async generators: their
        # clients are dropped when the next loop comes
        for _ in range(20):
            loop = asyncio.new_event_loop()
            loop.run_until_complete(one_call())
            loop.close()
        assert engine._aredis.clients <= 1
        engine.close_sync()


def test_cluster_clients_per_event_loop_are_closed_with_their_loop() -> None:
    engine = ContextEngine(redis_url=cluster_url(), key_prefix=f"l{uuid.uuid4().hex}")
    saver = ContextEngineSaver(engine)
    nodes = [
        redis.Redis(host=h, port=int(p))
        for h, p in (
            n.split(":")
            for n in RedisCluster.from_url(cluster_url()).nodes_manager.nodes_cache
        )
    ]
    before = sum(len(n.client_list()) for n in nodes)

    async def one_call() -> None:
        await engine.initialize()
        await saver.aget_tuple(THREAD)

    for _ in range(50):
        asyncio.run(one_call())
    assert engine._aredis.clients == 0
    after = sum(len(n.client_list()) for n in nodes)
    assert after <= before + 6
    for n in nodes:
        n.close()


# -- #14: programming errors are never disguised as store errors ----------------------


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_programming_error_in_a_redis_call_propagates_unchanged(
    monkeypatch: pytest.MonkeyPatch, use_async: bool
) -> None:
    """A bug (here an AttributeError raised inside redis-py's client) is neither
    wrapped into StoreError nor taken for an outage by `fallback=True`."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AttributeError("a bug, not an outage")

    async def abroken(*args: Any, **kwargs: Any) -> Any:
        broken()

    monkeypatch.setattr(redis.Redis, "execute_command", broken)
    monkeypatch.setattr(aredis.Redis, "execute_command", abroken)
    engine = ContextEngine(
        redis_url=redis_url(), key_prefix=f"p{uuid.uuid4().hex[:8]}", fallback=True
    )
    with pytest.raises(AttributeError, match="a bug, not an outage"):
        start(engine, use_async)
    assert engine.storage_backend == "redis" and engine.degraded_reason is None
    engine.close_sync()
