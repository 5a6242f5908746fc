"""Serializers: nothing is stored in plaintext under EncryptedSerializer, and
`with_allowlist` clones share the storage.

The installed langgraph-checkpoint offers one ready-made cipher,
`EncryptedSerializer.from_pycryptodome_aes`, which imports `Crypto.Cipher.AES`
from pycryptodome (the `cryptography` package does not provide it); pycryptodome
is in the `test` extra.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, empty_checkpoint
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from aiecs_checkpoint.errors import BlockedTypeError, CorruptDataError
from tests.conftest import make_saver

KEY = b"1" * 32


def aes(
    serde: SerializerProtocol | None = None, key: bytes = KEY
) -> EncryptedSerializer:
    pytest.importorskip("Crypto.Cipher.AES", reason="needs pycryptodome")
    if serde is None:
        return EncryptedSerializer.from_pycryptodome_aes(key=key)
    return EncryptedSerializer.from_pycryptodome_aes(serde, key=key)


def ckpt_id(n: int) -> str:
    return f"{n:08x}-0000-6000-8000-000000000000"


def make_checkpoint(
    n: int, values: dict[str, Any], kept: dict[str, str] | None = None
) -> Checkpoint:
    """Checkpoint `n`: channels in `kept` keep that (older) version, others get n."""
    checkpoint = empty_checkpoint()
    checkpoint["id"] = ckpt_id(n)
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = {c: str(n) for c in values} | (kept or {})
    return checkpoint


def cfg(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


async def cold(
    saver: ContextEngineSaver, serde: SerializerProtocol
) -> ContextEngineSaver:
    """Another process's saver: its own engine (over the same storage), empty
    caches and the given serde (an engine refuses a second serializer)."""
    engine = saver.engine
    if engine.storage_backend == "memory":
        other = ContextEngine(store=engine.checkpoints, serde=serde)
    else:
        other = ContextEngine(
            redis_url=engine.redis_url, key_prefix=engine._prefix, serde=serde
        )
    await other.initialize()
    return ContextEngineSaver(other)


# -- what the store holds --------------------------------------------------------------


def walk(obj: Any, seen: set[int] | None = None) -> Iterator[str | bytes]:
    """Every str and bytes reachable from `obj` (attributes, slots, containers)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (str, bytes)):
        yield obj
    elif isinstance(obj, (bytearray, memoryview)):
        yield bytes(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk(k, seen)
            yield from walk(v, seen)
    elif isinstance(obj, (list, tuple, set, frozenset, deque)):
        for item in obj:
            yield from walk(item, seen)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from walk(getattr(obj, f.name), seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from walk(vars(obj), seen)
    elif hasattr(obj, "__slots__"):
        for name in obj.__slots__:
            if hasattr(obj, name):
                yield from walk(getattr(obj, name), seen)


def redis_data(engine: Any) -> Iterator[bytes]:
    """Every key and stored byte string of the engine's key prefix on Redis."""
    client = engine._redis.client
    for key in client.scan_iter(match=f"{engine._prefix}*", count=1000):
        yield key
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            yield client.get(key)
        elif kind == "hash":
            for field, value in client.hgetall(key).items():
                yield field
                yield value
        elif kind == "list":
            yield from client.lrange(key, 0, -1)
        elif kind == "set":
            yield from client.smembers(key)
        elif kind == "zset":
            for member, _ in client.zrange(key, 0, -1, withscores=True):
                yield member
        elif kind == "stream":
            for _, entry in client.xrange(key):
                for field, value in entry.items():
                    yield field
                    yield value
        else:  # pragma: no cover - a new kind of key would need reading here
            raise AssertionError(f"unread Redis key type {kind!r} for {key!r}")


def stored_data(saver: ContextEngineSaver) -> list[str | bytes]:
    """Everything the saver's store keeps, as str and bytes."""
    store = saver.engine.checkpoints
    if store.backend == "memory":
        return list(walk(store))
    if store.backend == "redis":
        return list(redis_data(saver.engine))
    raise AssertionError(f"no reader for {store.backend!r} storage")


def leaks(data: list[str | bytes], markers: list[str]) -> set[str]:
    """The markers found in plaintext (as str, or as UTF-8 bytes) in `data`."""
    found = set()
    for marker in markers:
        raw = marker.encode()
        for item in data:
            if (isinstance(item, str) and marker in item) or (
                isinstance(item, bytes) and raw in item
            ):
                found.add(marker)
                break
    return found


# -- the scenario ----------------------------------------------------------------------

M = {
    name: f"{name}-MARKER-{uuid.uuid4().hex[:12]}"
    for name in (
        "plain",
        "list_str",
        "list_dict",
        "message",
        "bytes",
        "meta_key",
        "meta_value",
        "meta_nested",
        "run_id",
        "write",
        "write_list",
        "error",
        "interrupt",
    )
}


async def put_markers(saver: ContextEngineSaver, thread: str) -> dict[str, Any]:
    """Two checkpoints and writes carrying every marker; returns what to read back."""
    first_list = [M["list_str"], {"text": M["list_dict"]}]
    grown = [*first_list, HumanMessage(content=M["message"], id="m1")]
    values_1 = {"plain": {"note": M["plain"]}, "msgs": first_list}
    values_2 = {
        "plain": {"note": M["plain"]},
        "msgs": grown,
        "blob": M["bytes"].encode(),
    }
    metadata = {
        "source": "loop",
        "step": 1,
        M["meta_key"]: M["meta_value"],
        "nested": {"deep": [M["meta_nested"]]},
        "run_id": M["run_id"],
    }
    first = await saver.aput(
        cfg(thread),
        make_checkpoint(1, values_1),
        metadata,
        {
            "plain": "1",
            "msgs": "1",
        },
    )
    second = await saver.aput(
        first,
        make_checkpoint(2, values_2, kept={"plain": "1"}),
        {**metadata, "step": 2},
        {"msgs": "2", "blob": "2"},
    )
    writes = [
        ("plain", {"w": M["write"]}),
        ("msgs", [AIMessage(content=M["write_list"], id="m2")]),
        ("__error__", M["error"]),
    ]
    await saver.aput_writes(second, writes, "task-1", "~0")
    await saver.aput_writes(second, [("__interrupt__", M["interrupt"])], "task-2")
    return {
        "first": first,
        "second": second,
        "values_1": values_1,
        "values_2": values_2,
        "metadata": metadata,
        "writes": [
            ("task-2", "__interrupt__", M["interrupt"]),
            ("task-1", "__error__", M["error"]),
            ("task-1", "plain", {"w": M["write"]}),
            ("task-1", "msgs", [AIMessage(content=M["write_list"], id="m2")]),
        ],
    }


async def check_plaintext_reads(
    reader: ContextEngineSaver, thread: str, want: dict[str, Any]
) -> None:
    latest = await reader.aget_tuple(cfg(thread))
    assert latest is not None
    assert latest.config == want["second"]
    assert latest.checkpoint["channel_values"] == want["values_2"]
    assert latest.metadata[M["meta_key"]] == M["meta_value"]  # type: ignore[literal-required]
    assert latest.metadata["nested"] == {"deep": [M["meta_nested"]]}  # type: ignore[typeddict-item]
    assert latest.metadata["run_id"] == M["run_id"]
    # pending writes in (task_path, task_id, idx) order: "" sorts before "~0"
    assert latest.pending_writes == want["writes"]
    first = await reader.aget_tuple(want["first"])
    assert first is not None
    assert first.checkpoint["channel_values"] == want["values_1"]
    listed = [t async for t in reader.alist(cfg(thread))]
    assert [t.checkpoint["channel_values"] for t in listed] == [
        want["values_2"],
        want["values_1"],
    ]
    assert [t.metadata["step"] for t in listed] == [2, 1]
    found = [
        t
        async for t in reader.alist(
            cfg(thread), filter={M["meta_key"]: M["meta_value"]}
        )
    ]
    assert len(found) == 2


async def test_encrypted_serializer_stores_no_marker_in_plaintext_and_reads_back(
    store_name: str,
) -> None:
    serde = aes()
    async with make_saver(store_name, serde=serde) as saver:
        want = await put_markers(saver, "secret-thread")
        await saver.acopy_thread("secret-thread", "copied-thread")
        data = stored_data(saver)
        assert len(data) > 10  # the walk reached the stored records
        assert leaks(data, list(M.values())) == set()
        for reader in (saver, await cold(saver, aes())):
            await check_plaintext_reads(reader, "secret-thread", want)
        copied = await saver.aget_tuple(cfg("copied-thread"))
        assert copied is not None
        assert copied.checkpoint["channel_values"] == want["values_2"]


async def test_plain_serializer_control_the_store_walk_finds_every_marker(
    store_name: str,
) -> None:
    """Control for the test above: without encryption the same walk sees them.

    (The run id too: the store indexes only its digest, but the metadata that
    carries it is serialized, here without encryption.)
    """
    async with make_saver(store_name) as saver:
        want = await put_markers(saver, "plain-thread")
        await check_plaintext_reads(saver, "plain-thread", want)
        assert leaks(stored_data(saver), list(M.values())) == set(M.values())


async def test_encrypted_checkpoints_are_unreadable_with_another_key(
    store_name: str,
) -> None:
    async with make_saver(store_name, serde=aes()) as saver:
        want = await put_markers(saver, "thread")
        intruder = await cold(saver, aes(key=b"2" * 32))
        with pytest.raises(CorruptDataError, match="MAC check failed") as info:
            await intruder.aget_tuple(want["second"])
        assert isinstance(info.value, ValueError)


# -- with_allowlist --------------------------------------------------------------------


@dataclass
class Point:
    x: int
    y: int


POINT = (Point.__module__, "Point")

SAFE_VALUES: dict[str, Any] = {
    "json": {"a": [1, 2.5, "x"], "b": {"c": None, "d": True}},
    "when": datetime.datetime(2024, 5, 17, 12, 30, tzinfo=datetime.timezone.utc),
    "id": uuid.UUID(int=7),
    "msgs": [HumanMessage(content="hi", id="h1"), AIMessage(content="yo", id="a1")],
}


async def check_shared_storage(
    saver: ContextEngineSaver, clone: ContextEngineSaver
) -> None:
    """A put through either saver is read back, unchanged, through both."""
    assert clone.engine is saver.engine
    one = await saver.aput(
        cfg("shared"),
        make_checkpoint(1, SAFE_VALUES),
        {},
        {c: "1" for c in SAFE_VALUES},
    )
    two = await clone.aput(
        one,
        make_checkpoint(
            2, SAFE_VALUES, kept={c: "1" for c in SAFE_VALUES if c != "json"}
        ),
        {"by": "clone"},
        {"json": "2"},
    )
    await clone.aput_writes(two, [("json", {"w": 1})], "task")
    for reader in (saver, clone):
        latest = await reader.aget_tuple(cfg("shared"))
        assert latest is not None
        assert latest.config == two
        assert latest.checkpoint["channel_values"] == SAFE_VALUES
        assert latest.metadata["by"] == "clone"  # type: ignore[typeddict-item]
        assert latest.pending_writes == [("task", "json", {"w": 1})]
        first = await reader.aget_tuple(one)
        assert first is not None
        assert first.checkpoint["channel_values"] == SAFE_VALUES
        history = [t.config async for t in reader.alist(cfg("shared"))]
        assert history == [two, one]
    await clone.adelete_thread("shared")
    assert await saver.aget_tuple(cfg("shared")) is None


async def test_with_allowlist_on_default_saver_shares_storage_and_round_trips(
    saver: ContextEngineSaver,
) -> None:
    clone = saver.with_allowlist([("some", "module")])
    assert isinstance(clone, ContextEngineSaver)
    await check_shared_storage(saver, clone)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_with_allowlist_on_strict_serializer_returns_clone_sharing_storage(
    store_name: str, encrypted: bool
) -> None:
    strict: SerializerProtocol = JsonPlusSerializer(allowed_msgpack_modules=None)
    if encrypted:
        strict = aes(strict)
    async with make_saver(store_name, serde=strict) as saver:
        clone = saver.with_allowlist([("some", "module")])
        assert isinstance(clone, ContextEngineSaver)
        assert clone is not saver
        assert clone.serde is not saver.serde
        assert isinstance(clone.serde, type(saver.serde))
        await check_shared_storage(saver, clone)
        await check_shared_storage(clone, saver)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_with_allowlist_clone_decodes_allowed_type_its_origin_blocks(
    store_name: str, encrypted: bool
) -> None:
    """The clone applies its own allowlist, even to list elements the stricter
    saver already decoded (their decoded forms are not shared between them);
    the stricter saver refuses the type loudly, naming it."""
    strict: SerializerProtocol = JsonPlusSerializer(allowed_msgpack_modules=None)
    if encrypted:
        strict = aes(strict)
    async with make_saver(store_name, serde=strict) as saver:
        values = {"where": Point(1, 2), "path": [Point(0, 0), Point(3, 4)]}
        stored = await saver.aput(
            cfg("pts"),
            make_checkpoint(1, values),
            {},
            {
                "where": "1",
                "path": "1",
            },
        )
        with pytest.raises(BlockedTypeError, match=r"test_serde\.Point"):
            await saver.aget_tuple(stored)
        clone = saver.with_allowlist([POINT])
        allowed = await clone.aget_tuple(stored)
        assert allowed is not None
        assert allowed.checkpoint["channel_values"] == values
        # and the original stays strict after the clone decoded
        with pytest.raises(BlockedTypeError, match="with_allowlist"):
            await saver.aget_tuple(stored)
