"""TTL on the memory store, as on Redis: a thread expires TTL after its last
write (or read, with `refresh_on_read`), and an expired thread is gone from
every read path at once; ttl / cluster options are validated for every store.

The same scenarios run on Redis and Cluster, so the memory store is pinned to
behave as they do.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, InvalidConfigError
from aiecs_checkpoint.stores.memory.checkpoints import MemoryStore
from tests.conftest import _redis_param, make_sync_saver

TTL_S = 1.0
TTL = {"default_ttl": TTL_S / 60}

STORES = ["memory", _redis_param("redis"), _redis_param("cluster")]


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def put(saver: ContextEngineSaver, thread: str, step: int, run: str) -> Any:
    """One checkpoint of `thread` by run `run`, with a pending write."""
    latest = saver.get_tuple(cfg(thread))
    config = latest.config if latest else cfg(thread)
    checkpoint = empty_checkpoint()
    checkpoint["id"] = f"{step:08x}-0000-6000-8000-{uuid.uuid4().hex[:12]}"
    version = f"{step + 1:032}.0"
    checkpoint["channel_values"] = {"n": step}
    checkpoint["channel_versions"] = {"n": version}
    stored = saver.put(config, checkpoint, {"run_id": run}, {"n": version})
    saver.put_writes(stored, [("n", step)], f"task-{step}")
    return stored


def visible(saver: ContextEngineSaver, thread: str) -> dict[str, Any]:
    """Where a reader can see the thread."""
    return {
        "get": saver.get_tuple(cfg(thread)) is not None,
        "list": bool(list(saver.list(cfg(thread)))),
        "list_all": any(
            t.config["configurable"]["thread_id"] == thread for t in saver.list(None)
        ),
        "threads": thread in {i.thread_id for i in saver.list_threads(limit=100)},
    }


EVERYWHERE = {"get": True, "list": True, "list_all": True, "threads": True}
NOWHERE = dict.fromkeys(EVERYWHERE, False)


@pytest.mark.parametrize("store", STORES)
def test_an_expired_thread_is_gone_from_every_read_and_from_delete_for_runs(
    store: str,
) -> None:
    with make_sync_saver(store, engine_options={"ttl": TTL}) as saver:
        put(saver, "old", 1, "run-old")
        put(saver, "old", 2, "run-shared")
        old_expired = time.monotonic() + TTL_S + 0.05
        time.sleep(TTL_S / 2)
        young_lives = time.monotonic() + TTL_S
        put(saver, "young", 1, "run-shared")
        assert visible(saver, "old") == visible(saver, "young") == EVERYWHERE
        time.sleep(max(0.0, old_expired - time.monotonic()))
        assert visible(saver, "old") == NOWHERE
        assert visible(saver, "young") == EVERYWHERE
        assert time.monotonic() < young_lives  # the checks above were in time
        saver.delete_for_runs(["run-shared"])  # finds only the live thread's
        assert visible(saver, "young") == NOWHERE
        put(saver, "old", 3, "run-new")  # a new thread under the same id
        history = [t.metadata["run_id"] for t in saver.list(cfg("old"))]
        assert history == ["run-new"]


@pytest.mark.parametrize("store", STORES)
def test_writes_extend_a_threads_life_and_reads_do_only_with_refresh_on_read(
    store: str,
) -> None:
    with make_sync_saver(store, engine_options={"ttl": TTL}) as plain:
        stored = put(plain, "written", 1, "r")
        put(plain, "read", 1, "r")
        for i in range(4):
            time.sleep(TTL_S / 3)
            plain.put_writes(stored, [("n", i)], f"again-{i}")
            plain.get_tuple(cfg("read"))
        assert plain.get_tuple(cfg("written")) is not None
        assert plain.get_tuple(cfg("read")) is None
    ttl = {**TTL, "refresh_on_read": True}
    with make_sync_saver(store, engine_options={"ttl": ttl}) as refreshed:
        put(refreshed, "read", 1, "r")
        put(refreshed, "listed", 1, "r")
        for _ in range(4):
            time.sleep(TTL_S / 3)
            assert refreshed.get_tuple(cfg("read")) is not None
            assert list(refreshed.list(cfg("listed")))
        time.sleep(TTL_S * 1.3)
        assert refreshed.get_tuple(cfg("read")) is None
        assert not list(refreshed.list(cfg("listed")))


def test_a_thread_kept_alive_by_reads_stays_listed() -> None:
    ttl = {**TTL, "refresh_on_read": True}
    with make_sync_saver("memory", engine_options={"ttl": ttl}) as saver:
        put(saver, "kept", 1, "run-kept")
        for _ in range(4):
            time.sleep(TTL_S / 3)
            saver.get_tuple(cfg("kept"))
        assert visible(saver, "kept") == EVERYWHERE
        saver.delete_for_runs(["run-kept"])
        assert visible(saver, "kept") == NOWHERE


def test_expired_threads_free_their_memory() -> None:
    engine = ContextEngine(ttl=TTL)
    saver = ContextEngineSaver(engine)
    for i in range(20):
        put(saver, f"t{i}", 1, f"run-{i}")
    time.sleep(TTL_S * 1.2)
    put(saver, "fresh", 1, "run-fresh")
    store = engine.checkpoints
    assert isinstance(store, MemoryStore)
    assert set(store._threads) == {"fresh"}
    assert len(store._runs) == 1 and len(store._recent) == 1
    assert engine.run(store.count_checkpoints()) == 1


def test_memory_and_archive_restore_a_thread_the_ttl_expired() -> None:
    """With the archive behind it, an expired memory thread is restored on read,
    as one expired on Redis is."""
    with make_sync_saver("memory+archive", engine_options={"ttl": TTL}) as saver:
        put(saver, "archived", 1, "r")
        archive = saver.engine.archive
        assert archive is not None and archive.flush(10)
        time.sleep(TTL_S * 1.2)
        hot = saver.engine.checkpoints.hot  # type: ignore[attr-defined]
        assert saver.engine.run(hot.get("archived", "", None)) is None
        restored = saver.get_tuple(cfg("archived"))
        assert restored is not None and restored.checkpoint["channel_values"] == {
            "n": 1
        }


BAD_TTLS: dict[str, Any] = {
    "not_a_mapping": 5,
    "unknown_key": {"default_ttl": 1, "ttl": 2},
    "negative": {"default_ttl": -1},
    "zero": {"default_ttl": 0},
    "string": {"default_ttl": "5"},
    "bool": {"default_ttl": True},
    "infinite": {"default_ttl": float("inf")},
    "refresh_not_bool": {"default_ttl": 1, "refresh_on_read": "yes"},
}


@pytest.mark.parametrize("case", sorted(BAD_TTLS))
def test_invalid_ttl_is_refused_on_the_memory_store_too(case: str) -> None:
    with pytest.raises(InvalidConfigError, match="ttl"):
        ContextEngine(ttl=BAD_TTLS[case])
    with pytest.raises(InvalidConfigError, match="ttl"):
        ContextEngineSaver.from_env(ttl=BAD_TTLS[case])


def test_cluster_without_redis_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "REDIS_HOST", "CLICKHOUSE_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InvalidConfigError, match="cluster=True needs Redis"):
        ContextEngine(cluster=True)
    with pytest.raises(InvalidConfigError, match="REDIS_URL"):
        ContextEngineSaver.from_env(cluster=True)
    with pytest.raises(InvalidConfigError, match="cluster must be a bool"):
        ContextEngine(cluster="yes")  # type: ignore[arg-type]


def test_key_prefix_is_validated_and_harmless_on_the_memory_store() -> None:
    """One configuration serves with and without Redis (`from_env`), so a valid
    key_prefix is accepted on memory, where each engine's data is private."""
    with pytest.raises(InvalidConfigError, match="key_prefix"):
        ContextEngine(key_prefix="")
    with pytest.raises(InvalidConfigError, match="key_prefix"):
        ContextEngine(key_prefix=3)  # type: ignore[arg-type]
    a = ContextEngineSaver(ContextEngine(key_prefix="app"))
    b = ContextEngineSaver(ContextEngine(key_prefix="app"))
    put(a, "t", 1, "r")
    assert b.get_tuple(cfg("t")) is None
