"""The portable export format: `stores.model.Thread` <-> JSON-able dicts.

An export is a JSON Lines file: a header line, one line per thread, and an end
line counting the threads (a file without it was cut short and is refused):

    {"format": "aiecs-checkpoint-export", "version": 1, "created_at": ..., ...}
    {"kind": "thread", "thread_id": "t1", "namespaces": [...]}
    {"kind": "end", "threads": 1}

A thread line holds exactly what the store holds, at the storage level:
checkpoint rows (ids, parents, serialized checkpoint and metadata, channel
versions, run key digests, delta channels, frozen delta bases and thread-index
entries, `index`: optional, an export without it imports rows that every
filtered listing visits until the thread is written again), values per
(channel, version), list manifests and element logs with their epochs, and
pending writes with task paths and idx (tracking records on the reserved
record channel included). Serialized values stay as the serializer made them:
a `(type, bytes)` pair becomes `[type, base64]`. So values written under an
`EncryptedSerializer` stay encrypted, and importing needs no key.

Pure conversion, no I/O: `header()`, `check_header()`, `thread_line()`,
`parse_line()`, `end_line()`. Malformed input raises `InvalidExportError`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from aiecs_checkpoint.errors import InvalidExportError
from aiecs_checkpoint.stores.records import (
    CheckpointRow,
    DeltaEntry,
    ListItems,
    ListValue,
    ResolvedValue,
    Runs,
    StoredValue,
    Typed,
    Version,
    WriteRow,
    expand_runs,
)
from aiecs_checkpoint.stores.thread_model import Namespace, Thread

FORMAT = "aiecs-checkpoint-export"
"""The header's `format`."""

VERSION = 1
"""The format version this module writes and reads."""


# -- writing ---------------------------------------------------------------------


def header(producer: str, **extra: Any) -> dict[str, Any]:
    """The first line of an export."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "producer": producer,
        **extra,
    }


def end_line(threads: int) -> dict[str, Any]:
    """The last line of an export: how many thread lines precede it."""
    return {"kind": "end", "threads": threads}


def thread_line(thread_id: str, thread: Thread) -> dict[str, Any]:
    """One thread as a JSON-able dict."""
    return {
        "kind": "thread",
        "thread_id": thread_id,
        "namespaces": [_namespace(name, ns) for name, ns in thread.items()],
    }


def _typed(value: Typed) -> list[str]:
    return [value[0], base64.b64encode(value[1]).decode("ascii")]


def _runs(runs: Runs) -> list[list[int]]:
    return [[start, end] for start, end in runs]


def _write(w: WriteRow) -> dict[str, Any]:
    return {
        "task_id": w.task_id,
        "idx": w.idx,
        "channel": w.channel,
        "value": _typed(w.value),
        "task_path": w.task_path,
    }


def _resolved(value: ResolvedValue) -> dict[str, Any]:
    if isinstance(value, ListItems):
        if value.held:
            raise InvalidExportError("a list value with held elements is not storable")
        return {
            "list": {
                "epoch": value.epoch,
                "runs": _runs(value.runs),
                "items": [_typed(i) for i in value.items],
            }
        }
    return {"typed": _typed(value)}


def _stored(value: StoredValue) -> dict[str, Any]:
    if isinstance(value, ListValue):
        return {"list": {"epoch": value.epoch, "runs": _runs(value.runs)}}
    return {"typed": _typed(value)}


def _row(row: CheckpointRow) -> dict[str, Any]:
    return {
        "checkpoint_id": row.checkpoint_id,
        "parent_id": row.parent_id,
        "checkpoint": _typed(row.checkpoint),
        "metadata": _typed(row.metadata),
        "versions": [[ch, v] for ch, v in row.versions.items()],
        "run_key": row.run_key,
        "delta_channels": list(row.delta_channels),
        "delta_base": [
            {
                "channel": ch,
                "seed": None if e.seed is None else _resolved(e.seed),
                "writes": [_write(w) for w in e.writes],
            }
            for ch, e in row.delta_base.items()
        ],
        "index": None if row.index is None else list(row.index),
    }


def _namespace(name: str, ns: Namespace) -> dict[str, Any]:
    return {
        "checkpoint_ns": name,
        "checkpoints": [_row(ns.rows[cid]) for cid in ns.ids],
        "writes": [
            {"checkpoint_id": cid, "writes": [_write(w) for w in by_task.values()]}
            for cid, by_task in ns.writes.items()
        ],
        "values": [
            {"channel": ch, "version": version, **_stored(v)}
            for (ch, version), v in ns.values.items()
        ],
        "logs": [
            {"channel": ch, "epoch": epoch, "items": [_typed(i) for i in log]}
            for (ch, epoch), log in ns.logs.items()
        ],
        "epochs": [[ch, epoch] for ch, epoch in ns.epochs.items()],
    }


# -- reading ---------------------------------------------------------------------


class _Reader:
    """Typed field access that names the offending place in its errors."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, what: str) -> InvalidExportError:
        return InvalidExportError(f"{self.where}: {what}")

    def obj(self, value: Any, what: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(f"{what} must be an object, got {_kind(value)}")
        return value

    def arr(self, value: Any, what: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(f"{what} must be an array, got {_kind(value)}")
        return value

    def field(self, data: Mapping[str, Any], key: str, what: str) -> Any:
        if key not in data:
            raise self.fail(f"{what} lacks {key!r}")
        return data[key]

    def text(self, value: Any, what: str, *, empty: bool = True) -> str:
        if not isinstance(value, str) or (not empty and not value):
            raise self.fail(f"{what} must be a {'' if empty else 'non-empty '}string")
        return value

    def opt_text(self, value: Any, what: str) -> str | None:
        return None if value is None else self.text(value, what)

    def int_(self, value: Any, what: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{what} must be an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(f"{what} must be >= {minimum}, got {value}")
        return value

    def version(self, value: Any, what: str) -> Version:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(f"{what} must be a string or a number")
        return value

    def typed(self, value: Any, what: str) -> Typed:
        pair = self.arr(value, what)
        if len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise self.fail(f"{what} must be [type, base64]")
        try:
            data = base64.b64decode(pair[1].encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise self.fail(f"{what} is not valid base64 ({exc})") from exc
        return pair[0], data

    def pair(self, value: Any, what: str) -> tuple[Any, Any]:
        items = self.arr(value, what)
        if len(items) != 2:
            raise self.fail(f"{what} must hold pairs")
        return items[0], items[1]

    def runs(self, value: Any, what: str) -> Runs:
        out: list[tuple[int, int]] = []
        for run in self.arr(value, what):
            first, last = self.pair(run, what)
            start = self.int_(first, what, 0)
            out.append((start, self.int_(last, what, start)))
        return tuple(out)

    def write(self, value: Any, what: str) -> WriteRow:
        data = self.obj(value, what)
        return WriteRow(
            task_id=self.text(self.field(data, "task_id", what), f"{what}.task_id"),
            idx=self.int_(self.field(data, "idx", what), f"{what}.idx"),
            channel=self.text(self.field(data, "channel", what), f"{what}.channel"),
            value=self.typed(self.field(data, "value", what), f"{what}.value"),
            task_path=self.text(
                self.field(data, "task_path", what), f"{what}.task_path"
            ),
        )


_KINDS: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def check_header(data: Any) -> dict[str, Any]:
    """The header, checked: `InvalidExportError` for another format or an
    unknown version."""
    r = _Reader("line 1 (header)")
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise r.fail(f"not an {FORMAT} file (no header with format {FORMAT!r})")
    version = data.get("version")
    if version != VERSION:
        raise r.fail(
            f"format version {version!r} is not supported (this package reads "
            f"version {VERSION}; a newer aiecs-checkpoint may read it)"
        )
    return dict(data)


def parse_line(data: Any, line: int) -> tuple[str, Thread] | int:
    """A thread line as (thread id, thread), or an end line as its count."""
    r = _Reader(f"line {line}")
    obj = r.obj(data, "the line")
    kind = obj.get("kind")
    if kind == "end":
        return r.int_(r.field(obj, "threads", "the end line"), "threads", 0)
    if kind != "thread":
        raise r.fail(f"unknown line kind {kind!r} (expected 'thread' or 'end')")
    thread_id = r.text(
        r.field(obj, "thread_id", "the thread"), "thread_id", empty=False
    )
    thread: Thread = {}
    for i, raw in enumerate(r.arr(r.field(obj, "namespaces", "the thread"), "ns")):
        name, ns = _parse_namespace(r, raw, thread_id, f"namespaces[{i}]")
        if name in thread:
            raise r.fail(f"namespace {name!r} appears twice")
        thread[name] = ns
    return thread_id, thread


def _parse_namespace(
    r: _Reader, raw: Any, thread_id: str, where: str
) -> tuple[str, Namespace]:
    data = r.obj(raw, where)
    name = r.text(r.field(data, "checkpoint_ns", where), f"{where}.checkpoint_ns")
    ns = Namespace()
    for i, item in enumerate(r.arr(r.field(data, "logs", where), f"{where}.logs")):
        w = f"{where}.logs[{i}]"
        log = r.obj(item, w)
        key = (
            r.text(r.field(log, "channel", w), f"{w}.channel"),
            r.text(r.field(log, "epoch", w), f"{w}.epoch"),
        )
        if key in ns.logs:
            raise r.fail(f"{w}: element log {key} appears twice")
        items = r.arr(r.field(log, "items", w), f"{w}.items")
        ns.logs[key] = [r.typed(x, f"{w}.items") for x in items]
    for i, item in enumerate(r.arr(r.field(data, "values", where), f"{where}.values")):
        w = f"{where}.values[{i}]"
        entry = r.obj(item, w)
        channel = r.text(r.field(entry, "channel", w), f"{w}.channel")
        version = r.version(r.field(entry, "version", w), f"{w}.version")
        if (channel, version) in ns.values:
            raise r.fail(f"{w}: value ({channel!r}, {version!r}) appears twice")
        ns.values[(channel, version)] = _parse_stored(r, entry, channel, ns, w)
    for item in r.arr(r.field(data, "epochs", where), f"{where}.epochs"):
        ch, epoch = r.pair(item, f"{where}.epochs")
        ns.epochs[r.text(ch, f"{where}.epochs")] = r.text(epoch, f"{where}.epochs")
    rows = r.arr(r.field(data, "checkpoints", where), f"{where}.checkpoints")
    for i, item in enumerate(rows):
        row = _parse_row(r, item, thread_id, name, f"{where}.checkpoints[{i}]")
        if row.checkpoint_id in ns.rows:
            raise r.fail(f"{where}: checkpoint {row.checkpoint_id!r} appears twice")
        ns.rows[row.checkpoint_id] = row
        ns.ids.append(row.checkpoint_id)
    if ns.ids != sorted(ns.ids):
        raise r.fail(f"{where}: checkpoints are not in id order")
    for i, item in enumerate(r.arr(r.field(data, "writes", where), f"{where}.writes")):
        w = f"{where}.writes[{i}]"
        entry = r.obj(item, w)
        cid = r.text(r.field(entry, "checkpoint_id", w), f"{w}.checkpoint_id")
        if cid in ns.writes:
            raise r.fail(f"{w}: writes of checkpoint {cid!r} appear twice")
        by_task: dict[tuple[str, int], WriteRow] = {}
        for j, raw_w in enumerate(r.arr(r.field(entry, "writes", w), f"{w}.writes")):
            row_w = r.write(raw_w, f"{w}.writes[{j}]")
            by_task[(row_w.task_id, row_w.idx)] = row_w
        ns.writes[cid] = by_task
    return name, ns


def _parse_stored(
    r: _Reader, entry: Mapping[str, Any], channel: str, ns: Namespace, where: str
) -> StoredValue:
    if "typed" in entry:
        return r.typed(entry["typed"], f"{where}.typed")
    manifest = r.obj(r.field(entry, "list", where), f"{where}.list")
    epoch = r.text(r.field(manifest, "epoch", where), f"{where}.list.epoch")
    runs = r.runs(r.field(manifest, "runs", where), f"{where}.list.runs")
    log = ns.logs.get((channel, epoch))
    if log is None:
        raise r.fail(f"{where}: no element log {epoch!r} for channel {channel!r}")
    if runs and max(end for _, end in runs) > len(log):
        raise r.fail(f"{where}: positions beyond the element log's {len(log)}")
    return ListValue(epoch=epoch, runs=runs)


def _parse_resolved(r: _Reader, raw: Any, where: str) -> ResolvedValue:
    data = r.obj(raw, where)
    if "typed" in data:
        return r.typed(data["typed"], f"{where}.typed")
    listed = r.obj(r.field(data, "list", where), f"{where}.list")
    runs = r.runs(r.field(listed, "runs", where), f"{where}.list.runs")
    items = r.arr(r.field(listed, "items", where), f"{where}.list.items")
    if len(items) != len(expand_runs(runs)):
        raise r.fail(f"{where}: {len(items)} items for {len(expand_runs(runs))} slots")
    return ListItems(
        epoch=r.text(r.field(listed, "epoch", where), f"{where}.list.epoch"),
        runs=runs,
        items=tuple(r.typed(x, f"{where}.list.items") for x in items),
    )


def _parse_row(
    r: _Reader, raw: Any, thread_id: str, name: str, where: str
) -> CheckpointRow:
    data = r.obj(raw, where)
    versions: dict[str, Version] = {}
    for pair in r.arr(r.field(data, "versions", where), f"{where}.versions"):
        ch, v = r.pair(pair, f"{where}.versions")
        versions[r.text(ch, f"{where}.versions")] = r.version(v, f"{where}.versions")
    base: dict[str, DeltaEntry] = {}
    for i, item in enumerate(r.arr(r.field(data, "delta_base", where), "delta_base")):
        w = f"{where}.delta_base[{i}]"
        entry = r.obj(item, w)
        seed = r.field(entry, "seed", w)
        writes = r.arr(r.field(entry, "writes", w), f"{w}.writes")
        base[r.text(r.field(entry, "channel", w), f"{w}.channel")] = DeltaEntry(
            seed=None if seed is None else _parse_resolved(r, seed, f"{w}.seed"),
            writes=tuple(r.write(x, f"{w}.writes") for x in writes),
        )
    delta = r.arr(r.field(data, "delta_channels", where), f"{where}.delta_channels")
    found = data.get("index")
    index = None
    if found is not None:
        entries = r.arr(found, f"{where}.index")
        index = tuple(r.text(e, f"{where}.index", empty=False) for e in entries)
    return CheckpointRow(
        thread_id=thread_id,
        checkpoint_ns=name,
        checkpoint_id=r.text(
            r.field(data, "checkpoint_id", where), f"{where}.checkpoint_id", empty=False
        ),
        parent_id=r.opt_text(r.field(data, "parent_id", where), f"{where}.parent_id"),
        checkpoint=r.typed(r.field(data, "checkpoint", where), f"{where}.checkpoint"),
        metadata=r.typed(r.field(data, "metadata", where), f"{where}.metadata"),
        versions=versions,
        run_key=r.opt_text(r.field(data, "run_key", where), f"{where}.run_key"),
        delta_channels=tuple(r.text(c, f"{where}.delta_channels") for c in delta),
        delta_base=base,
        index=index,
    )


__all__ = [
    "FORMAT",
    "VERSION",
    "check_header",
    "end_line",
    "header",
    "parse_line",
    "thread_line",
]
