"""The thread index behind filtered `list_threads`: every write keeps it in step
(put, delete, prune, copy, delete_for_runs, subgraph puts, TTL expiry), on every
store, and a filter that matches nothing does not visit the threads.

Consistency is checked two ways after each step: the store's raw index entry
for each user (memory: its sorted list; Redis: the `P:ix:{E}` zset) holds
exactly the threads whose latest checkpoint has that `user_id`, and the
filtered walk equals the unfiltered walk filtered by hand (same threads, same
order).
"""

from __future__ import annotations

import os
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from redis.cluster import RedisCluster

from aiecs_checkpoint import ContextEngineSaver
from aiecs_checkpoint.saver.index import PLAIN, canonical
from aiecs_checkpoint.stores import thread_model as model
from aiecs_checkpoint.stores.memory import checkpoints as memory_store
from tests.conftest import (
    REDIS_INSTALLED,
    _redis_param,
    cluster_url,
    make_sync_saver,
    redis_url,
)
from tests.saver.test_threads import cfg, ids, put, tick, walk
from tests.stores.redis.test_redis import SendCounter

USERS = ("u0", "u1", "u2")


def hot_store(saver: ContextEngineSaver) -> Any:
    store = saver.engine.checkpoints
    return getattr(store, "hot", store)


def indexed(saver: ContextEngineSaver, key: str, value: Any) -> set[str]:
    """The threads the store's raw index lists under (key, value)."""
    form = canonical(value)
    assert form is not None
    digest = PLAIN.digest(key, form)
    store = hot_store(saver)
    if store.backend == "memory":
        return {t for _, t in store._ix.get(digest, [])}
    client: Any
    if store.s.cluster:
        client = RedisCluster.from_url(cluster_url())
    else:
        client = redis.Redis.from_url(redis_url())
    try:
        return {m.decode() for m in client.zrange(store.keys.ix(digest), 0, -1)}
    finally:
        client.close()


def check(saver: ContextEngineSaver) -> None:
    """The raw index, then the filtered walks, against the unfiltered walk."""
    raw = {u: indexed(saver, "user_id", u) for u in USERS}
    everything = [i for p in walk(saver, 100) for i in p]
    for u in USERS:
        expected = [i.thread_id for i in everything if i.metadata.get("user_id") == u]
        assert raw[u] == set(expected), u
        assert [t for p in walk(saver, 2, {"user_id": u}) for t in ids(p)] == expected


def md(user: str, run: str, step: int = 0) -> dict[str, Any]:
    return {"source": "loop", "step": step, "user_id": user, "run_id": run}


def test_index_follows_every_write_and_rewrite(store_name: str) -> None:
    with make_sync_saver(store_name) as saver:
        for i in range(6):
            put(saver, f"t{i}", md(f"u{i % 2}", f"r{i}a"))
            tick()
        check(saver)
        put(saver, "t1", md("u0", "r1b", 1))  # a new value moves the thread
        tick()
        check(saver)
        saver.delete_thread("t2")
        check(saver)
        put(saver, "t3", md("u2", "r3b", 1))
        tick()
        saver.prune(["t3"], strategy="keep_latest")
        check(saver)
        saver.copy_thread("t0", "t9")
        tick()
        check(saver)
        saver.delete_for_runs(["r1b"])  # t1's latest is its u1 checkpoint again
        check(saver)
        saver.delete_for_runs(["r4a"])  # t4 emptied
        check(saver)
        saver.prune(["t5"], strategy="delete")
        check(saver)
        put(saver, "t6", md("u2", "r6a"), ns="child")  # only a subgraph: indexed
        tick()
        check(saver)
        put(saver, "t6", md("u1", "r6b"))  # the root namespace takes over
        tick()
        check(saver)
        put(saver, "t0", md("u2", "r0b"), ns="child")  # root stays the latest
        tick()
        check(saver)
        assert ids(saver.list_threads({"user_id": "u0"}))[0] == "t0"


def test_a_filter_that_matches_nothing_reads_no_thread_on_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with make_sync_saver("memory") as saver:
        for i in range(300):
            saver.put(cfg(f"m{i}"), empty_checkpoint(), md(f"x{i % 100}", "r"), {})
        reads = 0

        def counted(thread: model.Thread | None) -> Any:
            nonlocal reads
            reads += 1
            return model.latest_row(thread)

        monkeypatch.setattr(memory_store, "latest_row", counted)
        assert saver.list_threads({"user_id": "nobody"}) == []
        assert reads == 0
        found = saver.list_threads({"user_id": "x7"}, limit=10)
        assert ids(found) == ["m207", "m107", "m7"]
        assert reads == 3


def _filtered_calls(store: str, n: int, monkeypatch: pytest.MonkeyPatch) -> int:
    with make_sync_saver(store) as saver:
        for i in range(n):
            saver.put(cfg(f"m{i}"), empty_checkpoint(), md(f"x{i}", "r"), {})
        saver.list_threads({"user_id": "nobody"})  # scripts loaded, index built
        with monkeypatch.context() as m:
            counter = SendCounter(m)
            assert saver.list_threads({"user_id": "nobody"}) == []
            return counter.count


@pytest.mark.parametrize("store", [_redis_param("redis"), _redis_param("cluster")])
def test_a_filter_that_matches_nothing_costs_the_same_calls_at_any_size_on_redis(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _filtered_calls(store, 20, monkeypatch)
    large = _filtered_calls(store, 400, monkeypatch)
    # `ixkeys`, then the filter's entries: one call, one per entry on a cluster
    assert small == large == (3 if store == "cluster" else 2)


# -- TTL expiry (Redis; the memory store has no checkpoint TTL) ----------------------

TTL_S = 1.5


@pytest.mark.skipif(
    not REDIS_INSTALLED and not os.environ.get("CI"),
    reason="redis-server not installed (apt-get install redis-server redis-tools)",
)
@pytest.mark.parametrize("store", ["redis", "cluster"])
def test_expired_threads_are_never_listed_and_leave_the_index_once_met(
    store: str,
) -> None:
    prefix = f"x{uuid.uuid4().hex[:8]}"
    ttl = {"default_ttl": TTL_S / 60}
    options = {"ttl": ttl, "key_prefix": prefix}
    with make_sync_saver(store, engine_options=options) as saver:
        for i in range(4):
            put(saver, f"gone{i}", md("u0", "r"))
        time.sleep(TTL_S * 1.2)
        assert saver.get_tuple(cfg("gone0")) is None
        put(saver, "live", md("u0", "r"))  # a full TTL ahead of it
        # lazily: the expired threads' entries are still there ...
        assert indexed(saver, "user_id", "u0") == {"live"} | {
            f"gone{i}" for i in range(4)
        }
        # ... never listed, and gone once a filtered listing met them
        assert ids(saver.list_threads({"user_id": "u0"})) == ["live"]
        assert indexed(saver, "user_id", "u0") == {"live"}
        put(saver, "gone1", md("u0", "r"))  # written again: indexed again
        assert ids(saver.list_threads({"user_id": "u0"})) == ["gone1", "live"]
        assert indexed(saver, "user_id", "u0") == {"live", "gone1"}


def test_indexed_filters_match_exactly_the_values_equal_to_the_filters(
    store_name: str,
) -> None:
    values: dict[str, Any] = {
        "int": 1,
        "true": True,
        "float": 1.0,
        "text": "1",
        "decimal": Decimal(1),
        "other": 2,
        "none": None,
        "list": [1],
    }
    with make_sync_saver(store_name) as saver:
        for name, value in values.items():
            put(saver, name, {"step": 0, "k": value})
            tick()
        put(saver, "missing", {"step": 0})
        everything = [i for p in walk(saver, 100) for i in p]
        for wanted in (1, True, 1.5, "1", None, 2, Decimal(2)):
            expected = [
                i.thread_id
                for i in everything
                if "k" in i.metadata and i.metadata["k"] == wanted
            ]
            got = [t for p in walk(saver, 2, {"k": wanted}) for t in ids(p)]
            assert got == expected, wanted
