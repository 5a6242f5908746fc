"""Shared fixtures: every saver-level test runs once per store.

Stores: "memory" (embedded), "redis" (a real redis-server started for the
session on a free 127.0.0.1 port, or `REDIS_URL` when set) and "cluster" (a
real 3-master Redis Cluster started for the session). Each saver gets its own
key prefix, so tests never see each other's data. Tests take the `saver` /
`sync_saver` fixtures, or call `make_saver(store_name, ...)`, and so run on
every store without being copied.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from aiecs_checkpoint.stores.clickhouse.archive import ArchiveSettings
from tests.servers import RedisCluster, RedisServer
from tests.servers_clickhouse import ClickHouseServer, external_clickhouse_url

REDIS_INSTALLED = bool(shutil.which("redis-server") and shutil.which("redis-cli"))
"""Redis-backed stores need Debian's redis-server and redis-tools (`.ci/run`
installs them). Without them the Redis parameters are skipped with that reason
locally, and fail under CI=true, so CI can never skip them silently."""


def _redis_param(name: str) -> Any:
    external = name.startswith("redis") and bool(os.environ.get("REDIS_URL"))
    usable = REDIS_INSTALLED or external
    if usable or os.environ.get("CI"):
        return name
    reason = "redis-server not installed (apt-get install redis-server redis-tools)"
    return pytest.param(name, marks=pytest.mark.skip(reason=reason))


STORES = [
    "memory",
    _redis_param("redis"),
    _redis_param("cluster"),
    "memory+archive",
    _redis_param("redis+archive"),
]
"""Every store the saver-level tests run on; "+archive" adds the ClickHouse
archive (a real ClickHouse engine: `CLICKHOUSE_URL`, else the chdb front)."""

_servers: dict[str, Any] = {}


def redis_url() -> str:
    """URL of the session's standalone Redis (started on first use)."""
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if "redis" not in _servers:
        _servers["redis"] = RedisServer()
    return str(_servers["redis"].url)


def cluster_url() -> str:
    """URL of one node of the session's Redis Cluster (started on first use)."""
    if "cluster" not in _servers:
        _servers["cluster"] = RedisCluster()
    return str(_servers["cluster"].url)


def clickhouse() -> ClickHouseServer | None:
    """The session's ClickHouse front (None when `CLICKHOUSE_URL` names a server)."""
    if external_clickhouse_url():
        return None
    if "clickhouse" not in _servers:
        _servers["clickhouse"] = ClickHouseServer().start()
    return _servers["clickhouse"]  # type: ignore[no-any-return]


def archive_settings(**options: Any) -> ArchiveSettings:
    """Archive settings for the session's ClickHouse, in a fresh database."""
    options.setdefault("database", f"t{uuid.uuid4().hex[:12]}")
    options.setdefault("flush_interval", 0.05)
    url = external_clickhouse_url()
    if url:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        options.setdefault("host", parts.hostname or "localhost")
        options.setdefault("port", parts.port or 8123)
        options.setdefault("user", parts.username or "default")
        options.setdefault("password", parts.password or "")
    else:
        server = clickhouse()
        assert server is not None
        options.setdefault("host", server.host)
        options.setdefault("port", server.port)
    return ArchiveSettings(**options)


def engine_for(store: str, **options: Any) -> ContextEngine:
    """A fresh engine on `store`, isolated by a unique key prefix (and a
    fresh ClickHouse database with "+archive")."""
    if store.endswith("+archive"):
        options.setdefault("archive", archive_settings())
        store = store.removesuffix("+archive")
    if store == "memory":
        return ContextEngine(**options)
    prefix = options.pop("key_prefix", f"t{uuid.uuid4().hex[:10]}")
    if store == "redis":
        return ContextEngine(redis_url=redis_url(), key_prefix=prefix, **options)
    if store == "cluster":
        return ContextEngine(redis_url=cluster_url(), key_prefix=prefix, **options)
    raise ValueError(f"unknown store {store!r}")


@asynccontextmanager
async def make_saver(store: str, **kwargs: Any) -> AsyncIterator[ContextEngineSaver]:
    """A fresh saver on `store`, connected for async use and closed afterwards."""
    engine_options = kwargs.pop("engine_options", {})
    async with ContextEngineSaver(engine_for(store, **engine_options), **kwargs) as s:
        yield s


@contextmanager
def make_sync_saver(store: str, **kwargs: Any) -> Iterator[ContextEngineSaver]:
    """A fresh saver on `store`, built and connected outside any event loop."""
    engine_options = kwargs.pop("engine_options", {})
    with ContextEngineSaver(engine_for(store, **engine_options), **kwargs) as s:
        yield s


@pytest.fixture(scope="session", autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    for server in _servers.values():
        server.close() if isinstance(server, ClickHouseServer) else server.stop()
    _servers.clear()


@pytest.fixture(scope="session")
def clickhouse_server() -> ClickHouseServer:
    """The session's ClickHouse front (tests needing it skip under CLICKHOUSE_URL)."""
    server = clickhouse()
    if server is None:
        pytest.skip("CLICKHOUSE_URL names an external server")
    return server


@pytest.fixture(params=STORES)
def store_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def saver(store_name: str) -> AsyncIterator[ContextEngineSaver]:
    async with make_saver(store_name) as s:
        yield s


@pytest.fixture
def sync_saver(store_name: str) -> Iterator[ContextEngineSaver]:
    """A saver built outside any event loop, for the sync graph API."""
    with make_sync_saver(store_name) as s:
        yield s
