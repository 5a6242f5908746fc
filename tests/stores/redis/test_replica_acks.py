"""`replica_acks`: put and put_writes return once replicas acknowledged them.

A standalone Redis with one replica, and a Redis Cluster with one replica per
master, started by the tests. A replica frozen with SIGSTOP keeps its link but
acknowledges nothing: a put then waits for it (and returns once it is thawed),
or raises `StoreError` when the timeout runs out first. On a Cluster only the
replica of the master holding the thread counts.
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

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, StoreError
from aiecs_checkpoint.stores.encoding import enc
from tests.conftest import REDIS_INSTALLED
from tests.servers import HOST, RedisCluster, RedisServer

pytestmark = pytest.mark.skipif(
    not REDIS_INSTALLED and not os.environ.get("CI"),
    reason="redis-server not installed (apt-get install redis-server redis-tools)",
)

THAW_S = 0.4
"""How long a replica stays frozen before a put that waits for it."""


def wait_for_link(replica: RedisServer, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while "master_link_status:up" not in str(replica.command("INFO", "replication")):
        if time.monotonic() > deadline:
            raise AssertionError(f"replica on {replica.port} never linked up")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and its replica."""
    with RedisServer() as primary:
        replica = RedisServer(extra_args=["--replicaof", HOST, str(primary.port)])
        try:
            wait_for_link(replica)
            yield primary, replica
        finally:
            replica.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(replicas=1) as c:
        yield c


def checkpoint(step: int) -> tuple[Any, Any, Any]:
    cp = empty_checkpoint()
    version = f"{step + 1:032}.0"
    cp["channel_values"] = {"messages": [f"m{i}" for i in range(step + 1)]}
    cp["channel_versions"] = {"messages": version}
    return cp, {"source": "loop", "step": step}, {"messages": version}


class Writer:
    """A saver on one thread, driving put / put_writes sync or async."""

    def __init__(self, url: str, use_async: bool, **options: Any) -> None:
        self.prefix = f"ra{uuid.uuid4().hex[:8]}"
        self.thread = f"t-{uuid.uuid4().hex[:8]}"
        self.engine = ContextEngine(redis_url=url, key_prefix=self.prefix, **options)
        self.saver = ContextEngineSaver(self.engine)
        self.use_async = use_async
        self.loop = asyncio.new_event_loop()
        self.config: Any = {
            "configurable": {"thread_id": self.thread, "checkpoint_ns": ""}
        }
        self.step = 0
        if use_async:
            self.loop.run_until_complete(self.engine.initialize())
        else:
            self.engine.connect()

    @property
    def tag(self) -> str:
        """The hash-tagged key prefix of the thread (one slot on a Cluster)."""
        return f"{self.prefix}:{{{enc(self.thread)}}}"

    def put(self) -> None:
        args = checkpoint(self.step)
        self.step += 1
        if self.use_async:
            cfg = self.loop.run_until_complete(self.saver.aput(self.config, *args))
        else:
            cfg = self.saver.put(self.config, *args)
        self.last = cfg

    def put_writes(self) -> None:
        writes = [("a", self.step), ("b", self.step)]
        if self.use_async:
            coro = self.saver.aput_writes(self.last, writes, f"task-{self.step}")
            self.loop.run_until_complete(coro)
        else:
            self.saver.put_writes(self.last, writes, f"task-{self.step}")

    def close(self) -> None:
        self.engine.close_sync()
        self.loop.run_until_complete(self.engine.close())
        self.loop.close()


def snapshot(port: int, match: str, cluster: bool = False) -> dict[bytes, Any]:
    """Every key matching `match` on the server at `port`, with its value (not
    DUMP: a replica may lay out the same hash in another order)."""
    client = redis.Redis(host=HOST, port=port)
    if cluster:
        client.execute_command("READONLY")  # a cluster replica's own keys
    read: dict[bytes, Any] = {
        b"hash": client.hgetall,
        b"zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        b"set": client.smembers,
        b"list": lambda k: client.lrange(k, 0, -1),
        b"string": client.get,
    }
    try:
        return {k: read[client.type(k)](k) for k in client.scan_iter(match=match)}
    finally:
        client.close()


def thaw_later(replica: RedisServer, thawed: list[float]) -> threading.Timer:
    """Resume `replica` after `THAW_S`, noting when."""

    def thaw() -> None:
        thawed.append(time.monotonic())
        replica.resume()

    timer = threading.Timer(THAW_S, thaw)
    timer.start()
    return timer


def waits_for(replica: RedisServer, call: Any) -> float:
    """Freeze `replica`, run `call` (thawing the replica meanwhile); return how
    long after the thaw the call returned (negative: before it)."""
    thawed: list[float] = []
    replica.pause()
    timer = thaw_later(replica, thawed)
    try:
        call()
        returned = time.monotonic()
    finally:
        timer.join()
        replica.resume()
    return returned - thawed[0]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_with_replica_acks_put_and_put_writes_return_once_the_replica_has_them(
    pair: tuple[RedisServer, RedisServer], use_async: bool
) -> None:
    """A put (then a put_writes) made while the replica is frozen returns only
    after it was thawed, and the replica then holds exactly what the primary
    holds for the thread."""
    primary, replica = pair
    writer = Writer(primary.url, use_async, replica_acks=1, replica_acks_timeout=10)
    try:
        writer.put()
        assert waits_for(replica, writer.put) >= 0
        assert snapshot(replica.port, f"{writer.prefix}*") == snapshot(
            primary.port, f"{writer.prefix}*"
        )
        assert waits_for(replica, writer.put_writes) >= 0
        assert snapshot(replica.port, f"{writer.prefix}*") == snapshot(
            primary.port, f"{writer.prefix}*"
        )
    finally:
        writer.close()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_with_replica_acks_a_replica_that_does_not_answer_makes_writes_raise(
    pair: tuple[RedisServer, RedisServer], use_async: bool
) -> None:
    """With the replica frozen, put and put_writes raise `StoreError` (naming
    replica_acks) once the timeout has passed; thawed, they succeed again."""
    primary, replica = pair
    writer = Writer(primary.url, use_async, replica_acks=1, replica_acks_timeout=0.2)
    try:
        writer.put()
        replica.pause()
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="replica_acks"):
                writer.put()
            assert time.monotonic() - started >= 0.2
            with pytest.raises(StoreError, match="replica_acks"):
                writer.put_writes()
        finally:
            replica.resume()
        writer.put()
        writer.put_writes()
    finally:
        writer.close()


def test_more_replica_acks_than_replicas_makes_every_write_raise(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    """Two acknowledgements asked of a server with one replica: never met."""
    primary, _ = pair
    writer = Writer(primary.url, False, replica_acks=2, replica_acks_timeout=0.1)
    try:
        with pytest.raises(StoreError, match="1 of the 2 replicas"):
            writer.put()
    finally:
        writer.close()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_on_a_cluster_replica_acks_wait_for_the_replica_of_the_threads_master(
    cluster: RedisCluster, use_async: bool
) -> None:
    """The thread's master's replica frozen: a put waits for it (or raises
    once the timeout passed). Another master's replica frozen: no effect."""
    waiting = Writer(cluster.url, use_async, replica_acks=1, replica_acks_timeout=10)
    hasty = Writer(cluster.url, use_async, replica_acks=1, replica_acks_timeout=0.2)
    try:
        for writer in (waiting, hasty):
            writer.put()
        master = cluster.master_for_slot(cluster.slot_of(f"{waiting.tag}:ids"))
        own = cluster.replicas_of(master)[0]
        assert waits_for(own, waiting.put) >= 0
        assert waits_for(own, waiting.put_writes) >= 0
        assert snapshot(own.port, f"{waiting.tag}*", cluster=True) == snapshot(
            master.port, f"{waiting.tag}*"
        )
        master = cluster.master_for_slot(cluster.slot_of(f"{hasty.tag}:ids"))
        own = cluster.replicas_of(master)[0]
        other = next(
            cluster.replicas_of(m)[0] for m in cluster.masters() if m is not master
        )
        other.pause()
        try:
            hasty.put()
            hasty.put_writes()
        finally:
            other.resume()
        own.pause()
        try:
            with pytest.raises(StoreError, match="replica_acks"):
                hasty.put()
            with pytest.raises(StoreError, match="replica_acks"):
                hasty.put_writes()
        finally:
            own.resume()
    finally:
        waiting.close()
        hasty.close()
