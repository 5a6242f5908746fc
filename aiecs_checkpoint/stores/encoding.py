"""Binary encodings of store records, shared by Redis and the ClickHouse archive.

Pure: no I/O. A checkpoint row is a u32 header length, a header Redis's Lua
scripts read (parent id, the hash fields of the row's channel values and, for
rows written since the thread index exists, the row's index entries), then the
row as msgpack; a channel value is `l` + msgpack [epoch, runs] for a list
manifest or `t` + the serializer's type and bytes; a list element is msgpack
[type, bytes]; pending writes are length-prefixed frames Lua can merge without
decoding user bytes. The Redis store keeps these blobs in its hashes and logs,
and the archive stores the same blobs as row payloads, so a restore moves bytes
between the tiers without decoding a user value.

Ids, namespaces and channel names inside keys and fields are percent-encoded
(`enc`), so `:`, `{`, `}`, `*`, spaces and non-ASCII can neither collide nor
break a pattern.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import ormsgpack

from aiecs_checkpoint.stores.records import (
    CheckpointRow,
    DeltaEntry,
    ListItems,
    ListValue,
    ResolvedValue,
    StoredValue,
    Typed,
    Version,
    WriteRow,
)

_U32 = struct.Struct(">I")


@functools.lru_cache(maxsize=4096)
def enc(text: str) -> str:
    """Percent-encode an id for use inside a key or field: only [A-Za-z0-9_.~-%].

    Cached: every call of a thread encodes the same few ids and channel names.
    """
    return quote(text, safe="")


def member(ns: str, cid: str) -> str:
    return f"{enc(ns)}\0{cid}"


def version_key(version: Version) -> str:
    """A version as text that keeps its type: "s:..", "i:..", "f:..(repr)"."""
    if isinstance(version, bool) or not isinstance(version, (str, int, float)):
        raise TypeError(f"unsupported channel version {version!r}")
    if isinstance(version, str):
        return f"s:{version}"
    if isinstance(version, int):
        return f"i:{version}"
    return f"f:{version!r}"


def parse_version(text: str) -> Version:
    kind, _, raw = text.partition(":")
    return raw if kind == "s" else int(raw) if kind == "i" else float(raw)


def value_field(ns: str, channel: str, version: Version) -> str:
    return f"{enc(ns)}\0{enc(channel)}\0{version_key(version)}"


def channel_field(ns: str, channel: str) -> str:
    return f"{enc(ns)}\0{enc(channel)}"


# -- records -----------------------------------------------------------------------


def lua_pack(obj: Any) -> bytes:
    """msgpack that Redis's Lua `cmsgpack` can read: bytes travel as `str`.

    Redis bundles a cmsgpack without the `bin` type; Lua strings are
    binary-safe, so raw bytes are sent with the `str` header instead.
    """
    out = bytearray()
    _lua_pack(obj, out)
    return bytes(out)


def _lua_pack(obj: Any, out: bytearray) -> None:
    if obj is None:
        out.append(0xC0)
    elif isinstance(obj, bool):
        out.append(0xC3 if obj else 0xC2)
    elif isinstance(obj, int):
        out += ormsgpack.packb(obj)
    elif isinstance(obj, float):
        out += struct.pack(">Bd", 0xCB, obj)
    elif isinstance(obj, (str, bytes)):
        raw = obj.encode() if isinstance(obj, str) else obj
        n = len(raw)
        if n < 32:
            out.append(0xA0 | n)
        elif n < 0x100:
            out += struct.pack(">BB", 0xD9, n)
        elif n < 0x10000:
            out += struct.pack(">BH", 0xDA, n)
        else:
            out += struct.pack(">BI", 0xDB, n)
        out += raw
    elif isinstance(obj, (list, tuple)):
        n = len(obj)
        out += bytes([0x90 | n]) if n < 16 else struct.pack(">BI", 0xDD, n)
        for item in obj:
            _lua_pack(item, out)
    elif isinstance(obj, dict):
        n = len(obj)
        out += bytes([0x80 | n]) if n < 16 else struct.pack(">BI", 0xDF, n)
        for k, v in obj.items():
            _lua_pack(k, out)
            _lua_pack(v, out)
    else:
        raise TypeError(f"cannot pack {type(obj).__name__} for Lua")


def pack_value(value: StoredValue) -> bytes:
    """`l` + msgpack [epoch, runs] for a list (read by Lua), else `t` + u32 type
    length + type + the serializer's bytes (never decoded by Lua)."""
    if isinstance(value, ListValue):
        return b"l" + ormsgpack.packb([value.epoch, [list(r) for r in value.runs]])
    kind = value[0].encode()
    return b"t" + _U32.pack(len(kind)) + kind + value[1]


def unpack_value(blob: bytes) -> StoredValue:
    if blob[:1] == b"l":
        epoch, runs = ormsgpack.unpackb(blob[1:])
        return ListValue(epoch, tuple((int(s), int(e)) for s, e in runs))
    (n,) = _U32.unpack_from(blob, 1)
    return (blob[5 : 5 + n].decode(), blob[5 + n :])


def pack_item(item: Typed) -> bytes:
    return ormsgpack.packb([item[0], item[1]])


def unpack_item(blob: bytes) -> Typed:
    t, b = ormsgpack.unpackb(blob)
    return (t, b)


def _write_entry(w: WriteRow) -> list[Any]:
    return [w.task_id, w.idx, w.channel, w.value[0], w.value[1], w.task_path]


def _resolved_entry(v: ResolvedValue | None) -> list[Any] | None:
    if v is None:
        return None
    if isinstance(v, ListItems):
        runs = [list(r) for r in v.runs]
        return ["l", v.epoch, runs, [list(i) for i in v.items]]
    return ["t", v[0], v[1]]


def _resolved_from(data: list[Any] | None) -> ResolvedValue | None:
    if data is None:
        return None
    if data[0] == "l":
        runs = tuple((int(s), int(e)) for s, e in data[2])
        return ListItems(data[1], runs, tuple((t, b) for t, b in data[3]))
    return (data[1], data[2])


def _write_from(e: Sequence[Any]) -> WriteRow:
    return WriteRow(e[0], int(e[1]), e[2], (e[3], e[4]), e[5])


def pack_row(row: CheckpointRow) -> bytes:
    """A row: u32 header length, Lua-readable header [parent, [[ch, value field]]
    (, [index entry...])], then the row itself as msgpack.

    The index entries (`CheckpointRow.index`) live in the header only: the
    Redis scripts keep the thread index from them, and a header of two items
    (a row written before the index) reads back as `index` None."""
    base = {
        ch: [_resolved_entry(e.seed), [_write_entry(w) for w in e.writes]]
        for ch, e in row.delta_base.items()
    }
    vkeys = [
        [ch, value_field(row.checkpoint_ns, ch, v)] for ch, v in row.versions.items()
    ]
    header: list[Any] = [row.parent_id or "", vkeys]
    if row.index is not None:
        header.append(list(row.index))
    head = lua_pack(header)
    body = ormsgpack.packb(
        [
            row.checkpoint[0],
            row.checkpoint[1],
            row.metadata[0],
            row.metadata[1],
            row.parent_id or "",
            row.versions,
            row.run_key or "",
            list(row.delta_channels),
            base,
        ]
    )
    return _U32.pack(len(head)) + head + body


def unpack_row(thread_id: str, ns: str, cid: str, blob: bytes) -> CheckpointRow:
    (hlen,) = _U32.unpack_from(blob, 0)
    header = ormsgpack.unpackb(blob[4 : 4 + hlen])
    d = ormsgpack.unpackb(blob[4 + hlen :])
    base = {
        ch: DeltaEntry(
            seed=_resolved_from(seed), writes=tuple(_write_from(w) for w in writes)
        )
        for ch, (seed, writes) in d[8].items()
    }
    return CheckpointRow(
        thread_id=thread_id,
        checkpoint_ns=ns,
        checkpoint_id=cid,
        parent_id=d[4] or None,
        checkpoint=(d[0], d[1]),
        metadata=(d[2], d[3]),
        versions=dict(d[5]),
        run_key=d[6] or None,
        delta_channels=tuple(d[7]),
        delta_base=base,
        index=tuple(header[2]) if len(header) > 2 else None,
    )


def pack_writes(rows: Iterable[WriteRow]) -> bytes:
    """Writes as frames Lua can merge without decoding user bytes.

    Frame: u32 key length, key `task_id\\0idx`, u8 special flag, u32 entry
    length, msgpack entry.
    """
    out = bytearray()
    for w in rows:
        key = f"{w.task_id}\0{w.idx}".encode()
        entry = ormsgpack.packb(_write_entry(w))
        out += _U32.pack(len(key)) + key + bytes([w.idx < 0])
        out += _U32.pack(len(entry)) + entry
    return bytes(out)


def unpack_writes(blob: bytes | None) -> list[WriteRow]:
    rows: list[WriteRow] = []
    i = 0
    data = blob or b""
    while i < len(data):
        (klen,) = _U32.unpack_from(data, i)
        i += 4 + klen + 1
        (elen,) = _U32.unpack_from(data, i)
        i += 4
        rows.append(_write_from(ormsgpack.unpackb(data[i : i + elen])))
        i += elen
    return rows
