"""Redis-specific behaviour: round trips, TTL coherence, failures, key safety, config.

Runs against the session's real redis-server (and cluster) from conftest.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio.connection as aconnection
import redis.connection as sconnection
from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, StoreError
from aiecs_checkpoint.engine.engine import redis_url_from_env
from aiecs_checkpoint.stores.ops import Emit
from aiecs_checkpoint.stores.records import ListWrite, slot_runs
from aiecs_checkpoint.stores.redis.layout import pack_values
from tests.conftest import (
    REDIS_INSTALLED,
    cluster_url,
    engine_for,
    make_sync_saver,
    redis_url,
)
from tests.servers import RedisServer, find_free_port

pytestmark = pytest.mark.skipif(
    not REDIS_INSTALLED and not os.environ.get("CI"),
    reason="redis-server not installed (apt-get install redis-server redis-tools)",
)

REDIS_STORES = ["redis", "cluster"]


def checkpoint(values: dict[str, Any], versions: dict[str, str]) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    return cp


def grow_thread(saver: ContextEngineSaver, thread: str, n: int) -> dict[str, Any]:
    """n checkpoints, each adding one message to a list channel; returns last config."""
    config: dict[str, Any] = {
        "configurable": {"thread_id": thread, "checkpoint_ns": ""}
    }
    messages: list[str] = []
    for i in range(n):
        messages = [*messages, f"message {i}"]
        version = saver.get_next_version(None, None) if i == 0 else f"{i + 1:032}.0"
        cp = checkpoint({"messages": messages, "step": i}, {"messages": version})
        config = saver.put(
            config, cp, {"source": "loop", "step": i}, {"messages": version}
        )
        saver.put_writes(config, [("messages", f"w{i}")], f"task-{i}")
    return config


class SendCounter:
    """Counts packets sent to Redis by sync and async connections."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        sync_send = sconnection.AbstractConnection.send_packed_command
        async_send = aconnection.AbstractConnection.send_packed_command

        def counted_sync(conn: Any, command: Any, check_health: bool = True) -> None:
            self.count += 1
            sync_send(conn, command, check_health)

        async def counted_async(
            conn: Any, command: Any, check_health: bool = True
        ) -> None:
            self.count += 1
            await async_send(conn, command, check_health)

        monkeypatch.setattr(
            sconnection.AbstractConnection, "send_packed_command", counted_sync
        )
        monkeypatch.setattr(
            aconnection.AbstractConnection, "send_packed_command", counted_async
        )

    def reset(self) -> None:
        self.count = 0


@pytest.mark.parametrize("store", REDIS_STORES)
def test_hot_operations_take_one_round_trip_whatever_the_thread_length_sync(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_sync_saver(store) as saver:
        thread = f"rt-{uuid.uuid4()}"
        last = grow_thread(saver, thread, 300)
        saver.get_tuple({"configurable": {"thread_id": thread}})  # scripts loaded
        list(saver.list({"configurable": {"thread_id": thread}}, limit=10))
        counter = SendCounter(monkeypatch)
        cid = last["configurable"]["checkpoint_id"]
        for config in (
            {"configurable": {"thread_id": thread}},
            {"configurable": {"thread_id": thread, "checkpoint_id": cid}},
        ):
            counter.reset()
            assert saver.get_tuple(config) is not None
            assert counter.count == 1, config
        counter.reset()
        saver.put_writes(last, [("x", 1)], "t-extra")
        assert counter.count == 1
        counter.reset()
        version = f"{999:032}.0"
        messages = [f"message {i}" for i in range(301)]
        cp = checkpoint({"messages": messages}, {"messages": version})
        saver.put(last, cp, {"source": "loop", "step": 300}, {"messages": version})
        # on a cluster the thread registry and each thread-index entry of the
        # row (here only its key id: no indexed metadata) live in other slots:
        # one more call each
        assert counter.count == (3 if store == "cluster" else 1)
        counter.reset()
        assert (
            len(list(saver.list({"configurable": {"thread_id": thread}}, limit=10)))
            == 10
        )
        assert counter.count <= 2


@pytest.mark.parametrize("store", REDIS_STORES)
async def test_hot_operations_take_one_round_trip_whatever_the_thread_length_async(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_for(store)
    async with ContextEngineSaver(engine) as saver:
        thread = f"rt-{uuid.uuid4()}"
        last = await asyncio.to_thread(grow_thread, saver, thread, 300)
        config = {"configurable": {"thread_id": thread}}
        await saver.aget_tuple(config)
        [t async for t in saver.alist(config, limit=10)]
        await saver.aput_writes(last, [("warm", 1)], "t-warm")
        warm = f"{998:032}.0"
        cp = checkpoint({"step": 0}, {"step": warm})
        await saver.aput(last, cp, {"source": "loop", "step": 300}, {"step": warm})
        counter = SendCounter(monkeypatch)
        assert await saver.aget_tuple(config) is not None
        assert counter.count == 1
        counter.reset()
        await saver.aput_writes(last, [("x", 1)], "t-extra")
        assert counter.count == 1
        counter.reset()
        version = f"{999:032}.0"
        cp = checkpoint({"step": 1}, {"step": version})
        await saver.aput(last, cp, {"source": "loop", "step": 301}, {"step": version})
        assert counter.count == (3 if store == "cluster" else 1)
        counter.reset()
        assert len([t async for t in saver.alist(config, limit=10)]) == 10
        assert counter.count <= 2


def _keys(client: redis.Redis, prefix: str) -> list[bytes]:
    return list(client.scan_iter(match=f"{prefix}:*", count=1000))


def test_unchanged_channel_outlives_the_ttl_of_the_step_that_wrote_it() -> None:
    ttl_min = 1.5 / 60
    with make_sync_saver(
        "redis", engine_options={"ttl": {"default_ttl": ttl_min}}
    ) as s:
        thread = f"ttl-{uuid.uuid4()}"
        config: dict[str, Any] = {
            "configurable": {"thread_id": thread, "checkpoint_ns": ""}
        }
        v1 = f"{1:032}.0"
        cp = checkpoint(
            {"static": "written once", "counter": 0}, {"static": v1, "counter": v1}
        )
        config = s.put(config, cp, {"step": 0}, {"static": v1, "counter": v1})
        for i in range(1, 5):
            time.sleep(0.5)
            vi = f"{i + 1:032}.0"
            cp = checkpoint(
                {"static": "written once", "counter": i}, {"static": v1, "counter": vi}
            )
            config = s.put(config, cp, {"step": i}, {"counter": vi})
        latest = s.get_tuple({"configurable": {"thread_id": thread}})
        assert latest is not None
        assert latest.checkpoint["channel_values"] == {
            "static": "written once",
            "counter": 4,
        }


def test_refresh_on_read_keeps_a_thread_alive_and_an_expired_thread_leaves_no_key() -> (
    None
):
    ttl = {"default_ttl": 1.0 / 60, "refresh_on_read": True}
    prefix = f"ttl{uuid.uuid4().hex[:8]}"
    options = {"ttl": ttl, "key_prefix": prefix}
    with make_sync_saver("redis", engine_options=options) as s:
        thread = "kept alive"
        grow_thread(s, thread, 3)
        for _ in range(5):
            time.sleep(0.4)
            assert s.get_tuple({"configurable": {"thread_id": thread}}) is not None
        client = redis.Redis.from_url(redis_url())
        assert _keys(client, prefix)
        time.sleep(1.4)
        assert s.get_tuple({"configurable": {"thread_id": thread}}) is None
        # the registry and thread-index entries outlive the thread until a
        # listing meets it
        keys = s.engine.checkpoints.keys  # type: ignore[attr-defined]
        left = {keys.threads, keys.ix_keys, keys.ix("#p"), keys.thread(thread).ix}
        assert set(_keys(client, prefix)) == {k.encode() for k in left}
        assert list(s.list(None)) == []
        # only the store-wide set of index key ids stays
        assert _keys(client, prefix) == [keys.ix_keys.encode()]


@pytest.mark.parametrize("store", REDIS_STORES)
def test_hostile_thread_ids_and_namespaces_never_collide(store: str) -> None:
    ids = ["a", "a:b", "a{b}", "{a}", "a*", "a b", "ä∂", "a\\:b", "*", "a%3Ab"]
    with make_sync_saver(store) as s:
        for t in ids:
            for ns in ["", "n:1", "{x}*"]:
                cfg = {"configurable": {"thread_id": t, "checkpoint_ns": ns}}
                v = f"{1:032}.0"
                s.put(
                    cfg,
                    checkpoint({"who": f"{t}|{ns}"}, {"who": v}),
                    {"step": 0},
                    {"who": v},
                )
        for t in ids:
            for ns in ["", "n:1", "{x}*"]:
                cfg = {"configurable": {"thread_id": t, "checkpoint_ns": ns}}
                tup = s.get_tuple(cfg)
                assert tup is not None
                assert tup.checkpoint["channel_values"]["who"] == f"{t}|{ns}"
            root = list(s.list({"configurable": {"thread_id": t, "checkpoint_ns": ""}}))
            assert len(root) == 1
            assert len(list(s.list({"configurable": {"thread_id": t}}))) == 3
        s.delete_thread("a*")
        assert s.get_tuple({"configurable": {"thread_id": "a"}}) is not None
        assert s.get_tuple({"configurable": {"thread_id": "a*"}}) is None


def test_unreachable_server_at_start_raises_a_typed_error_naming_it() -> None:
    port = find_free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/2"
    with pytest.raises(StoreError) as err:
        ContextEngineSaver.from_conn_string(url).__enter__()
    assert f"127.0.0.1:{port}/2" in str(err.value)
    assert "s3cret" not in str(err.value)


async def test_wrong_password_is_a_typed_error_without_the_password() -> None:
    with RedisServer(password="right-one") as server:
        url = f"redis://:wrong-one@127.0.0.1:{server.port}/0"
        with pytest.raises(StoreError) as err:
            async with ContextEngineSaver.from_conn_string(url):
                pass
        assert "wrong-one" not in str(err.value) and "right-one" not in str(err.value)


def test_fallback_to_memory_is_explicit_and_loud(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://127.0.0.1:{find_free_port()}/0"
    with pytest.raises(StoreError):
        ContextEngine(redis_url=url).connect()
    caplog.set_level(logging.WARNING, logger="aiecs_checkpoint")
    engine = ContextEngine(redis_url=url, fallback=True).connect()
    assert engine.storage_backend == "memory"
    assert engine.health_check_sync()["status"] == "degraded"
    assert any("falling back" in r.message for r in caplog.records)


def test_outage_after_start_raises_then_the_next_call_reconnects() -> None:
    with RedisServer() as server:
        with ContextEngineSaver.from_conn_string(server.url) as saver:
            grow_thread(saver, "outage", 2)
            server.stop()
            started = time.monotonic()
            with pytest.raises(StoreError) as err:
                saver.get_tuple({"configurable": {"thread_id": "outage"}})
            assert f"127.0.0.1:{server.port}" in str(err.value)
            assert time.monotonic() - started < 10
            server.start()
            assert saver.get_tuple({"configurable": {"thread_id": "outage"}}) is None
            grow_thread(saver, "after", 1)
            assert saver.get_tuple({"configurable": {"thread_id": "after"}}) is not None


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def test_environment_configuration_follows_the_original_variables(
    clean_env: pytest.MonkeyPatch,
) -> None:
    assert redis_url_from_env() is None
    assert ContextEngine.from_env().storage_backend == "memory"
    clean_env.setenv("REDIS_HOST", "cache.local")
    clean_env.setenv("REDIS_PASSWORD", "p@ss")
    assert redis_url_from_env() == "redis://:p%40ss@cache.local:6379/1"
    clean_env.setenv("REDIS_URL", redis_url())
    with ContextEngineSaver.from_env() as saver:
        assert saver.engine.storage_backend == "redis"
        grow_thread(saver, f"env-{uuid.uuid4()}", 1)


async def test_conn_string_works_as_async_context_and_detects_a_cluster() -> None:
    async with ContextEngineSaver.from_conn_string(cluster_url()) as saver:
        thread = f"c-{uuid.uuid4()}"
        await asyncio.to_thread(grow_thread, saver, thread, 3)
        tup = await saver.aget_tuple({"configurable": {"thread_id": thread}})
        assert tup is not None and tup.metadata["step"] == 2


def test_existing_client_is_used_and_keys_carry_the_prefix() -> None:
    client = redis.Redis.from_url(redis_url())
    prefix = f"app{uuid.uuid4().hex[:6]}"
    with ContextEngineSaver(ContextEngine(redis_client=client, key_prefix=prefix)) as s:
        grow_thread(s, "shared", 2)
    keys = _keys(client, prefix)
    assert keys and all(k.startswith(f"{prefix}:".encode()) for k in keys)


# -- reads leave out the list elements the reader holds decoded -----------------------


def latest_messages(saver: ContextEngineSaver, thread: str) -> Any:
    tup = saver.get_tuple({"configurable": {"thread_id": thread}})
    assert tup is not None
    return tup.checkpoint["channel_values"]["messages"]


def put_messages(
    saver: ContextEngineSaver, thread: str, messages: list[Any], step: int
) -> dict[str, Any]:
    """A checkpoint of `thread` whose list channel holds `messages`."""
    latest = saver.get_tuple({"configurable": {"thread_id": thread}})
    parent: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    if latest is not None:
        parent = latest.config
    version = f"{step:032}.{uuid.uuid4().int % 10**8:016}"
    cp = checkpoint({"messages": messages}, {"messages": version})
    metadata = {"source": "loop", "step": step}
    return saver.put(parent, cp, metadata, {"messages": version})


class HeldReplies:
    """Records, per read that says what it holds, what the store left out and
    sent of `messages`."""

    def __init__(self, saver: ContextEngineSaver, monkeypatch: pytest.MonkeyPatch):
        self.seen: list[tuple[int, int]] = []
        store = saver.engine.checkpoints
        real = store.get

        def spy(*args: Any) -> Any:
            stored = yield from real(*args)
            if len(args) < 4 or not args[3]:
                return stored
            value = stored.values["messages"]
            self.seen.append((value.held, len(value.items)))
            return stored

        monkeypatch.setattr(store, "get", spy)


@pytest.mark.parametrize("store", REDIS_STORES)
def test_a_read_fetches_only_the_list_elements_it_does_not_hold(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_sync_saver(store) as saver:
        thread = f"held-{uuid.uuid4()}"
        grow_thread(saver, thread, 300)
        replies = HeldReplies(saver, monkeypatch)
        expected = [f"message {i}" for i in range(300)]
        assert latest_messages(saver, thread) == expected  # nothing held yet
        assert replies.seen == []
        assert latest_messages(saver, thread) == expected
        assert replies.seen == [(300, 0)]
        read = latest_messages(saver, thread)
        put_messages(saver, thread, [*read, "message 300"], 301)
        assert replies.seen[-1] == (300, 0)
        assert latest_messages(saver, thread) == [*expected, "message 300"]
        assert replies.seen[-1] == (300, 1)
        listed = list(saver.list({"configurable": {"thread_id": thread}}, limit=3))
        assert [len(t.checkpoint["channel_values"]["messages"]) for t in listed] == [
            301,
            300,
            299,
        ]


@pytest.mark.parametrize("store", REDIS_STORES)
def test_a_read_after_another_saver_wrote_the_thread_returns_its_messages(
    store: str,
) -> None:
    with make_sync_saver(store) as reader:
        writer = ContextEngineSaver(reader.engine)  # another process: no caches
        thread = f"other-{uuid.uuid4()}"
        grow_thread(reader, thread, 50)
        first = [f"message {i}" for i in range(50)]
        assert latest_messages(reader, thread) == first
        appended = [*first, "new 1", "new 2"]
        put_messages(writer, thread, appended, 100)
        assert latest_messages(reader, thread) == appended
        edited = ["edited 0", *appended[1:], "new 3"]
        assert latest_messages(writer, thread) == appended
        put_messages(writer, thread, edited, 101)
        assert latest_messages(reader, thread) == edited
        shorter = edited[10:20]
        put_messages(writer, thread, shorter, 102)
        assert latest_messages(reader, thread) == shorter
        writer.prune([thread], strategy="keep_latest")
        assert latest_messages(reader, thread) == shorter
        writer.delete_thread(thread)
        put_messages(writer, thread, ["fresh"], 1)
        assert latest_messages(reader, thread) == ["fresh"]
        listed = list(reader.list({"configurable": {"thread_id": thread}}))
        assert [t.checkpoint["channel_values"]["messages"] for t in listed] == [
            ["fresh"]
        ]


@pytest.mark.parametrize("lost", ["all", "one"])
def test_a_cache_dropped_between_request_and_decoding_costs_a_second_fetch(
    lost: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_sync_saver("redis") as saver:
        thread = f"evict-{uuid.uuid4()}"
        grow_thread(saver, thread, 40)
        expected = [f"message {i}" for i in range(40)]
        assert latest_messages(saver, thread) == expected
        store = saver.engine.checkpoints
        real = store.get

        def drop(*args: Any) -> Any:
            stored = yield from real(*args)
            if len(args) < 4 or not args[3]:
                return stored
            value = stored.values["messages"]
            if lost == "all":
                saver._reset_caches()
            else:
                key = (thread, "", "messages")
                saver._ctx.cache.forget_log(key, value.epoch, [7])
            return stored

        monkeypatch.setattr(store, "get", drop)
        counter = SendCounter(monkeypatch)
        assert latest_messages(saver, thread) == expected
        assert counter.count == 2
        real_list = store.list

        def drop_while_listing(*args: Any) -> Any:
            inner, reply = real_list(*args), None
            while True:
                try:
                    request = inner.send(reply)
                except StopIteration:
                    return
                if isinstance(request, Emit):
                    saver._reset_caches()
                reply = yield request

        monkeypatch.setattr(store, "list", drop_while_listing)
        listed = list(saver.list({"configurable": {"thread_id": thread}}, limit=5))
        assert [len(t.checkpoint["channel_values"]["messages"]) for t in listed] == [
            40,
            39,
            38,
            37,
            36,
        ]
        assert listed[0].checkpoint["channel_values"]["messages"] == expected


async def test_async_reads_leave_out_held_elements_and_refetch_what_was_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with ContextEngineSaver(engine_for("redis")) as saver:
        thread = f"aheld-{uuid.uuid4()}"
        await asyncio.to_thread(grow_thread, saver, thread, 60)
        config = {"configurable": {"thread_id": thread}}
        expected = [f"message {i}" for i in range(60)]
        first = await saver.aget_tuple(config)
        assert first is not None
        assert first.checkpoint["channel_values"]["messages"] == expected
        store = saver.engine.checkpoints
        real = store.get
        seen: list[tuple[int, int]] = []

        def spy(*args: Any) -> Any:
            stored = yield from real(*args)
            if len(args) < 4 or not args[3]:
                return stored
            value = stored.values["messages"]
            seen.append((value.held, len(value.items)))
            if len(seen) == 2:
                saver._reset_caches()
            return stored

        monkeypatch.setattr(store, "get", spy)
        for _ in range(2):
            again = await saver.aget_tuple(config)
            assert again is not None
            assert again.checkpoint["channel_values"]["messages"] == expected
        assert seen == [(60, 0), (60, 0)]
        listed = [t async for t in saver.alist(config, limit=4)]
        assert [len(t.checkpoint["channel_values"]["messages"]) for t in listed] == [
            60,
            59,
            58,
            57,
        ]


def test_a_put_sends_list_slots_as_runs_not_one_number_per_element() -> None:
    assert slot_runs([4, 5, 6, -1, -2, 0, 9, -3]) == (
        (4, 3),
        (-1, 2),
        (0, 1),
        (9, 1),
        (-3, 1),
    )
    assert slot_runs([]) == ()
    grown = ListWrite.of_slots("e", (*range(1000), -1), (("str", b"x"),))
    assert grown.slot_runs() == ((0, 1000), (-1, 1))
    assert len(pack_values("", {"messages": ("1", grown)})) < 200


@pytest.mark.parametrize("store", REDIS_STORES)
def test_listing_every_namespace_leaves_out_what_each_namespace_holds(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_sync_saver(store) as saver:
        thread = f"ns-{uuid.uuid4()}"
        want: dict[str, list[list[str]]] = {"": [], "sub": []}
        for ns in want:
            config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
            messages: list[str] = []
            for i in range(5):
                messages = [*messages, f"{ns or 'root'} {i}"]
                version = f"{i + 1:032}.0"
                cp = checkpoint({"messages": messages}, {"messages": version})
                metadata = {"source": "loop", "step": i}
                config = saver.put(config, cp, metadata, {"messages": version})
                want[ns].append(messages)
            tup = saver.get_tuple({"configurable": {**config["configurable"]}})
            assert tup is not None
        store_ = saver.engine.checkpoints
        real = store_.list
        sent: list[tuple[int, int]] = []

        def spy(*args: Any) -> Any:
            inner, reply = real(*args), None
            while True:
                try:
                    request = inner.send(reply)
                except StopIteration:
                    return
                if isinstance(request, Emit):
                    value = request.item.values["messages"]
                    sent.append((value.held, len(value.items)))
                reply = yield request

        monkeypatch.setattr(store_, "list", spy)
        listed = list(saver.list({"configurable": {"thread_id": thread}}))
        got: dict[str, list[list[str]]] = {"": [], "sub": []}
        for t in reversed(listed):
            ns = t.config["configurable"]["checkpoint_ns"]
            got[ns].append(t.checkpoint["channel_values"]["messages"])
        assert got == want
        assert sent == [(5, 0)] * 10
