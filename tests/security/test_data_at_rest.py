"""Data at rest under `EncryptedSerializer`: nothing but ids and names in clear.

A graph run and the engine's domain API put a unique marker (one per kind of
data) in state values, checkpoint metadata, pending writes, tracked records
(model usage, file operations, context updates), sessions, conversation
messages, agent messages, task contexts and `store_checkpoint` data, with one
AES `EncryptedSerializer` given to the engine (and so to the saver). Then every
raw Redis key and value (SCAN, then GET / HGETALL / LRANGE / ZRANGE / SMEMBERS
by type, and DUMP) and every row of every ClickHouse table of the archive is
scanned: no marker appears anywhere. What may appear in clear is `CLEAR`; the
scenario writes those fields with their own markers, which are allowed.

Controls: the same scenario without encryption finds every marker (so the scan
covers each kind), and a row written without encryption, or tampered with in
Redis, is refused on read with a typed error once encryption is configured.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import clickhouse_connect
import ormsgpack
import pytest
import redis
from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt
from typing_extensions import TypedDict

from aiecs_checkpoint import (
    ContextEngine,
    ContextEngineSaver,
    TaskContext,
    add_context_update,
    track_file_operation,
    track_model_usage,
)
from aiecs_checkpoint.errors import BlockedTypeError, CorruptDataError
from aiecs_checkpoint.stores.encoding import enc, pack_value, unpack_value, value_field
from tests.conftest import archive_settings, cluster_url, redis_url

pytest.importorskip("Crypto.Cipher.AES", reason="needs pycryptodome")

KEY = b"k" * 32

SECRET_KINDS = (
    "state_value",
    "state_message",
    "metadata",
    "write",
    "interrupt",
    "model_usage",
    "file_operation",
    "context_update",
    "session_metadata",
    "user_id",
    "conversation_message",
    "agent_message",
    "conversation_session_metadata",
    "task_context",
    "helper_checkpoint",
)
"""Kinds of user data that must never be readable at rest under encryption."""

CLEAR = (
    "thread ids (= session ids)",
    "checkpoint namespaces",
    "checkpoint ids and parent checkpoint ids",
    "channel names and channel versions",
    "task ids and task paths (node names)",
    "the channel and index of each pending write",
    "run keys (blake2b digest of the run id)",
    "session status, created / activity times, request and error counts, "
    "processing seconds",
    "conversation-session types",
    "store_checkpoint ids",
    "the serializer's type names (e.g. msgpack+aes)",
)
"""What stays in clear at rest, with or without encryption (ids and names).
The scenario puts its own markers in thread ids, node names, channel names,
task ids, conversation-session types and store_checkpoint ids: those may
appear, every `SECRET_KINDS` marker may not."""

STORES = ["redis+archive", "cluster", "memory+archive"]


def aes() -> EncryptedSerializer:
    return EncryptedSerializer.from_pycryptodome_aes(key=KEY)


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    note: str


def marks(run: str) -> dict[str, str]:
    """A marker per secret kind, unique to this run."""
    return {kind: f"SECRET{run}{kind.upper()}" for kind in SECRET_KINDS}


def build(saver: ContextEngineSaver, m: dict[str, str], clear: str) -> Any:
    def work(state: State) -> dict[str, Any]:
        track_model_usage(m["model_usage"], "provider", "chat")
        track_file_operation(f"out/{m['file_operation']}.md", "write")
        add_context_update("update", {"detail": m["context_update"]})
        answer = interrupt({"question": m["interrupt"]})
        return {"note": f"{m['write']} {answer}"}

    builder = StateGraph(State)
    builder.add_node(f"node{clear}", work)
    builder.add_edge(START, f"node{clear}")
    return builder.compile(checkpointer=saver)


def engine_on(store: str, prefix: str, database: str, serde: Any) -> ContextEngine:
    options: dict[str, Any] = {"serde": serde} if serde is not None else {}
    if store.endswith("+archive"):
        options["archive"] = archive_settings(database=database)
    if store.startswith("redis"):
        return ContextEngine(redis_url=redis_url(), key_prefix=prefix, **options)
    if store == "cluster":
        return ContextEngine(redis_url=cluster_url(), key_prefix=prefix, **options)
    return ContextEngine(**options)


async def scenario(
    engine: ContextEngine, serde: Any, m: dict[str, str], clear: str
) -> None:
    """Every kind of data, each holding its marker; `serde` given to the saver
    as it was to the engine."""
    thread = f"thread{clear}"
    async with ContextEngineSaver(
        engine, serde=serde, track_sessions=True, mirror_messages=True
    ) as saver:
        graph = build(saver, m, clear)
        config: Any = {
            "configurable": {"thread_id": thread, "user_id": m["user_id"]},
            "metadata": {"note": m["metadata"]},
        }
        first = {
            "messages": [HumanMessage(m["state_message"], id=f"msg{clear}")],
            "note": m["state_value"],
        }
        await graph.ainvoke(first, config)
        from langgraph.types import Command

        await graph.ainvoke(Command(resume="yes"), config)
        session = f"session{clear}"
        await engine.create_session(
            session, m["user_id"], {"secret": m["session_metadata"]}
        )
        await engine.add_conversation_message(
            session, "user", m["conversation_message"]
        )
        key = await engine.create_conversation_session(
            session,
            [{"id": f"agent{clear}", "type": "agent"}, {"id": "a2", "type": "agent"}],
            "agent_to_agent",
            {"secret": m["conversation_session_metadata"]},
        )
        await engine.add_agent_communication_message(
            key, f"agent{clear}", "agent", "analyst", m["agent_message"]
        )
        context = TaskContext(
            {"user_id": "u", "chat_id": "c", "metadata": {"s": m["task_context"]}},
            enable_persistence=False,
        )
        await engine.store_task_context(session, context)
        await engine.store_checkpoint(
            f"wf{clear}", f"cp{clear}", {"step": m["helper_checkpoint"]}
        )
        if engine.archive is not None:
            assert engine.archive.flush(timeout=30)


def redis_clients(store: str) -> list[redis.Redis]:
    """A client per node holding data (every master of the cluster)."""
    if store == "cluster":
        cluster = redis.RedisCluster.from_url(cluster_url())
        try:
            return [
                redis.Redis(host=n.host, port=n.port) for n in cluster.get_primaries()
            ]
        finally:
            cluster.close()
    if store.startswith("redis"):
        return [redis.Redis.from_url(redis_url())]
    return []


def raw_redis(store: str, prefix: str) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) for every key and every value of every key in Redis: the
    name, each element by type, and its DUMP."""
    seen_prefix = False
    for client in redis_clients(store):
        for key in client.scan_iter(count=1000):
            seen_prefix |= key.startswith(prefix.encode())
            name = key.decode(errors="replace")
            yield name, key
            kind = client.type(key).decode()
            parts: list[bytes] = []
            if kind == "string":
                parts = [client.get(key) or b""]
            elif kind == "hash":
                parts = [b for kv in client.hgetall(key).items() for b in kv]
            elif kind == "list":
                parts = list(client.lrange(key, 0, -1))
            elif kind == "zset":
                parts = [
                    member for member, _ in client.zrange(key, 0, -1, withscores=True)
                ]
            elif kind == "set":
                parts = list(client.smembers(key))
            elif kind == "stream":
                parts = [repr(e).encode() for e in client.xrange(key)]
            parts.append(client.dump(key) or b"")
            for part in parts:
                yield name, part
        client.close()
    if store != "memory+archive":
        assert seen_prefix, "the scan found none of the engine's keys"


def raw_clickhouse(database: str) -> Iterator[tuple[str, bytes]]:
    """(table, bytes) of every row of every table of the archive database."""
    settings = archive_settings(database=database)
    client = clickhouse_connect.get_client(
        host=settings.host,
        port=settings.port,
        username=settings.user,
        password=settings.password,
        autogenerate_session_id=False,
    )
    try:
        tables = client.query(
            "SELECT name FROM system.tables WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
        assert len(tables) >= 10, tables
        for (table,) in tables:
            data = client.raw_query(
                f"SELECT * FROM `{database}`.`{table}` FORMAT RowBinary"
            )
            assert data or table in ("context_thread_deletes",), f"{table} is empty"
            yield table, data
    finally:
        client.close()


def found(
    store: str, prefix: str, database: str, m: dict[str, str]
) -> dict[str, list[str]]:
    """Where each marker appears at rest (raw bytes, or base64 of them)."""
    needles = {
        kind: [v.encode(), base64.b64encode(v.encode())[:16]] for kind, v in m.items()
    }
    places: dict[str, list[str]] = {}
    sources = list(raw_redis(store, prefix))
    if store.endswith("+archive"):
        sources += list(raw_clickhouse(database))
    for where, data in sources:
        for kind, forms in needles.items():
            if any(form in data for form in forms):
                places.setdefault(kind, []).append(where)
    return places


async def run_and_scan(
    store: str, serde: SerializerProtocol | None
) -> dict[str, list[str]]:
    run = uuid.uuid4().hex[:12]
    prefix, database = f"sec{run}", f"t{run}"
    m = marks(run)
    engine = engine_on(store, prefix, database, serde)
    await scenario(engine, serde, m, f"CLEAR{run}")
    return found(store, prefix, database, m)


@pytest.mark.parametrize("store", STORES)
async def test_no_user_data_in_clear_at_rest_under_encryption(store: str) -> None:
    assert await run_and_scan(store, aes()) == {}


@pytest.mark.parametrize("store", STORES)
async def test_scan_finds_every_kind_without_encryption(store: str) -> None:
    """Control: the scan would see each kind's marker if it were in clear."""
    places = await run_and_scan(store, None)
    missing = set(SECRET_KINDS) - set(places)
    assert not missing, f"scan cannot see {sorted(missing)}"


# -- rows stored without encryption, tampered with, or crafted ------------------

EXT_CONSTRUCTOR_SINGLE_ARG = 0
"""LangGraph's msgpack extension code for `module.name(arg)`."""


def crafted(flag: Path) -> bytes:
    """msgpack naming `os.system("touch <flag>")`: runs when deserialized by a
    permissive reader."""
    call = ormsgpack.packb(["os", "system", f"touch {flag}"])
    return ormsgpack.packb({"x": ormsgpack.Ext(EXT_CONSTRUCTOR_SINGLE_ARG, call)})


def stored_instead(kind: str, original: tuple[str, bytes], flag: Path) -> bytes:
    """The raw channel value an attacker (or an old writer) leaves in Redis."""
    typ, data = original
    if kind == "tampered":
        return pack_value((typ, data[:-1] + bytes([data[-1] ^ 1])))
    if kind == "truncated":
        return pack_value((typ, data[: len(data) // 2]))
    if kind == "plaintext":
        return pack_value(JsonPlusSerializer().dumps_typed("hello"))
    if kind in ("crafted", "crafted_no_encryption"):
        return pack_value(("msgpack", crafted(flag)))
    name, ciphertext = aes().cipher.encrypt(crafted(flag))
    return pack_value((f"msgpack+{name}", ciphertext))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("tampered", CorruptDataError),
        ("truncated", CorruptDataError),
        ("plaintext", CorruptDataError),
        ("crafted", CorruptDataError),
        ("crafted_encrypted", BlockedTypeError),
        ("crafted_no_encryption", BlockedTypeError),
    ],
)
def test_bad_value_in_redis_is_refused_with_a_typed_error(
    kind: str, expected: type[Exception], tmp_path: Path
) -> None:
    """A channel value replaced in Redis (one ciphertext bit flipped, cut short,
    written unencrypted, or a msgpack ext naming os.system, in clear or
    encrypted with the key) is refused on read with a typed error by a saver
    configured with encryption: `CorruptDataError` for anything it cannot
    decrypt (plaintext included), `BlockedTypeError` for an ext outside the
    allowlist, also without encryption. Nothing runs."""
    flag = tmp_path / "pwned"
    prefix, thread = f"sec{uuid.uuid4().hex[:12]}", "t:{1}"
    encrypted = kind != "crafted_no_encryption"
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"x": "hello"}
    checkpoint["channel_versions"] = {"x": "1"}
    serde = aes() if encrypted else None
    engine = ContextEngine(redis_url=redis_url(), key_prefix=prefix, serde=serde)
    with ContextEngineSaver(engine, serde=serde) as saver:
        stored = saver.put(config, checkpoint, {}, {"x": "1"})
    client = redis.Redis.from_url(redis_url())
    key, field = f"{prefix}:{{{enc(thread)}}}:v", value_field("", "x", "1")
    original = unpack_value(client.hget(key, field))
    assert isinstance(original, tuple)
    assert ("aes" in original[0]) == encrypted
    client.hset(key, field, stored_instead(kind, original, flag))
    client.close()
    serde = aes() if encrypted else None
    reader = ContextEngine(redis_url=redis_url(), key_prefix=prefix, serde=serde)
    with ContextEngineSaver(reader, serde=serde) as saver:
        with pytest.raises(expected):
            saver.get_tuple(stored)
        with pytest.raises(expected):
            list(saver.list(config))
    assert not flag.exists()


@pytest.mark.parametrize("kind", ["tampered", "plaintext"])
def test_bad_archived_row_is_refused_on_restore(kind: str) -> None:
    """A thread restored from ClickHouse (a new process, empty hot store) whose
    archived channel value was cut short in ClickHouse, or which was archived
    without encryption, is refused with `CorruptDataError` by an encrypting
    reader."""
    database = f"t{uuid.uuid4().hex[:12]}"
    config: Any = {"configurable": {"thread_id": "t:{1}", "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"x": "hello"}
    checkpoint["channel_versions"] = {"x": "1"}
    serde = aes() if kind == "tampered" else None
    engine = ContextEngine(serde=serde, archive=archive_settings(database=database))
    with ContextEngineSaver(engine, serde=serde) as saver:
        stored = saver.put(config, checkpoint, {"m": 1}, {"x": "1"})
        assert engine.archive is not None and engine.archive.flush(timeout=30)
    if kind == "tampered":
        settings = archive_settings(database=database)
        client = clickhouse_connect.get_client(
            host=settings.host,
            port=settings.port,
            username=settings.user,
            password=settings.password,
            autogenerate_session_id=False,
        )
        client.command(
            f"ALTER TABLE `{database}`.`context_channel_values` "
            "UPDATE payload = substring(payload, 1, length(payload) - 1) WHERE 1",
            settings={"mutations_sync": 2},
        )
        client.close()
    reader = ContextEngine(serde=aes(), archive=archive_settings(database=database))
    with ContextEngineSaver(reader, serde=reader.serde) as saver:
        with pytest.raises(CorruptDataError):
            saver.get_tuple(stored)
