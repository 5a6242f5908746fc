"""With a TTL, the indexes that point into threads (the thread registry, the
run indexes) live exactly as long as the threads: a thread kept alive by reads
stays listed and deletable by run, and an expired thread's entries are cleaned
by the next listing (or health check) that meets them.

Runs on the session's standalone Redis and Redis Cluster.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from redis.cluster import RedisCluster

from aiecs_checkpoint import ContextEngineSaver
from aiecs_checkpoint.stores.records import run_key
from tests.conftest import REDIS_INSTALLED, cluster_url, make_sync_saver, redis_url

pytestmark = pytest.mark.skipif(
    not REDIS_INSTALLED and not os.environ.get("CI"),
    reason="redis-server not installed (apt-get install redis-server redis-tools)",
)

REDIS_STORES = ["redis", "cluster"]
TTL_S = 1.0


def put(saver: ContextEngineSaver, thread: str, run_id: str, step: int) -> None:
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    cp = empty_checkpoint()
    version = f"{step + 1:032}.0"
    cp["channel_values"] = {"step": step}
    cp["channel_versions"] = {"step": version}
    metadata = {"source": "loop", "step": step, "run_id": run_id}
    saver.put(config, cp, metadata, {"step": version})


def latest(saver: ContextEngineSaver, thread: str) -> Any:
    return saver.get_tuple({"configurable": {"thread_id": thread}})


@pytest.fixture(params=REDIS_STORES)
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def raw(store: str) -> Iterator[Any]:
    """A plain client of the store under test, to look at its keys."""
    client: Any
    if store == "cluster":
        client = RedisCluster.from_url(cluster_url())
    else:
        client = redis.Redis.from_url(redis_url())
    yield client
    client.close()


def keys_of(client: Any, prefix: str) -> set[str]:
    if isinstance(client, RedisCluster):
        found = client.scan_iter(match=f"{prefix}:*", target_nodes="all")
    else:
        found = client.scan_iter(match=f"{prefix}:*")
    return {k.decode() for k in found}


def ttl_saver(store: str, prefix: str) -> Any:
    ttl = {"default_ttl": TTL_S / 60, "refresh_on_read": True}
    return make_sync_saver(store, engine_options={"ttl": ttl, "key_prefix": prefix})


def test_a_thread_kept_alive_by_reads_stays_listed_and_deletable_by_run(
    store: str, raw: Any
) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}"
    with ttl_saver(store, prefix) as saver:
        put(saver, "kept", "run-kept", 0)
        put(saver, "kept", "run-kept", 1)
        put(saver, "dropped", "run-dropped", 0)
        deadline = time.monotonic() + 3 * TTL_S
        while time.monotonic() < deadline:
            time.sleep(TTL_S / 4)
            assert latest(saver, "kept") is not None
        assert latest(saver, "dropped") is None
        # the registry and run index never expire on their own
        assert raw.pttl(f"{prefix}:threads") == -1
        listed = saver.list_threads()
        assert [t.thread_id for t in listed] == ["kept"]
        assert {t.config["configurable"]["thread_id"] for t in saver.list(None)} == {
            "kept"
        }
        saver.delete_for_runs(["run-kept"])
        assert latest(saver, "kept") is None
        assert saver.list_threads() == []


@pytest.mark.parametrize("listing", ["list_threads", "list(None)", "health_check"])
def test_expired_threads_leave_no_index_entry_once_a_listing_meets_them(
    store: str, raw: Any, listing: str
) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}"
    with ttl_saver(store, prefix) as saver:
        for i in range(6):
            put(saver, f"gone-{i}", f"run-{i % 2}", 0)
        put(saver, "live", "run-0", 0)
        time.sleep(TTL_S / 2)
        put(saver, "live", "run-0", 1)
        time.sleep(TTL_S * 0.8)
        assert latest(saver, "gone-0") is None
        assert latest(saver, "live") is not None
        # the expired threads still have their index entries ...
        assert raw.zcard(f"{prefix}:threads") == 7
        if listing == "list_threads":
            assert [t.thread_id for t in saver.list_threads()] == ["live"]
        elif listing == "list(None)":
            found = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
            assert found == {"live"}
        else:
            assert saver.engine.health_check_sync()["total_checkpoints"] == 2
        # ... until a listing met them: only the live thread's entries remain
        assert [m.decode() for m in raw.zrange(f"{prefix}:threads", 0, -1)] == ["live"]
        run0, run1 = (f"{prefix}:run:{{{run_key(f'run-{i}')}}}" for i in (0, 1))
        assert raw.smembers(run0) == {b"live"}
        assert not raw.exists(run1)
        assert {k for k in keys_of(raw, prefix) if "gone-" in k} == set()


def test_a_thread_written_again_while_reaped_keeps_its_entries(store: str) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}"
    with ttl_saver(store, prefix) as saver:
        put(saver, "back", "run-back", 0)
        time.sleep(TTL_S * 1.3)
        store_ = saver.engine.checkpoints
        real_unlist = store_._unlist

        def write_while_reaping(thread_id: str, runs: Any) -> Any:
            put(saver, "back", "run-back", 1)  # the thread comes back meanwhile
            yield from real_unlist(thread_id, runs)

        store_._unlist = write_while_reaping  # type: ignore[method-assign]
        saver.list_threads()  # read "back" without checkpoints, then reaped it
        store_._unlist = real_unlist  # type: ignore[method-assign]
        assert [t.thread_id for t in saver.list_threads()] == ["back"]
        saver.delete_for_runs(["run-back"])
        assert latest(saver, "back") is None


def test_deleting_a_thread_takes_it_out_of_its_run_indexes(
    store: str, raw: Any
) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}"
    with make_sync_saver(store, engine_options={"key_prefix": prefix}) as saver:
        put(saver, "a", "run-x", 0)
        put(saver, "b", "run-x", 0)
        saver.delete_thread("a")
        members = raw.smembers(f"{prefix}:run:{{{run_key('run-x')}}}")
        assert members == {b"b"}
        saver.delete_for_runs(["run-x"])
        assert keys_of(raw, prefix) <= {f"{prefix}:threads", f"{prefix}:ixkeys"}


def test_checkpoint_and_session_keys_of_one_id_never_collide() -> None:
    from aiecs_checkpoint.stores.redis.domain_layout import DomainKeys
    from aiecs_checkpoint.stores.redis.layout import Keys

    tk = Keys("p").thread("x")
    thread_keys = {getattr(tk, f) for f in tk.__dataclass_fields__} - {tk.log_prefix}
    dk = DomainKeys("p")
    session_keys = {
        getattr(dk, name)("x")
        for name in (
            "session",
            "conversation",
            "message_ids",
            "runs",
            "run_order",
            "task_context",
            "helper_checkpoints",
            "helper_order",
        )
    } | {dk.base("x") + "ops", dk.base("x") + "csets"}
    assert all(k.startswith("p:{x}:") for k in thread_keys | session_keys)
    assert not thread_keys & session_keys
    assert not any(k.startswith(tk.log_prefix) for k in session_keys)
