"""A write retried after a socket timeout applies once.

The server is stalled by a busy Lua script (as by `DEBUG SLEEP`, which Redis
disables by default) for longer than the client's `socket_timeout`: the client
gives up on its first attempt and retries while that attempt still waits,
unread, in the server's socket buffer. When the server wakes up it runs both.
Runs on the session's standalone Redis and Redis Cluster.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from redis.cluster import RedisCluster

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from aiecs_checkpoint.stores.encoding import enc
from tests.conftest import REDIS_INSTALLED, cluster_url, redis_url

pytestmark = pytest.mark.skipif(
    not REDIS_INSTALLED and not os.environ.get("CI"),
    reason="redis-server not installed (apt-get install redis-server redis-tools)",
)

STALL_S = 1.5
TIMEOUT_S = 0.3

BUSY = """
local s = redis.call('TIME')
repeat
  local n = redis.call('TIME')
until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) >= tonumber(ARGV[1])
return 1
"""


class Node:
    """A plain client of the server (or cluster node) holding one thread."""

    def __init__(self, store: str, prefix: str, thread: str) -> None:
        self.key = f"{prefix}:{{{enc(thread)}}}"
        self.cluster: Any = None
        if store == "cluster":
            self.cluster = RedisCluster.from_url(cluster_url())
            node = self.cluster.get_node_from_key(f"{self.key}:ids")
            self.client = redis.Redis(host=node.host, port=node.port)
        else:
            self.client = redis.Redis.from_url(redis_url())

    def stall(self) -> threading.Thread:
        """Keep the server busy for `STALL_S` (returns once it is busy)."""
        stall = threading.Thread(
            target=self.client.eval, args=(BUSY, 0, int(STALL_S * 1e6))
        )
        stall.start()
        time.sleep(0.1)
        return stall

    def elements(self) -> int:
        """Elements in the thread's element logs."""
        logs = self.client.scan_iter(match=f"{self.key}:log:*")
        return sum(int(self.client.llen(k)) for k in logs)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


@pytest.fixture
def node(store: str) -> Iterator[Node]:
    thread = f"retry-{uuid.uuid4().hex[:8]}"
    n = Node(store, f"r{uuid.uuid4().hex[:8]}", thread)
    n.thread = thread  # type: ignore[attr-defined]
    yield n
    n.close()


def url_with_timeout(store: str) -> str:
    base = cluster_url() if store == "cluster" else redis_url()
    return f"{base}{'&' if '?' in base else '?'}socket_timeout={TIMEOUT_S}"


def checkpoint(messages: list[str], step: int) -> tuple[Any, dict[str, str]]:
    cp = empty_checkpoint()
    version = f"{step + 1:032}.0"
    cp["channel_values"] = {"messages": messages}
    cp["channel_versions"] = {"messages": version}
    return cp, {"messages": version}


@pytest.mark.parametrize("store", ["redis", "cluster"])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_put_and_put_writes_retried_after_a_timeout_apply_once(
    store: str, use_async: bool, node: Node
) -> None:
    thread = node.thread  # type: ignore[attr-defined]
    prefix = node.key.split(":")[0]
    engine = ContextEngine(redis_url=url_with_timeout(store), key_prefix=prefix)
    saver = ContextEngineSaver(engine)
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    first = [f"m{i}" for i in range(50)]
    more = [f"n{i}" for i in range(20)]
    grown = [*first, *more]

    async def run() -> tuple[Any, Any]:
        await engine.initialize()
        cfg = await saver.aput(config, *with_meta(first, 0))
        read = await saver.aget_tuple(config)
        assert read is not None
        stall = node.stall()
        messages = [*read.checkpoint["channel_values"]["messages"], *more]
        cfg = await saver.aput(cfg, *with_meta(messages, 1))
        stall.join()
        stall = node.stall()
        await saver.aput_writes(cfg, [("a", 1), ("b", 2), ("c", 3)], "task")
        stall.join()
        return cfg, await saver.aget_tuple(config)

    def with_meta(messages: list[str], step: int) -> tuple[Any, Any, Any]:
        cp, versions = checkpoint(messages, step)
        return cp, {"source": "loop", "step": step}, versions

    if use_async:
        _, latest = asyncio.run(run())
    else:
        engine.connect()
        cfg = saver.put(config, *with_meta(first, 0))
        read = saver.get_tuple(config)
        assert read is not None
        stall = node.stall()
        messages = [*read.checkpoint["channel_values"]["messages"], *more]
        cfg = saver.put(cfg, *with_meta(messages, 1))
        stall.join()
        stall = node.stall()
        saver.put_writes(cfg, [("a", 1), ("b", 2), ("c", 3)], "task")
        stall.join()
        latest = saver.get_tuple(config)
    assert latest is not None
    assert latest.checkpoint["channel_values"]["messages"] == grown
    assert node.elements() == len(grown)  # each element stored once
    assert [(w[1], w[2]) for w in latest.pending_writes] == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
    ]
    engine.close_sync()


@pytest.mark.parametrize("store", ["redis", "cluster"])
def test_counter_updates_and_appends_retried_after_a_timeout_apply_once(
    store: str, node: Node
) -> None:
    session = node.thread  # type: ignore[attr-defined]
    prefix = node.key.split(":")[0]
    engine = ContextEngine(redis_url=url_with_timeout(store), key_prefix=prefix)

    async def run() -> tuple[Any, Any]:
        await engine.initialize()
        await engine.create_session(session, "user-1")
        await engine.update_session(session)  # the scripts are loaded
        await engine.add_conversation_message(session, "user", "first")
        stall = node.stall()
        assert await engine.update_session(
            session, increment_requests=True, add_processing_time=1.5
        )
        stall.join()
        stall = node.stall()
        assert await engine.add_conversation_message(session, "user", "hello")
        stall.join()
        got = await engine.get_session(session)
        history = await engine.get_conversation_history(session)
        await engine.close()
        return got, history

    got, history = asyncio.run(run())
    assert got is not None
    assert (got.request_count, got.total_processing_time) == (1, 1.5)
    assert [m.content for m in history] == ["first", "hello"]
