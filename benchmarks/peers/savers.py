"""The savers the harness compares: how to open each one, which server it needs,
and how much it stored.

Every saver is opened through its package's public API; this package only through
`aiecs_checkpoint.ContextEngineSaver` / `ContextEngine`. Each run gets fresh
storage: the orchestrator empties the saver's server before the run (FLUSHALL,
a new Postgres database), SQLite gets a new file, the archive a new ClickHouse
database.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NONE = "none"
INMEMORY = "InMemorySaver"


@dataclass(frozen=True)
class SaverSpec:
    """One compared configuration."""

    key: str
    name: str
    servers: tuple[str, ...]
    module: str
    """A module that must import for the saver to run (else it is skipped)."""

    @property
    def redis_kind(self) -> str | None:
        for kind in ("redis", "redis-stack"):
            if kind in self.servers:
                return kind
        return None

    @property
    def in_process(self) -> bool:
        return not self.servers or self.servers == ("clickhouse",)

    def missing(self) -> str | None:
        """Why the saver cannot run in this interpreter (None when it can)."""
        try:
            found = importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else f"{self.module} is not importable here"


SPECS: tuple[SaverSpec, ...] = (
    SaverSpec("none", NONE, (), "langgraph"),
    SaverSpec("inmemory", INMEMORY, (), "langgraph.checkpoint.memory"),
    SaverSpec("ours-memory", "ours(memory)", (), "aiecs_checkpoint"),
    SaverSpec("ours-memory-archive", "ours(memory+archive)", ("clickhouse",), "chdb"),
    SaverSpec("ours-redis", "ours(redis)", ("redis",), "redis"),
    SaverSpec(
        "ours-redis-archive",
        "ours(redis+archive)",
        ("redis", "clickhouse"),
        "clickhouse_connect",
    ),
    SaverSpec("sqlite", "AsyncSqliteSaver", (), "langgraph.checkpoint.sqlite"),
    SaverSpec(
        "postgres", "AsyncPostgresSaver", ("postgres",), "langgraph.checkpoint.postgres"
    ),
    SaverSpec(
        "redis-official",
        "AsyncRedisSaver",
        ("redis-stack",),
        "langgraph.checkpoint.redis",
    ),
    SaverSpec(
        "plainredis", "plainredis", ("redis",), "langgraph_checkpoint_plainredis"
    ),
)
BY_KEY = {spec.key: spec for spec in SPECS}


@dataclass
class Context:
    """What a saver needs to open: endpoints of the run's servers."""

    redis: str | None = None
    redis_stack: str | None = None
    postgres: str | None = None
    clickhouse: dict[str, Any] | None = None
    tmpdir: str = ""

    def redis_url(self, spec: SaverSpec) -> str | None:
        kind = spec.redis_kind
        if kind == "redis":
            return self.redis
        if kind == "redis-stack":
            return self.redis_stack
        return None


@dataclass
class Opened:
    """An open saver (None for the no-checkpointer baseline) and its extras."""

    saver: Any
    engine: Any = None
    sqlite_path: str | None = None
    dsn: str | None = None


def _archive(ctx: Context) -> dict[str, Any]:
    assert ctx.clickhouse is not None, "the archive needs the ClickHouse front"
    return {**ctx.clickhouse, "database": f"bench{uuid.uuid4().hex[:10]}"}


@asynccontextmanager
async def open_saver(spec: SaverSpec, ctx: Context) -> AsyncIterator[Opened]:
    """Open a fresh saver of `spec` (set up, empty)."""
    key = spec.key
    if key == "none":
        yield Opened(None)
    elif key == "inmemory":
        from langgraph.checkpoint.memory import InMemorySaver

        yield Opened(InMemorySaver())
    elif key.startswith("ours-"):
        from aiecs_checkpoint import ContextEngine, ContextEngineSaver

        options: dict[str, Any] = {}
        if key.endswith("-archive"):
            options["archive"] = _archive(ctx)
        if key.startswith("ours-redis"):
            options["redis_url"] = ctx.redis
        engine = ContextEngine(**options)
        async with ContextEngineSaver(engine) as saver:
            yield Opened(saver, engine=engine)
    elif key == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        path = os.path.join(ctx.tmpdir, f"bench-{uuid.uuid4().hex[:8]}.sqlite")
        async with AsyncSqliteSaver.from_conn_string(path) as saver:
            await saver.setup()
            yield Opened(saver, sqlite_path=path)
    elif key == "postgres":
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        assert ctx.postgres is not None
        async with AsyncPostgresSaver.from_conn_string(ctx.postgres) as saver:
            await saver.setup()
            yield Opened(saver, dsn=ctx.postgres)
    elif key == "redis-official":
        from langgraph.checkpoint.redis.aio import AsyncRedisSaver

        # Its FT.SEARCH on a long thread outlasts redis-py's default 5 s timeout.
        args = {"socket_timeout": 600}
        async with AsyncRedisSaver.from_conn_string(
            ctx.redis_stack, connection_args=args
        ) as saver:
            await saver.asetup()
            yield Opened(saver)
    elif key == "plainredis":
        from langgraph_checkpoint_plainredis import AsyncRedisSaver as PlainSaver

        saver = PlainSaver(url=ctx.redis)
        try:
            yield Opened(saver)
        finally:
            await saver.aclose()
    else:
        raise ValueError(f"unknown saver {key!r}")


# -- bytes stored ----------------------------------------------------------------


def bytes_held(root: object) -> int:
    """Bytes of every distinct bytes/bytearray object reachable from `root`
    through containers and instance attributes: the serialized payload an
    in-process saver keeps. Generic on purpose (no knowledge of either saver's
    internals); decoded caches hold objects, not bytes, and are not counted."""
    seen: set[int] = set()
    total = 0
    stack: list[object] = [root]
    skip = (str, int, float, bool, type(None), type, Callable)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (bytes, bytearray)):
            total += len(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__name__ in (
            "deque",
            "SortedList",
        ):
            stack.extend(obj)  # type: ignore[call-overload]
        elif isinstance(obj, skip) or type(obj).__module__.startswith(
            ("threading", "asyncio", "_thread", "logging")
        ):
            continue
        else:
            attrs = getattr(obj, "__dict__", None)
            if isinstance(attrs, dict):
                stack.extend(attrs.values())
            for slot in getattr(type(obj), "__slots__", ()):
                if hasattr(obj, slot):
                    stack.append(getattr(obj, slot))
    return total


async def redis_memory(url: str) -> dict[str, int]:
    """used_memory, key count and the sum of MEMORY USAGE over every key."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("memory")
        keys = 0
        usage = 0
        async for key in client.scan_iter(count=1000):
            keys += 1
            usage += int(await client.memory_usage(key, samples=0) or 0)
        return {
            "used_memory": int(info["used_memory"]),
            "keys": keys,
            "memory_usage_sum": usage,
        }
    finally:
        await client.aclose()


async def postgres_bytes(dsn: str) -> int:
    """pg_total_relation_size (tables, indexes, TOAST) of every user table."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) "
            "FROM pg_stat_user_tables"
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def storage_snapshot(
    spec: SaverSpec, ctx: Context, opened: Opened
) -> dict[str, int]:
    """What the saver stores right now, in the measures that fit its backend."""
    if opened.saver is None:
        return {}
    url = ctx.redis_url(spec)
    if url is not None:
        return await redis_memory(url)
    if opened.dsn is not None:
        return {"pg_total_relation_size": await postgres_bytes(opened.dsn)}
    if opened.sqlite_path is not None:
        size = sum(
            Path(opened.sqlite_path + suffix).stat().st_size
            for suffix in ("", "-wal", "-journal")
            if Path(opened.sqlite_path + suffix).exists()
        )
        return {"file_bytes": size}
    return {"payload_bytes": bytes_held(opened.saver)}


def storage_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in after}


def new_tmpdir() -> str:
    return tempfile.mkdtemp(prefix="bench-run-")
