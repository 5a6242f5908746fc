"""Redis data layout: key names, record encodings and the server-side scripts.

Pure: nothing here talks to Redis. `stores.redis` executes what is built here
with a sync or an async redis-py client, so both APIs send identical commands.

Keys (P = the configured prefix, T = the thread id percent-encoded so that `:`,
`{`, `}`, `*`, spaces and non-ASCII can neither collide nor break a pattern;
every key of a thread carries the hash tag `{T}`, so each thread lives in one
Redis Cluster slot and every script below is valid on a cluster):

| key                  | type | content                                              |
|----------------------|------|------------------------------------------------------|
| `P:{T}:ids`          | zset | `ns\\0cid`, score 0: latest per namespace by lex range |
| `P:{T}:order`        | zset | `cid\\0ns`: newest first across namespaces            |
| `P:{T}:cp`           | hash | `ns\\0cid` -> checkpoint row (msgpack)                |
| `P:{T}:v`            | hash | `ns\\0ch\\0version` -> channel value (once)         |
| `P:{T}:w`            | hash | `ns\\0cid` -> pending writes of that checkpoint        |
| `P:{T}:ep`           | hash | `ns\\0ch` -> current element-log epoch; `#gen` counter |
| `P:{T}:epochs`       | set  | every element-log epoch of the thread                 |
| `P:{T}:log:<epoch>`  | list | serialized elements of list values, append-only       |
| `P:{T}:gone`         | str  | when the thread was last deleted (µs since epoch);    |
|                      |      | kept 7 days: the archive never restores older rows    |
| `P:threads`          | zset | thread id -> time of its last checkpoint (ms)         |
|                      |      | (copy: the copy's time; restore: the original's, else |
|                      |      | the newest checkpoint id's); a thread leaves it when  |
|                      |      | deleted or emptied. Thread listing pages it by        |
|                      |      | (score, id) descending (`RECENT`), then reads each    |
|                      |      | listed thread's latest row and `gone` (`HEADS`)       |
| `P:run:{R}`          | set  | thread ids that hold checkpoints of run digest R      |

(`ns` and `ch` are percent-encoded too.) Values are the serializer's bytes: no
user value or metadata is stored in plaintext under `EncryptedSerializer`.
With a TTL, every key of a thread is given the same deadline by every write, so
a checkpoint never outlives the values and writes it needs, nor they it.

List values cost what changed, both ways:

* `put` sends a list's slots as flat (first, count) runs (`SlotRuns`): a list
  that grew by k elements is one run of reused positions plus one of k new
  elements, whatever its length; the script appends the new elements to the
  log and stores the manifest `l` + msgpack [epoch, [[start, end]...]].
* `get` and `list` take what the reader holds decoded (`pack_held`:
  `ns\\0ch` -> [epoch, n]); for a manifest of that epoch they send only the
  elements at positions >= n, and say so per value (`{ch, blob, items, n}`).
  A reader that lost some of them meanwhile asks again without `held`.
"""

from __future__ import annotations

import functools
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import ormsgpack

from aiecs_checkpoint.stores import model
from aiecs_checkpoint.stores.base import (
    CheckpointRow,
    DeltaEntry,
    Held,
    ListItems,
    ListValue,
    ListWrite,
    ResolvedValue,
    StoredValue,
    Typed,
    ValueWrite,
    Version,
    WriteRow,
    ordered_writes,
)

_U32 = struct.Struct(">I")

GEN_FIELD = "#gen"
"""Field of `ep` counting writes; history rewrites check it (optimistic lock)."""


@functools.lru_cache(maxsize=4096)
def enc(text: str) -> str:
    """Percent-encode an id for use inside a key or field: only [A-Za-z0-9_.~-%].

    Cached: every call of a thread encodes the same few ids and channel names.
    """
    return quote(text, safe="")


@dataclass(frozen=True, slots=True)
class ThreadKeys:
    """Every key of one thread; `script_keys` is the order the scripts expect."""

    ids: str
    order: str
    cp: str
    v: str
    w: str
    ep: str
    epochs: str
    log_prefix: str
    gone: str

    @property
    def script_keys(self) -> list[str]:
        return [self.ids, self.order, self.cp, self.v, self.w, self.ep, self.epochs]


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.threads = f"{prefix}:threads"

    def thread(self, thread_id: str) -> ThreadKeys:
        base = f"{self.prefix}:{{{enc(thread_id)}}}"
        return ThreadKeys(
            ids=f"{base}:ids",
            order=f"{base}:order",
            cp=f"{base}:cp",
            v=f"{base}:v",
            w=f"{base}:w",
            ep=f"{base}:ep",
            epochs=f"{base}:epochs",
            log_prefix=f"{base}:log:",
            gone=f"{base}:gone",
        )

    def run(self, run_key: str) -> str:
        return f"{self.prefix}:run:{{{run_key}}}"


# -- fields ------------------------------------------------------------------------


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
    """A row: u32 header length, Lua-readable header [parent, [[ch, value field]]],
    then the row itself as msgpack."""
    base = {
        ch: [_resolved_entry(e.seed), [_write_entry(w) for w in e.writes]]
        for ch, e in row.delta_base.items()
    }
    vkeys = [
        [ch, value_field(row.checkpoint_ns, ch, v)] for ch, v in row.versions.items()
    ]
    head = lua_pack([row.parent_id or "", vkeys])
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


def pack_values(ns: str, values: Mapping[str, tuple[Version, ValueWrite]]) -> bytes:
    """The value entries of a put, as the put script reads them.

    A list entry carries its slots as flat (first, count) runs (`SlotRuns`), so a
    list that grew by one element costs a few numbers, not one per element.
    """
    entries: list[Any] = []
    for ch, (version, write) in values.items():
        field = value_field(ns, ch, version)
        if isinstance(write, ListWrite):
            entries.append(
                [
                    "l",
                    field,
                    channel_field(ns, ch),
                    write.epoch or "",
                    _new_epoch(),
                    [x for run in write.slot_runs() for x in run],
                    [pack_item(i) for i in write.new_items],
                    ch,
                ]
            )
        else:
            entries.append(["t", field, pack_value(write)])
    return lua_pack(entries)


def _new_epoch() -> str:
    return uuid.uuid4().hex


def pack_held(held: Held) -> bytes:
    """What the reader holds decoded, as the read scripts look it up:
    `enc(ns)\\0channel` -> [epoch, count of leading positions]."""
    if not held:
        return b""
    return lua_pack(
        {f"{enc(ns)}\0{ch}": [epoch, n] for (ns, ch), (epoch, n) in held.items()}
    )


# -- resolving what the scripts return ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetched:
    """One checkpoint as a read script returns it.

    Per channel: the stored value, the list elements sent, and how many leading
    log positions were left out because the reader holds them (see `pack_held`).
    """

    row: CheckpointRow
    values: dict[str, tuple[StoredValue, list[Typed], int]]
    writes: list[WriteRow]


def parse_fetched(thread_id: str, reply: Sequence[Any]) -> Fetched:
    """Decode `{member, row, {{ch, blob, items, held}...}, writes}` from a read
    script."""
    mem, row_blob, vals, writes_blob = reply
    ns_enc, _, cid = text(mem).partition("\0")
    row = unpack_row(thread_id, unquote(ns_enc), cid, row_blob)
    values = {
        text(ch): (unpack_value(blob), [unpack_item(i) for i in items], int(held))
        for ch, blob, items, held in vals
    }
    return Fetched(row=row, values=values, writes=unpack_writes(writes_blob))


def text(value: Any) -> str:
    """A Redis reply value (bytes, or str from a decoding client) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


# -- whole threads (for history rewrites) ------------------------------------------


def thread_from_dump(thread_id: str, dump: Sequence[Any]) -> tuple[model.Thread, int]:
    """A thread as `model` holds it, from the dump script's reply, and its gen."""
    cp, vals, writes, ep, logs = (dump[0], dump[1], dump[2], dump[3], dump[4])
    thread: model.Thread = {}

    def ns_of(ns_enc: str) -> model.Namespace:
        return thread.setdefault(unquote(ns_enc), model.Namespace())

    for k, blob in _pairs(cp):
        ns_enc, _, cid = k.partition("\0")
        model.insert_row(
            ns_of(ns_enc), unpack_row(thread_id, unquote(ns_enc), cid, blob)
        )
    log_items = {text(e): [unpack_item(i) for i in items] for e, items in logs}
    for k, blob in _pairs(vals):
        ns_enc, ch_enc, vkey = k.split("\0")
        ns, ch = ns_of(ns_enc), unquote(ch_enc)
        value = unpack_value(blob)
        ns.values[(ch, parse_version(vkey))] = value
        if isinstance(value, ListValue):
            ns.logs[(ch, value.epoch)] = log_items.get(value.epoch, [])
    for k, blob in _pairs(writes):
        ns_enc, _, cid = k.partition("\0")
        rows = unpack_writes(blob)
        ns_of(ns_enc).writes[cid] = {(w.task_id, w.idx): w for w in rows}
    gen = 0
    for k, raw in _pairs(ep):
        if k == GEN_FIELD:
            gen = int(raw)
            continue
        ns_enc, ch_enc = k.split("\0")
        epoch = text(raw)
        ns, ch = ns_of(ns_enc), unquote(ch_enc)
        ns.epochs[ch] = epoch
        ns.logs.setdefault((ch, epoch), log_items.get(epoch, []))
    return {n: s for n, s in thread.items() if s.rows}, gen


def _pairs(flat: Sequence[Any]) -> Iterable[tuple[str, Any]]:
    for i in range(0, len(flat), 2):
        yield text(flat[i]), flat[i + 1]


def dump_thread(thread: model.Thread) -> bytes:
    """A whole thread in the form the replace script writes back."""
    cp: list[Any] = []
    vals: list[Any] = []
    writes: list[Any] = []
    ep: list[Any] = []
    logs: list[Any] = []
    for ns_name, ns in thread.items():
        for cid in ns.ids:
            cp += [member(ns_name, cid), pack_row(ns.rows[cid])]
        for (ch, version), value in ns.values.items():
            vals += [value_field(ns_name, ch, version), pack_value(value)]
        for cid, ws in ns.writes.items():
            writes += [member(ns_name, cid), pack_writes(ordered_writes(ws.values()))]
        for ch, epoch in ns.epochs.items():
            ep += [channel_field(ns_name, ch), epoch]
        for (_, epoch), items in ns.logs.items():
            logs.append([epoch, [pack_item(i) for i in items]])
    return lua_pack([cp, vals, writes, ep, logs])


def list_items(value: StoredValue, items: list[Typed], held: int) -> ResolvedValue:
    """A fetched value with its list elements attached."""
    if not isinstance(value, ListValue):
        return value
    return ListItems(value.epoch, value.runs, tuple(items), held)


# -- scripts --------------------------------------------------------------------------

_COMMON = r"""
local function touch(ttl, logprefix)
  if ttl > 0 then
    for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
    for _, e in ipairs(redis.call('SMEMBERS', KEYS[7])) do
      redis.call('PEXPIRE', logprefix .. e, ttl)
    end
  end
end
local function row_head(row_blob)
  local hlen = struct.unpack('>I4', row_blob)
  return cmsgpack.unpack(string.sub(row_blob, 5, 4 + hlen))
end
local function unpack_held(arg)
  if arg == '' then return nil end
  return cmsgpack.unpack(arg)
end
local function resolve(mem, row_blob, logprefix, only, held)
  local head = row_head(row_blob)
  local vals = {}
  local nsenc = nil
  if held then nsenc = string.sub(mem, 1, string.find(mem, '\0', 1, true)) end
  for _, vk in ipairs(head[2]) do
    if only == nil or only[vk[1]] then
      local blob = redis.call('HGET', KEYS[4], vk[2])
      if blob then
        local items, skip = {}, 0
        if only == nil and string.sub(blob, 1, 1) == 'l' then
          local v = cmsgpack.unpack(string.sub(blob, 2))
          local h = held and held[nsenc .. vk[1]]
          if h and h[1] == v[1] then skip = h[2] end
          for _, run in ipairs(v[2]) do
            local first = math.max(run[1], skip)
            if first < run[2] then
              local part = redis.call('LRANGE', logprefix .. v[1], first, run[2] - 1)
              for _, it in ipairs(part) do items[#items + 1] = it end
            end
          end
        end
        vals[#vals + 1] = {vk[1], blob, items, skip}
      end
    end
  end
  local writes = redis.call('HGET', KEYS[5], mem) or ''
  return {mem, row_blob, vals, writes}
end
"""

PUT = (
    _COMMON
    + r"""
local ns, cid = ARGV[1], ARGV[2]
local vals = cmsgpack.unpack(ARGV[8])
for _, e in ipairs(vals) do
  if e[1] == 'l' and e[4] ~= '' and redis.call('SISMEMBER', KEYS[7], e[4]) == 0 then
    return {'stale'}
  end
end
local assigned = {}
for _, e in ipairs(vals) do
  if e[1] == 't' then
    redis.call('HSET', KEYS[4], e[2], e[3])
  else
    local epoch = e[4]
    if epoch == '' then
      epoch = redis.call('HGET', KEYS[6], e[3])
      if not epoch then
        epoch = e[5]
        redis.call('HSET', KEYS[6], e[3], epoch)
      end
    end
    redis.call('SADD', KEYS[7], epoch)
    local logkey = ARGV[6] .. epoch
    local items = e[7]
    local start = redis.call('LLEN', logkey)
    for i = 1, #items, 512 do
      redis.call('RPUSH', logkey, unpack(items, i, math.min(i + 511, #items)))
    end
    local runs, rs, re = {}, -1, -1
    local slots = e[6]
    for i = 1, #slots, 2 do
      local p, n = slots[i], slots[i + 1]
      if p < 0 then p = start - p - 1 end
      if p == re then
        re = p + n
      else
        if rs >= 0 then runs[#runs + 1] = {rs, re} end
        rs, re = p, p + n
      end
    end
    if rs >= 0 then runs[#runs + 1] = {rs, re} end
    local blob = 'l' .. cmsgpack.pack({epoch, runs})
    redis.call('HSET', KEYS[4], e[2], blob)
    assigned[#assigned + 1] = {e[8], blob}
  end
end
local mem = ns .. '\0' .. cid
redis.call('ZADD', KEYS[1], 0, mem)
redis.call('ZADD', KEYS[2], 0, cid .. '\0' .. ns)
redis.call('HSET', KEYS[3], mem, ARGV[3])
redis.call('HINCRBY', KEYS[6], '#gen', 1)
if KEYS[8] then redis.call('ZADD', KEYS[8], ARGV[7], ARGV[5]) end
if KEYS[9] then redis.call('SADD', KEYS[9], ARGV[5]) end
touch(tonumber(ARGV[4]), ARGV[6])
return {'ok', assigned}
"""
)

PUT_WRITES = (
    _COMMON
    + r"""
local function frames(blob)
  local out, i = {}, 1
  while i <= #blob do
    local klen, j = struct.unpack('>I4', blob, i)
    local key = string.sub(blob, j, j + klen - 1)
    local special = string.byte(blob, j + klen)
    local elen, k = struct.unpack('>I4', blob, j + klen + 1)
    local frame = string.sub(blob, i, k + elen - 1)
    out[#out + 1] = {key, special, frame}
    i = k + elen
  end
  return out
end
local cur = frames(redis.call('HGET', KEYS[5], ARGV[1]) or '')
local pos = {}
for i, f in ipairs(cur) do pos[f[1]] = i end
for _, f in ipairs(frames(ARGV[2])) do
  local i = pos[f[1]]
  if i == nil then
    cur[#cur + 1] = f
    pos[f[1]] = #cur
  elseif f[2] == 1 then
    cur[i] = f
  end
end
local parts = {}
for i, f in ipairs(cur) do parts[i] = f[3] end
redis.call('HSET', KEYS[5], ARGV[1], table.concat(parts))
redis.call('HINCRBY', KEYS[6], '#gen', 1)
touch(tonumber(ARGV[3]), ARGV[4])
return 1
"""
)

GET = (
    _COMMON
    + r"""
local ns, cid = ARGV[1], ARGV[2]
local mem
if cid == '' then
  local r = redis.call('ZREVRANGEBYLEX', KEYS[1], '(' .. ns .. '\1', '(' .. ns .. '\0',
                       'LIMIT', 0, 1)
  if #r == 0 then return false end
  mem = r[1]
else
  mem = ns .. '\0' .. cid
end
local row = redis.call('HGET', KEYS[3], mem)
if not row then return false end
touch(tonumber(ARGV[4]), ARGV[3])
return resolve(mem, row, ARGV[3], nil, unpack_held(ARGV[5]))
"""
)

LIST = (
    _COMMON
    + r"""
local ns, before, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local all_ns = ARGV[5] == '1'
local members
if all_ns then
  local hi = '+'
  if before ~= '' then hi = '(' .. before end
  members = redis.call('ZREVRANGEBYLEX', KEYS[2], hi, '-', 'LIMIT', 0, limit)
else
  local hi = '(' .. ns .. '\1'
  if before ~= '' then hi = '(' .. ns .. '\0' .. before end
  members = redis.call('ZREVRANGEBYLEX', KEYS[1], hi, '(' .. ns .. '\0',
                       'LIMIT', 0, limit)
end
local held = unpack_held(ARGV[7])
local out = {}
for _, m in ipairs(members) do
  local mem = m
  if all_ns then
    local sep = string.find(m, '\0', 1, true)
    mem = string.sub(m, sep + 1) .. '\0' .. string.sub(m, 1, sep - 1)
  end
  local row = redis.call('HGET', KEYS[3], mem)
  if row then out[#out + 1] = resolve(mem, row, ARGV[4], nil, held) end
end
if #out > 0 then touch(tonumber(ARGV[6]), ARGV[4]) end
return {#members, out}
"""
)

WALK = (
    _COMMON
    + r"""
local ns, cid, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local only = {}
for _, ch in ipairs(cmsgpack.unpack(ARGV[4])) do only[ch] = true end
local out = {}
local cursor = cid
while cursor ~= '' and #out < limit do
  local mem = ns .. '\0' .. cursor
  local row = redis.call('HGET', KEYS[3], mem)
  if not row then break end
  out[#out + 1] = resolve(mem, row, ARGV[5], only, nil)
  cursor = row_head(row)[1]
end
return out
"""
)

RANGES = r"""
local out = {}
for i, req in ipairs(cmsgpack.unpack(ARGV[1])) do
  local items = {}
  for _, run in ipairs(req[2]) do
    local part = redis.call('LRANGE', ARGV[2] .. req[1], run[1], run[2] - 1)
    for _, it in ipairs(part) do items[#items + 1] = it end
  end
  out[i] = items
end
return out
"""

DUMP = r"""
local logs = {}
for _, e in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  logs[#logs + 1] = {e, redis.call('LRANGE', ARGV[1] .. e, 0, -1)}
end
return {redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),
        redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[6]), logs}
"""

REPLACE = (
    _COMMON
    + r"""
local gen = tonumber(redis.call('HGET', KEYS[6], '#gen') or '0')
if ARGV[1] ~= '' and gen ~= tonumber(ARGV[1]) then return 'conflict' end
for _, e in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  redis.call('DEL', ARGV[3] .. e)
end
for i = 1, 7 do redis.call('DEL', KEYS[i]) end
local d = cmsgpack.unpack(ARGV[4])
for i = 1, #d[1], 2 do
  local mem = d[1][i]
  local sep = string.find(mem, '\0', 1, true)
  redis.call('HSET', KEYS[3], mem, d[1][i + 1])
  redis.call('ZADD', KEYS[1], 0, mem)
  local flipped = string.sub(mem, sep + 1) .. '\0' .. string.sub(mem, 1, sep - 1)
  redis.call('ZADD', KEYS[2], 0, flipped)
end
for i = 1, #d[2], 2 do redis.call('HSET', KEYS[4], d[2][i], d[2][i + 1]) end
for i = 1, #d[3], 2 do redis.call('HSET', KEYS[5], d[3][i], d[3][i + 1]) end
for i = 1, #d[4], 2 do redis.call('HSET', KEYS[6], d[4][i], d[4][i + 1]) end
for _, log in ipairs(d[5]) do
  redis.call('SADD', KEYS[7], log[1])
  local items = log[2]
  for i = 1, #items, 512 do
    redis.call('RPUSH', ARGV[3] .. log[1], unpack(items, i, math.min(i + 511, #items)))
  end
end
if #d[1] > 0 then
  redis.call('HSET', KEYS[6], '#gen', gen + 1)
  touch(tonumber(ARGV[2]), ARGV[3])
elseif KEYS[8] then
  redis.call('ZREM', KEYS[8], ARGV[5])
end
return #d[1]
"""
)

RECENT = r"""
local ms, thread, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local function less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local out = {}
local top = '+inf'
if ms ~= '' then
  local below = false
  for _, m in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], ms, ms)) do
    if #out >= 2 * limit then break end
    below = below or less(m, thread)
    if below then
      out[#out + 1] = m
      out[#out + 1] = ms
    end
  end
  top = '(' .. ms
end
if #out < 2 * limit then
  local rest = redis.call('ZREVRANGEBYSCORE', KEYS[1], top, '-inf', 'WITHSCORES',
                          'LIMIT', 0, limit - #out / 2)
  for _, x in ipairs(rest) do out[#out + 1] = x end
end
return out
"""
"""A page of the thread registry after the key (ARGV[1] ms, ARGV[2] thread id):
by score, then member bytes, descending; flat [thread, score, ...]."""

HEADS = r"""
local registry = KEYS[4 * #ARGV + 1]
local out = {}
for t = 1, #ARGV do
  local ids, order, cp, gone = KEYS[4 * t - 3], KEYS[4 * t - 2], KEYS[4 * t - 1],
                               KEYS[4 * t]
  local mem = ''
  local r = redis.call('ZREVRANGEBYLEX', ids, '(\1', '(\0', 'LIMIT', 0, 1)
  if #r > 0 then
    mem = r[1]
  else
    local o = redis.call('ZREVRANGEBYLEX', order, '+', '-', 'LIMIT', 0, 1)
    if #o > 0 then
      local sep = string.find(o[1], '\0', 1, true)
      mem = string.sub(o[1], sep + 1) .. '\0' .. string.sub(o[1], 1, sep - 1)
    end
  end
  local row = ''
  if mem ~= '' then row = redis.call('HGET', cp, mem) or '' end
  if row == '' and registry then redis.call('ZREM', registry, ARGV[t]) end
  out[t] = {mem, row, redis.call('GET', gone) or ''}
end
return out
"""
"""Per thread (ARGV: thread ids; KEYS: ids, order, cp, gone of each): its latest
member and row (root namespace, else the newest of any namespace) and `gone`.
Given the registry as a last key (standalone), a thread without rows leaves it
(atomically: a put re-adds it in its own script)."""

DELETE = r"""
for _, e in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  redis.call('DEL', ARGV[1] .. e)
end
for i = 1, 7 do redis.call('DEL', KEYS[i]) end
if KEYS[8] then redis.call('ZREM', KEYS[8], ARGV[2]) end
return 1
"""

SCRIPTS = {
    "put": PUT,
    "put_writes": PUT_WRITES,
    "get": GET,
    "list": LIST,
    "walk": WALK,
    "ranges": RANGES,
    "dump": DUMP,
    "replace": REPLACE,
    "delete": DELETE,
    "recent": RECENT,
    "heads": HEADS,
}
