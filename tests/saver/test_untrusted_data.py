"""Stored values are data, never code: whoever can write to the store (Redis,
ClickHouse, a shared process) cannot make a reader import or call anything
outside the deserialization allowlist, and a value that cannot be decrypted
or decoded raises a typed error. Values are crafted and written straight into
the store, below the saver's serializer, as an attacker with write access
would; every store, sync and async API."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import ormsgpack
import pytest
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from aiecs_checkpoint.errors import BlockedTypeError, CorruptDataError
from aiecs_checkpoint.stores.records import WriteRow
from tests.conftest import make_saver
from tests.saver.test_serde import aes, cfg, make_checkpoint

# LangGraph's msgpack extension codes: a constructor called with one argument,
# and with positional arguments.
EXT_CONSTRUCTOR_SINGLE_ARG = 0
EXT_CONSTRUCTOR_POS_ARGS = 1


def crafted(marker: Path) -> bytes:
    """A msgpack value whose extensions name `os.system` and
    `subprocess.getoutput`: reading it with a permissive serializer runs
    `touch <marker>`."""
    command = f"touch {marker}"
    return ormsgpack.packb(
        {
            "x": ormsgpack.Ext(
                EXT_CONSTRUCTOR_SINGLE_ARG,
                ormsgpack.packb(["os", "system", command]),
            ),
            "y": [
                ormsgpack.Ext(
                    EXT_CONSTRUCTOR_POS_ARGS,
                    ormsgpack.packb(["subprocess", "getoutput", [command]]),
                )
            ],
        }
    )


def control_runs_code(marker: Path) -> None:
    """Control: LangGraph's default serializer does run the crafted value."""
    JsonPlusSerializer().loads_typed(("msgpack", crafted(marker)))
    assert marker.exists()
    marker.unlink()


SERDES = ["default", "explicit_permissive", "encrypted"]
"""The saver's serde: none given (the strict default), LangGraph's permissive
`JsonPlusSerializer()` given explicitly, and an `EncryptedSerializer` whose
inner serializer is LangGraph's permissive default (the attacker holds the
key: the allowlist still applies)."""


def serde_for(kind: str) -> SerializerProtocol | None:
    if kind == "default":
        return None
    if kind == "explicit_permissive":
        return JsonPlusSerializer()
    return aes()


def typed(saver: ContextEngineSaver, payload: bytes) -> tuple[str, bytes]:
    """`payload` as the store keeps it: encrypted with the saver's key when
    the saver encrypts (the attacker has the key)."""
    inner = saver.serde.inner  # type: ignore[attr-defined]
    cipher = getattr(inner, "cipher", None)
    if cipher is None:
        return "msgpack", payload
    name, ciphertext = cipher.encrypt(payload)
    return f"msgpack+{name}", ciphertext


async def write_raw(
    saver: ContextEngineSaver, thread: str, value: tuple[str, bytes]
) -> Any:
    """A checkpoint put through the saver, then a pending write of `value`
    put straight into the store; returns the checkpoint's config."""
    stored = await saver.aput(cfg(thread), make_checkpoint(1, {"a": 1}), {}, {"a": "1"})
    cid = stored["configurable"]["checkpoint_id"]
    row = WriteRow("evil-task", 0, "a", value, "")
    await saver.engine.arun(saver.engine.checkpoints.put_writes(thread, "", cid, [row]))
    return stored


async def read_everywhere(saver: ContextEngineSaver, config: Any) -> list[str]:
    """What each read path raised (sync and async)."""
    thread_cfg = {"configurable": {"thread_id": config["configurable"]["thread_id"]}}
    reads = [
        lambda: saver.get_tuple(config),
        lambda: saver.get_tuple(thread_cfg),
        lambda: list(saver.list(thread_cfg)),
    ]
    areads = [
        lambda: saver.aget_tuple(config),
        lambda: saver.aget_tuple(thread_cfg),
    ]
    raised = []
    for read in reads:
        with pytest.raises(CorruptDataError) as info:
            await asyncio.to_thread(read)
        raised.append(info)
    for aread in areads:
        with pytest.raises(CorruptDataError) as info:
            await aread()
        raised.append(info)
    with pytest.raises(CorruptDataError) as info:
        _ = [t async for t in saver.alist(thread_cfg)]
    raised.append(info)
    return [f"{type(i.value).__name__}: {i.value}" for i in raised]


@pytest.mark.parametrize("serde", SERDES)
async def test_a_crafted_value_in_the_store_runs_no_code_and_raises_blocked_type(
    store_name: str, serde: str, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    control_runs_code(marker)
    async with make_saver(store_name, serde=serde_for(serde)) as saver:
        config = await write_raw(saver, "victim", typed(saver, crafted(marker)))
        for error in await read_everywhere(saver, config):
            assert error.startswith("BlockedTypeError")
            assert "os.system" in error or "subprocess.getoutput" in error
            assert "with_allowlist" in error  # says how to allow a type
        assert not marker.exists()


async def test_a_crafted_conversation_message_runs_no_code(
    store_name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    async with make_saver(store_name) as saver:
        engine: ContextEngine = saver.engine
        await engine.add_conversation_message("s1", "user", "hello")
        blob = ("msgpack", crafted(marker))
        await engine.arun(engine.domain.append_message("s1", blob, 1000))
        with pytest.raises(BlockedTypeError, match=r"os\.system"):
            await engine.get_conversation_history("s1")
        assert not marker.exists()


async def test_a_tampered_ciphertext_raises_corrupt_data_naming_the_reason(
    store_name: str,
) -> None:
    async with make_saver(store_name, serde=aes()) as saver:
        name, ciphertext = saver.serde.dumps_typed({"w": 1})
        tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
        config = await write_raw(saver, "tampered", (name, tampered))
        for error in await read_everywhere(saver, config):
            assert error.startswith("CorruptDataError")
            assert "MAC check failed" in error


async def test_a_plaintext_value_under_encryption_is_refused(store_name: str) -> None:
    """LangGraph's EncryptedSerializer reads an unencrypted value silently: here
    a forged plaintext value is refused."""
    async with make_saver(store_name, serde=aes()) as saver:
        forged = JsonPlusSerializer().dumps_typed({"role": "admin"})
        config = await write_raw(saver, "forged", forged)
        for error in await read_everywhere(saver, config):
            assert error.startswith("CorruptDataError")
            assert "is not encrypted" in error


async def test_garbage_bytes_raise_corrupt_data_error(store_name: str) -> None:
    async with make_saver(store_name) as saver:
        config = await write_raw(saver, "garbage", ("msgpack", b"\xc1\xff\x00"))
        for error in await read_everywhere(saver, config):
            assert error.startswith("CorruptDataError")
            assert "could not be decoded" in error
        config = await write_raw(saver, "unknown", ("pickle", b"cos\nsystem\n"))
        for error in await read_everywhere(saver, config):
            assert error.startswith("CorruptDataError")
