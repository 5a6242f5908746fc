"""ClickHouse archive layout: table schemas and row builders (pure, no I/O).

Every table is a `ReplacingMergeTree(version)` whose ORDER BY key is the
identity of one stored thing, so delivering a row twice (a retried batch) keeps
one row, and reads with `FINAL` never see duplicates. Rows of one thread (or
session) share the key prefix, so reading a thread is a range scan.

Payloads are the hot store's binary encodings (`stores.encoding`: rows,
values, list elements and writes hold the serializer's bytes, so nothing is
plaintext under `EncryptedSerializer`); only identities, the run-id digest and
times are typed columns.

| table                            | ORDER BY (identity)                               |
|----------------------------------|---------------------------------------------------|
| `context_checkpoints`            | thread_id, checkpoint_ns, checkpoint_id           |
| `context_channel_values`         | thread_id, checkpoint_ns, channel, version_key    |
| `context_list_items`             | thread_id, checkpoint_ns, channel, epoch,         |
|                                  | position                                          |
| `context_checkpoint_writes`      | thread_id, checkpoint_ns, checkpoint_id,          |
|                                  | task_id, idx                                      |
| `context_threads`                | thread_id, root (latest write wins)               |
| `context_thread_deletes`         | thread_id (the latest delete wins)                |
| `context_sessions`               | session_id (latest state wins)                    |
| `context_conversations`          | session_id, stream, ts, message_id                |
| `context_task_contexts`          | session_id (latest snapshot wins)                 |
| `context_conversation_sessions`  | session_id, session_type                          |
| `context_helper_checkpoints`     | session_id, checkpoint_id (`store_checkpoint`)    |

`context_threads` is what thread listing reads, so it never scans
checkpoints: per thread, the row of its latest checkpoint in any namespace
(`root` 0, written by every put) and of the root namespace (`root` 1, by root
puts); its newest `archived_at` is the thread's activity time. A delete or
history rewrite does not mutate it: it writes the thread's two rows again,
with an empty `checkpoint_id` (a tombstone) where nothing is left, and the
newest `version` wins, so a later put (newer version) outranks a delete that
is delivered late.

`context_thread_deletes` keeps, per thread, when its history was last deleted
or rewritten: restores only read rows archived after it. A delete's mutation
only removes rows that exist when it runs, so rows of the thread that another
process's outbox delivers later, archived before the delete, stay stored but
are never restored (and the next rewrite of the thread removes them).

Pending writes follow the hot store's rules through `version`: a special
write (idx < 0) overwrites, so it gets an increasing version; a regular write
is first-wins, so it gets a decreasing one (`2**63 - time`).
Conversation `stream` is "" for the conversation history, else the
conversation-session type of an agent message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from aiecs_checkpoint.stores import encoding as E
from aiecs_checkpoint.stores import thread_model as model
from aiecs_checkpoint.stores.domain_records import SessionRecord
from aiecs_checkpoint.stores.records import (
    CheckpointRow,
    ListValue,
    ListWrite,
    Typed,
    ValueWrite,
    Version,
    WriteRow,
    new_positions,
)

CHECKPOINTS = "context_checkpoints"
VALUES = "context_channel_values"
ITEMS = "context_list_items"
WRITES = "context_checkpoint_writes"
THREADS = "context_threads"
DELETES = "context_thread_deletes"
SESSIONS = "context_sessions"
CONVERSATIONS = "context_conversations"
TASK_CONTEXTS = "context_task_contexts"
CONVERSATION_SESSIONS = "context_conversation_sessions"
HELPER_CHECKPOINTS = "context_helper_checkpoints"

THREAD_TABLES = (CHECKPOINTS, VALUES, ITEMS, WRITES)
"""Tables keyed by thread_id whose rows a thread's delete removes (mutations);
`THREADS` is superseded by newer rows instead (`thread_summary_rows`)."""

SESSION_TABLES = (
    SESSIONS,
    CONVERSATIONS,
    TASK_CONTEXTS,
    CONVERSATION_SESSIONS,
    HELPER_CHECKPOINTS,
)
"""Tables keyed by session_id."""

_TS = "DateTime64(6, 'UTC')"

COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    CHECKPOINTS: (
        ("thread_id", "String"),
        ("checkpoint_ns", "String"),
        ("checkpoint_id", "String"),
        ("parent_id", "String"),
        ("run_key", "String"),
        ("payload", "String"),
        ("archived_at", _TS),
        ("version", "UInt64"),
    ),
    VALUES: (
        ("thread_id", "String"),
        ("checkpoint_ns", "String"),
        ("channel", "String"),
        ("version_key", "String"),
        ("payload", "String"),
        ("archived_at", _TS),
        ("version", "UInt64"),
    ),
    ITEMS: (
        ("thread_id", "String"),
        ("checkpoint_ns", "String"),
        ("channel", "String"),
        ("epoch", "String"),
        ("position", "UInt32"),
        ("payload", "String"),
        ("archived_at", _TS),
        ("version", "UInt64"),
    ),
    WRITES: (
        ("thread_id", "String"),
        ("checkpoint_ns", "String"),
        ("checkpoint_id", "String"),
        ("task_id", "String"),
        ("idx", "Int64"),
        ("payload", "String"),
        ("archived_at", _TS),
        ("version", "UInt64"),
    ),
    DELETES: (
        ("thread_id", "String"),
        ("deleted_at", _TS),
        ("version", "UInt64"),
    ),
    THREADS: (
        ("thread_id", "String"),
        ("root", "UInt8"),
        ("checkpoint_ns", "String"),
        ("checkpoint_id", "String"),
        ("payload", "String"),
        ("archived_at", _TS),
        ("version", "UInt64"),
    ),
    SESSIONS: (
        ("session_id", "String"),
        ("user_id", "String"),
        ("status", "LowCardinality(String)"),
        ("created_at", _TS),
        ("last_activity", _TS),
        ("request_count", "UInt64"),
        ("error_count", "UInt64"),
        ("total_processing_time", "Float64"),
        ("metadata", "String"),
        ("version", "UInt64"),
    ),
    CONVERSATIONS: (
        ("session_id", "String"),
        ("stream", "String"),
        ("ts", _TS),
        ("message_id", "String"),
        ("payload", "String"),
        ("version", "UInt64"),
    ),
    TASK_CONTEXTS: (
        ("session_id", "String"),
        ("payload", "String"),
        ("archived_at", _TS),
        ("version", "UInt64"),
    ),
    CONVERSATION_SESSIONS: (
        ("session_id", "String"),
        ("session_type", "String"),
        ("payload", "String"),
        ("archived_at", _TS),
        ("version", "UInt64"),
    ),
    HELPER_CHECKPOINTS: (
        ("session_id", "String"),
        ("checkpoint_id", "String"),
        ("payload", "String"),
        ("archived_at", _TS),
        ("version", "UInt64"),
    ),
}

RUN_KEY_COLUMN = [name for name, _ in COLUMNS[CHECKPOINTS]].index("run_key")
"""Position of `run_key` in a `context_checkpoints` row."""

ORDER_BY: dict[str, tuple[str, ...]] = {
    CHECKPOINTS: ("thread_id", "checkpoint_ns", "checkpoint_id"),
    VALUES: ("thread_id", "checkpoint_ns", "channel", "version_key"),
    ITEMS: ("thread_id", "checkpoint_ns", "channel", "epoch", "position"),
    WRITES: ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"),
    THREADS: ("thread_id", "root"),
    DELETES: ("thread_id",),
    SESSIONS: ("session_id",),
    CONVERSATIONS: ("session_id", "stream", "ts", "message_id"),
    TASK_CONTEXTS: ("session_id",),
    CONVERSATION_SESSIONS: ("session_id", "session_type"),
    HELPER_CHECKPOINTS: ("session_id", "checkpoint_id"),
}

BINARY = {name: {"payload": "bytes"} for name in COLUMNS}
BINARY[SESSIONS] = {"metadata": "bytes"}
BINARY[THREADS] = {"root_payload": "bytes", "any_payload": "bytes"}
BINARY[DELETES] = {}
"""`column_formats` reading payloads back as bytes (not text)."""


def create_table(database: str, table: str, cluster: str | None) -> str:
    """DDL of one table (`ON CLUSTER` and replicated when `cluster` is set).

    Identifiers come from this module and the validated configuration, never
    from user data (which only ever travels as bound parameters or columns).
    """
    columns = ",\n  ".join(f"`{name}` {kind}" for name, kind in COLUMNS[table])
    on_cluster = f" ON CLUSTER `{cluster}`" if cluster else ""
    engine = (
        "ReplicatedReplacingMergeTree("
        f"'/clickhouse/tables/{{shard}}/{database}/{table}', '{{replica}}', version)"
        if cluster
        else "ReplacingMergeTree(version)"
    )
    order = ", ".join(ORDER_BY[table])
    return (
        f"CREATE TABLE IF NOT EXISTS `{database}`.`{table}`{on_cluster} (\n  "
        f"{columns}\n) ENGINE = {engine} ORDER BY ({order})"
    )


def column_names(table: str) -> list[str]:
    return [name for name, _ in COLUMNS[table]]


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def now() -> datetime:
    return datetime.now(timezone.utc)


def newer() -> int:
    """An increasing version (nanoseconds)."""
    return time.time_ns()


def older() -> int:
    """A decreasing version, so the first delivered row of an identity wins."""
    return 2**63 - time.time_ns()


@dataclass(frozen=True, slots=True)
class Rows:
    """Rows to insert, per table."""

    tables: dict[str, list[tuple[Any, ...]]]

    @classmethod
    def empty(cls) -> Rows:
        return cls({})

    def add(self, table: str, row: tuple[Any, ...]) -> None:
        self.tables.setdefault(table, []).append(row)


# -- checkpoints  --------------------------------------------------------------------


def checkpoint_rows(
    row: CheckpointRow,
    values: Mapping[str, tuple[Version, ValueWrite]],
    assigned: Mapping[str, ListValue],
    out: Rows,
) -> None:
    """Rows of one `put_checkpoint`: the row, its new values and new list items."""
    t, ns, at, v = row.thread_id, row.checkpoint_ns, now(), newer()
    payload = E.pack_row(row)
    out.add(
        CHECKPOINTS,
        (
            t,
            ns,
            row.checkpoint_id,
            row.parent_id or "",
            row.run_key or "",
            payload,
            at,
            v,
        ),
    )
    for root in (0, 1) if ns == "" else (0,):
        out.add(THREADS, (t, root, ns, row.checkpoint_id, payload, at, v))
    for channel, (version, write) in values.items():
        if isinstance(write, ListWrite):
            stored = assigned[channel]
            for index, position in new_positions(write.runs, stored.runs):
                item = write.new_items[index]
                out.add(
                    ITEMS,
                    (
                        t,
                        ns,
                        channel,
                        stored.epoch,
                        position,
                        E.pack_item(item),
                        at,
                        v,
                    ),
                )
            blob = E.pack_value(stored)
        else:
            blob = E.pack_value(write)
        out.add(VALUES, (t, ns, channel, E.version_key(version), blob, at, v))


def write_rows(
    thread_id: str, ns: str, checkpoint_id: str, rows: Iterable[WriteRow], out: Rows
) -> None:
    """Rows of one `put_writes`, versioned to follow the hot store's rules."""
    at = now()
    for w in rows:
        version = newer() if w.idx < 0 else older()
        out.add(
            WRITES,
            (
                thread_id,
                ns,
                checkpoint_id,
                w.task_id,
                w.idx,
                E.pack_writes([w]),
                at,
                version,
            ),
        )


def thread_rows(
    thread_id: str, thread: model.Thread, out: Rows, at: datetime | None = None
) -> None:
    """Every row of a whole thread (after a history rewrite or a copy), archived
    at `at` (now by default)."""
    at, v = at or now(), newer()
    thread_summary_rows(thread_id, thread, out, at, v)
    for ns_name, ns in thread.items():
        for cid in ns.ids:
            row = ns.rows[cid]
            out.add(
                CHECKPOINTS,
                (
                    thread_id,
                    ns_name,
                    cid,
                    row.parent_id or "",
                    row.run_key or "",
                    E.pack_row(row),
                    at,
                    v,
                ),
            )
            for w in ns.writes.get(cid, {}).values():
                wv = v if w.idx < 0 else 2**63 - v
                out.add(
                    WRITES,
                    (
                        thread_id,
                        ns_name,
                        cid,
                        w.task_id,
                        w.idx,
                        E.pack_writes([w]),
                        at,
                        wv,
                    ),
                )
        for (channel, version), value in ns.values.items():
            out.add(
                VALUES,
                (
                    thread_id,
                    ns_name,
                    channel,
                    E.version_key(version),
                    E.pack_value(value),
                    at,
                    v,
                ),
            )
        for (channel, epoch), log in ns.logs.items():
            for position, item in enumerate(log):
                out.add(
                    ITEMS,
                    (
                        thread_id,
                        ns_name,
                        channel,
                        epoch,
                        position,
                        E.pack_item(item),
                        at,
                        v,
                    ),
                )


def delete_row(thread_id: str, at: datetime, out: Rows) -> None:
    """The `context_thread_deletes` row of a delete or rewrite at `at`."""
    out.add(DELETES, (thread_id, at, (at - _EPOCH) // timedelta(microseconds=1)))


def thread_summary_rows(
    thread_id: str, thread: model.Thread, out: Rows, at: datetime, version: int
) -> None:
    """Both `context_threads` rows of the thread as it now is (tombstones, with
    an empty checkpoint id, where it has no checkpoint: an empty thread is a
    deleted one)."""
    tips = [ns.rows[ns.ids[-1]] for ns in thread.values() if ns.ids]
    newest = max(tips, key=lambda r: r.checkpoint_id, default=None)
    root_ns = thread.get("")
    root = root_ns.rows[root_ns.ids[-1]] if root_ns and root_ns.ids else None
    for flag, head in ((0, newest), (1, root)):
        if head is None:
            out.add(THREADS, (thread_id, flag, "", "", b"", at, version))
        else:
            ns, cid, payload = head.checkpoint_ns, head.checkpoint_id, E.pack_row(head)
            out.add(THREADS, (thread_id, flag, ns, cid, payload, at, version))


def thread_from_rows(
    thread_id: str,
    checkpoints: Iterable[Sequence[Any]],
    values: Iterable[Sequence[Any]],
    items: Iterable[Sequence[Any]],
    writes: Iterable[Sequence[Any]],
) -> model.Thread:
    """A thread as `model` holds it, from the archive's rows.

    Rows are (namespace, id columns..., payload) in the order `THREAD_QUERIES`
    select them. Element logs are rebuilt position by position; each
    channel's append epoch is the one its newest checkpoint uses.
    """
    thread: model.Thread = {}

    def ns_of(name: str) -> model.Namespace:
        return thread.setdefault(name, model.Namespace())

    for ns, cid, payload in checkpoints:
        model.insert_row(ns_of(ns), E.unpack_row(thread_id, ns, cid, payload))
    for ns, channel, vkey, payload in values:
        ns_of(ns).values[(channel, E.parse_version(vkey))] = E.unpack_value(payload)
    logs: dict[tuple[str, str, str], dict[int, Typed]] = {}
    for ns, channel, epoch, position, payload in items:
        logs.setdefault((ns, channel, epoch), {})[int(position)] = E.unpack_item(
            payload
        )
    for (ns, channel, epoch), by_position in logs.items():
        log: list[Typed] = []
        while len(log) in by_position:  # positions must stay where they were
            log.append(by_position[len(log)])
        ns_of(ns).logs[(channel, epoch)] = log
    for ns, cid, payload in writes:
        for w in E.unpack_writes(payload):
            ns_of(ns).writes.setdefault(cid, {})[(w.task_id, w.idx)] = w
    for namespace in thread.values():
        _restore_epochs(namespace)
    return {name: ns for name, ns in thread.items() if ns.rows}


def _restore_epochs(ns: model.Namespace) -> None:
    """Each list channel appends to the epoch of its newest stored value."""
    for cid in ns.ids:
        for channel, version in ns.rows[cid].versions.items():
            value = ns.values.get((channel, version))
            if isinstance(value, ListValue):
                ns.epochs[channel] = value.epoch
                ns.logs.setdefault((channel, value.epoch), [])


def thread_heads_query(database: str, after: bool) -> str:
    """A page of archived threads by (activity ms, thread id) descending, each
    with its latest root and any-namespace rows (empty when it has none),
    deleted ones (tombstones) left out; `after` continues strictly after
    ({ms:Int64}, {thread:String})."""
    having = "HAVING any_id != '' "
    if after:
        having += "AND (ms, thread_id) < ({ms:Int64}, {thread:String}) "
    return (
        "SELECT thread_id, toUnixTimestamp64Milli(max(archived_at)) AS ms, "
        "anyIf(checkpoint_ns, root = 1) AS root_ns, "
        "anyIf(checkpoint_id, root = 1) AS root_id, "
        "anyIf(payload, root = 1) AS root_payload, "
        "toUnixTimestamp64Micro(maxIf(archived_at, root = 1)) AS root_us, "
        "anyIf(checkpoint_ns, root = 0) AS any_ns, "
        "anyIf(checkpoint_id, root = 0) AS any_id, "
        "anyIf(payload, root = 0) AS any_payload, "
        "toUnixTimestamp64Micro(maxIf(archived_at, root = 0)) AS any_us "
        f"FROM `{database}`.`{THREADS}` FINAL GROUP BY thread_id {having}"
        "ORDER BY ms DESC, thread_id DESC LIMIT {limit:UInt32}"
    )


@dataclass(frozen=True, slots=True)
class ArchivedThread:
    """One thread of an archived listing page: its activity time (ms) and its
    latest root-namespace / any-namespace rows, each with when it was archived."""

    thread_id: str
    ms: int
    root: tuple[CheckpointRow, int] | None
    newest: tuple[CheckpointRow, int] | None

    def head(self, deleted_us: int | None) -> CheckpointRow | None:
        """The latest row archived after the thread's last delete (root
        namespace first), None when every archived row predates it."""
        for found in (self.root, self.newest):
            if found is not None and (deleted_us is None or found[1] > deleted_us):
                return found[0]
        return None


def archived_thread(r: Sequence[Any]) -> ArchivedThread:
    """An `ArchivedThread` from a row of `thread_heads_query`."""
    t = r[0]

    def part(ns: str, cid: str, payload: bytes, us: int) -> tuple[CheckpointRow, int]:
        return E.unpack_row(t, ns, cid, payload), int(us)

    return ArchivedThread(
        thread_id=t,
        ms=int(r[1]),
        root=part(*r[2:6]) if r[3] else None,
        newest=part(*r[6:10]) if r[7] else None,
    )


THREAD_QUERIES = {
    CHECKPOINTS: "SELECT checkpoint_ns, checkpoint_id, payload",
    VALUES: "SELECT checkpoint_ns, channel, version_key, payload",
    ITEMS: "SELECT checkpoint_ns, channel, epoch, position, payload",
    WRITES: "SELECT checkpoint_ns, checkpoint_id, payload",
}
"""Columns read back per thread table (then `FROM t FINAL WHERE thread_id = ...`)."""


# -- domain data  --------------------------------------------------------------------


def _utc(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc)


SEALED_USER = b"\xff"
"""Prefix of a user id the archive keeps sealed: under encryption the
`user_id` column holds `SEALED_USER` + `encoding.pack_item` of the id as the
engine's serializer encrypts it (as Redis keeps it), never the id in clear."""


def session_row(
    s: SessionRecord, out: Rows, seal: Callable[[str], Typed] | None = None
) -> None:
    """The session's row; `seal` (the encrypting serializer's `dumps_typed`)
    seals the user id."""
    user = s.user_id if seal is None else SEALED_USER + E.pack_item(seal(s.user_id))
    out.add(
        SESSIONS,
        (
            s.session_id,
            user,
            s.status,
            _utc(s.created_us),
            _utc(s.activity_us),
            s.request_count,
            s.error_count,
            s.processing_time,
            E.pack_item(s.metadata),
            newer(),
        ),
    )


def message_row(
    session_id: str, stream: str, message_id: str, message: Typed, out: Rows
) -> None:
    out.add(
        CONVERSATIONS,
        (session_id, stream, now(), message_id, E.pack_item(message), newer()),
    )


def task_context_row(session_id: str, context: Typed, out: Rows) -> None:
    out.add(TASK_CONTEXTS, (session_id, E.pack_item(context), now(), newer()))


def conversation_session_row(
    session_id: str, session_type: str, data: Typed, out: Rows
) -> None:
    out.add(
        CONVERSATION_SESSIONS,
        (session_id, session_type, E.pack_item(data), now(), newer()),
    )


def helper_checkpoint_row(
    session_id: str, checkpoint_id: str, data: Typed, out: Rows
) -> None:
    out.add(
        HELPER_CHECKPOINTS,
        (session_id, checkpoint_id, E.pack_item(data), now(), newer()),
    )
