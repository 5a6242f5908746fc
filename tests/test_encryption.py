"""serde= covers everything stored: under EncryptedSerializer no plaintext remains."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from aiecs_checkpoint import ContextEngineSaver
from tests.conftest import make_saver, redis_url

MARKERS = [
    "VALUE-MARKER",
    "ITEM-MARKER",
    "META-KEY-MARKER",
    "META-VAL-MARKER",
    "WRITE-MARKER",
]


def encrypted() -> EncryptedSerializer:
    return EncryptedSerializer.from_pycryptodome_aes(key=b"k" * 32)


def strings_in(obj: Any, seen: set[int] | None = None) -> Iterator[bytes]:
    """Every str/bytes reachable from obj (containers, dataclasses, objects)."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, str):
        yield obj.encode()
    elif isinstance(obj, (bytes, bytearray)):
        yield bytes(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings_in(k, seen)
            yield from strings_in(v, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            yield from strings_in(v, seen)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from strings_in(getattr(obj, f.name), seen)
    elif hasattr(obj, "__dict__") and not callable(obj):
        yield from strings_in(vars(obj), seen)


async def write_markers(saver: ContextEngineSaver, thread: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "configurable": {"thread_id": thread, "checkpoint_ns": ""}
    }
    cp = empty_checkpoint()
    v = f"{1:032}.0"
    cp["channel_values"] = {"plain": "VALUE-MARKER", "msgs": ["ITEM-MARKER", "x"]}
    cp["channel_versions"] = {"plain": v, "msgs": v}
    metadata: Any = {"step": 0, "META-KEY-MARKER": "META-VAL-MARKER"}
    stored = await saver.aput(config, cp, metadata, {"plain": v, "msgs": v})
    await saver.aput_writes(stored, [("plain", "WRITE-MARKER")], "task-1")
    return stored


async def check_readable(saver: ContextEngineSaver, thread: str) -> None:
    tup = await saver.aget_tuple({"configurable": {"thread_id": thread}})
    assert tup is not None
    assert tup.checkpoint["channel_values"] == {
        "plain": "VALUE-MARKER",
        "msgs": ["ITEM-MARKER", "x"],
    }
    assert tup.metadata["META-KEY-MARKER"] == "META-VAL-MARKER"
    assert tup.pending_writes == [("task-1", "plain", "WRITE-MARKER")]


async def test_memory_store_keeps_no_plaintext_under_encryption() -> None:
    async with make_saver("memory", serde=encrypted()) as saver:
        thread = f"enc-{uuid.uuid4()}"
        await write_markers(saver, thread)
        await check_readable(saver, thread)
        blobs = list(strings_in(saver.engine.checkpoints))
        assert blobs
        for marker in MARKERS:
            assert not any(marker.encode() in b for b in blobs), marker


async def test_redis_keeps_no_plaintext_under_encryption() -> None:
    prefix = f"enc{uuid.uuid4().hex[:8]}"
    options = {"key_prefix": prefix}
    async with make_saver("redis", serde=encrypted(), engine_options=options) as saver:
        thread = f"enc-{uuid.uuid4()}"
        await write_markers(saver, thread)
        await check_readable(saver, thread)
    client = redis.Redis.from_url(redis_url())
    dump = b"".join(client.dump(k) or b"" for k in client.scan_iter(f"{prefix}:*"))
    assert dump
    for marker in MARKERS:
        assert marker.encode() not in dump, marker


async def test_with_allowlist_shares_storage_and_round_trips() -> None:
    serde = JsonPlusSerializer(allowed_msgpack_modules=[])
    async with make_saver("memory", serde=serde) as saver:
        strict = saver.with_allowlist([("tests", "allowed")])
        assert strict is not saver and strict.engine is saver.engine
        assert strict._cache is not saver._cache
        thread = f"al-{uuid.uuid4()}"
        await write_markers(saver, thread)
        await check_readable(strict, thread)
