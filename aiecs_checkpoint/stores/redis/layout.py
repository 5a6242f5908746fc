"""Redis data layout: key names, the arguments the scripts take and their replies.

Pure: nothing here talks to Redis. `stores.redis.checkpoints` builds its calls
with these functions and the runner executes them with a sync or an async
redis-py client, so both APIs send identical commands. Record blobs are
`stores.encoding`'s; the scripts are in `stores.redis.scripts`.

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
| `P:{T}:cpruns`       | set  | run digests R whose `P:run:{R}` lists the thread; no  |
|                      |      | TTL: it tells the reaper which run indexes to clean   |
| `P:threads`          | zset | thread id -> time of its last checkpoint (ms)         |
|                      |      | (copy: the copy's time; restore: the original's, else |
|                      |      | the newest checkpoint id's); a thread leaves it when  |
|                      |      | deleted, emptied or found expired. Thread listing     |
|                      |      | pages it by (score, id) descending (`RECENT`), then   |
|                      |      | reads each listed thread's latest row and `gone`      |
|                      |      | (`HEADS`)                                             |
| `P:run:{R}`          | set  | thread ids that hold checkpoints of run digest R      |
| `P:{T}:ix`           | set  | the thread-index entries E of the thread's latest row |
|                      |      | (`saver.index`); no TTL, like `cpruns`                |
| `P:ix:{E}`           | zset | thread id -> activity ms (the registry's score) of    |
|                      |      | every thread whose latest row has index entry E: a    |
|                      |      | digest of one indexed metadata (key, value), or a key |
|                      |      | id (`#p`, `#k...`; `#?`: rows older than the index)   |
| `P:ixkeys`           | set  | the key-id entries in use (a filtered listing also    |
|                      |      | visits the threads indexed under another key), and    |
|                      |      | `#built` once every registered thread was indexed:    |
|                      |      | the first filtered listing of a store written before  |
|                      |      | the index existed indexes its threads once            |
| `P:ixsecret`         | str  | the index secret, serialized (so encrypted under      |
|                      |      | `EncryptedSerializer`); unused with a plain serializer|

(`ns` and `ch` are percent-encoded too.) Values are the serializer's bytes: no
user value or metadata is stored in plaintext under `EncryptedSerializer` (what
does stay in clear is listed in `stores.redis.domain_layout`).

With a TTL, every key of a thread (the first seven above and its logs) is
given the same deadline by every write, and by every read with
`refresh_on_read`, so a checkpoint never outlives the values and writes it
needs, nor they it. The global indexes (`P:threads`, `P:run:{R}`) and
`P:{T}:cpruns` never expire on their own: a thread kept alive by reads stays
listed and deletable by run. A thread that expired leaves its entries behind
until a listing that meets it (`list_threads`, `list(None)`, the count of a
health check) or a `delete_for_runs` of its runs finds it without
checkpoints: the reaper (`REAP`, `UNLIST`, `ALIVE`) then removes it from the
registry and from every run index `cpruns` names, and restores the entries
of a thread written again meanwhile. Hot paths are unchanged: a put is still
one script call (plus the global indexes' calls on a cluster).

The thread index (filtered `list_threads`) is kept like the registry. A put
makes `P:{T}:ix` the entries of the thread's latest row (in its script) and
moves the thread to now in each entry's `P:ix:{E}`: inside the script on a
standalone server (the row's entries are known before the call, so they are
declared keys; entries it leaves are returned and removed by one more call),
with one ZADD per entry on a cluster, where each entry has its own slot.
Delete, prune, copy, delete_for_runs, import and the reaper run `IXSYNC`
(the thread's `ix` set from its latest row, in its slot), then move the
entries (`IXMOVE`: one call standalone, one per entry on a cluster) at the
registry's score, and check `ix` again, so a put that raced in keeps its
entries. A filtered page reads `P:ixkeys`, the entries of the filter's pairs
(`IXRECENT`), then the rows of the threads found; an entry that names a
thread whose latest row lacks it (a lost race) or that expired is removed
there. So a filter that matches nothing costs the same few calls whatever the
number of threads. An expired thread keeps its entries until a listing meets
it, exactly as it keeps its registry entry.

A put retried after a timeout (its first attempt may still run once the
server reads it) finds its row stored byte for byte and changes nothing
(it writes the row again, same bytes, so that the retry is replicated).

Durability (`ContextEngine(replica_acks=N, replica_acks_timeout=S)`):

* N = 0 (default): `put` / `put_writes` return once the master ran the
  script. Replication is asynchronous, so a failover to a replica that had
  not received it yet loses it (`benchmarks/failover_loss.py` measures the
  window). What survives a restart of the same server is what its own
  persistence kept (`appendonly yes` with `appendfsync always`: every
  acknowledged write; `everysec`: up to about a second lost).
* N > 0: the script call and `WAIT N S*1000` go out pipelined on one
  connection (`WAIT` counts the replicas that acknowledged *that
  connection's* writes); on a Cluster, to the node holding the thread's
  slot (every key of a thread shares it, so one node and one `WAIT`). The
  call returns once N replicas of that node acknowledged, else it raises
  `StoreError` after S seconds (default 1.0): the write is then on the
  master and may or may not survive a failover. After a failover the
  promoted replica has no replica of its own until one is added: every
  put to its slots raises `StoreError` meanwhile. With `replica_acks`
  greater than the replicas a node has, every put raises.
* What `WAIT` promises: the write is in the memory of N replicas, so a
  failover that promotes one of them keeps it (with one replica per
  master, the only candidate is one of them). It does not make the
  replicas fsync their AOF: if the master and those replicas all lose
  power, it can still be lost.
  Redis 7.2's `WAITAOF` would add that (not used: the package supports
  Redis >= 7.0). Only the thread's own keys are covered: on a Cluster the
  global indexes (`P:threads`, `P:run:{R}`) live in other slots and are
  written without `WAIT` (a failover may drop a thread's registry entry
  until its next put; its checkpoints stay readable by thread id). Domain
  data (sessions, conversations, task contexts) is not covered either.
* Keep the clients' `socket_timeout` above S, or a slow acknowledgement
  is reported as a timeout and retried (the engine refuses such options
  for the clients it builds; a client passed in is the user's to set).

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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiecs_checkpoint.errors import CorruptDataError
from aiecs_checkpoint.stores import thread_model as model
from aiecs_checkpoint.stores.encoding import (
    channel_field,
    enc,
    lua_pack,
    member,
    pack_item,
    pack_row,
    pack_value,
    pack_writes,
    parse_version,
    unpack_item,
    unpack_row,
    unpack_value,
    unpack_writes,
    value_field,
)
from aiecs_checkpoint.stores.records import (
    CheckpointRow,
    Held,
    ListItems,
    ListValue,
    ListWrite,
    ResolvedValue,
    Runs,
    StoredValue,
    Typed,
    ValueWrite,
    Version,
    WriteRow,
    ordered_writes,
    random_id,
)

GEN_FIELD = "#gen"
"""Field of `ep` counting writes; history rewrites check it (optimistic lock)."""


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
    runs: str
    ix: str

    @property
    def script_keys(self) -> list[str]:
        return [self.ids, self.order, self.cp, self.v, self.w, self.ep, self.epochs]


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.threads = f"{prefix}:threads"
        self.ix_keys = f"{prefix}:ixkeys"
        self.ix_secret = f"{prefix}:ixsecret"

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
            runs=f"{base}:cpruns",
            ix=f"{base}:ix",
        )

    def run(self, run_key: str) -> str:
        return f"{self.prefix}:run:{{{run_key}}}"

    def ix(self, entry: str) -> str:
        """The index of thread-index entry `entry` (its own hash tag)."""
        return f"{self.prefix}:ix:{{{entry}}}"


# -- values, reads and whole threads ---------------------------------------------


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
                    random_id(),
                    [x for run in write.slot_runs() for x in run],
                    [pack_item(i) for i in write.new_items],
                    ch,
                ]
            )
        else:
            entries.append(["t", field, pack_value(write)])
    return lua_pack(entries)


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
    """A fetched value with its list elements attached; `CorruptDataError` when
    the log holds fewer elements than the value's manifest points at (writes
    the server acknowledged and then lost)."""
    if not isinstance(value, ListValue):
        return value
    check_log_items(value.epoch, value.runs, len(items), held)
    return ListItems(value.epoch, value.runs, tuple(items), held)


def check_log_items(epoch: str, runs: Runs, got: int, held: int = 0) -> None:
    """Raise `CorruptDataError` unless `got` elements are what `runs` of log
    `epoch` hold from position `held` on (as the read scripts send them)."""
    want = sum(max(0, stop - max(start, held)) for start, stop in runs)
    if got != want:
        end = max((stop for _, stop in runs), default=0)
        raise CorruptDataError(
            f"a stored list points at positions up to {end} of element log "
            f"{epoch}, which holds fewer ({got} of the {want} elements sent): "
            "the server lost writes it had acknowledged (a failover to a "
            "lagging replica, or a restart from an older snapshot)"
        )
