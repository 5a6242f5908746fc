"""Task records: what graph nodes record as side effects, kept with the task's writes.

A record is a dict ``{"id", "kind", "data", "stamp"}``. `kind` is one of
`KINDS`; `stamp` says where and when it was made: thread id, the task's
namespace, node, task id, step, run id and time (UTC).

Life of a record:

1. A node calls a helper (`aiecs_checkpoint.track_model_usage`, ...) or the
   `ModelUsageTracker` callback fires. The record is serialized at once with the
   saver's serializer (a value that cannot be serialized fails in the node, with
   `SerializationError`) and buffered in the saver under (thread, task).
2. When LangGraph saves that task's writes (`put_writes`: its results, its
   error, or its interrupt), the buffered records go into the same store call,
   as pending writes on `RECORD_CHANNEL`. So a record is durable exactly when
   its task's writes are; a process that dies before that leaves no record, and
   a resumed graph does not run (nor record) tasks whose writes were saved.
3. Records of tasks whose writes are never saved individually (a task cancelled
   because a sibling failed; `durability="exit"`, which saves only the last
   step's writes) are stored with the next checkpoint of their graph saved at or
   after their step.

Stored records travel with their checkpoints: `copy_thread` copies them,
`delete_thread` removes them, `prune(keep_latest)` moves them onto the kept
checkpoint, and `delete_for_runs` removes the records of those runs (each record
write carries its run digest in `task_path`). LangGraph never sees them: the
saver leaves `RECORD_CHANNEL` out of `pending_writes`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiecs_checkpoint.domain.models import parse_timestamp, utc_now
from aiecs_checkpoint.domain.task_context import (
    ContextUpdate,
    FileOperation,
    ModelUsage,
    TaskContext,
)
from aiecs_checkpoint.stores.base import RECORD_CHANNEL, WriteRow, run_key

logger = logging.getLogger("aiecs_checkpoint.tracking")

KINDS = ("model_usage", "file_operation", "context_update")

RECORD_IDX_BASE = 1 << 52
"""Record writes use idx >= this (LangGraph's own idx are small): each record's
idx comes from its id, so saving the same record twice keeps one."""

MAX_BUFFERED_TASKS = 10_000
"""Tasks whose records wait for their writes; beyond it the oldest are dropped."""


@dataclass(frozen=True, slots=True)
class Stamp:
    """Where and when a record was made."""

    thread_id: str
    checkpoint_ns: str
    node: str | None
    task_id: str
    step: int | None
    run_id: str | None

    @property
    def graph_ns(self) -> str:
        """The namespace of the graph running the task (its checkpoints' ns)."""
        head, sep, _ = self.checkpoint_ns.rpartition("|")
        return head if sep else ""

    def as_dict(self, at: datetime) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "checkpoint_ns": self.checkpoint_ns,
            "node": self.node,
            "task_id": self.task_id,
            "step": self.step,
            "run_id": self.run_id,
            "time": at,
        }


def new_record(kind: str, data: Mapping[str, Any], stamp: Stamp) -> dict[str, Any]:
    """A record stamped now."""
    if kind not in KINDS:
        raise ValueError(f"record kind must be one of {KINDS}, got {kind!r}")
    return {
        "id": uuid.uuid4().hex,
        "kind": kind,
        "data": dict(data),
        "stamp": stamp.as_dict(utc_now()),
    }


def record_row(record: Mapping[str, Any], value: Any, run_id: str | None) -> WriteRow:
    """The pending write that stores one serialized record."""
    return WriteRow(
        task_id=record["stamp"]["task_id"],
        idx=RECORD_IDX_BASE + int(record["id"][:12], 16),
        channel=RECORD_CHANNEL,
        value=value,
        task_path=run_key(run_id) or "",
    )


@dataclass(frozen=True, slots=True)
class _Waiting:
    graph_ns: str
    step: int
    row: WriteRow


class RecordBuffer:
    """Serialized records of running tasks, until their writes are saved.

    Per saver and per process, safe across threads (parallel tasks record
    concurrently).
    """

    def __init__(self, max_tasks: int = MAX_BUFFERED_TASKS) -> None:
        self._lock = threading.Lock()
        self._max = max_tasks
        self._tasks: OrderedDict[tuple[str, str], list[_Waiting]] = OrderedDict()
        self.dropped = 0

    def add(self, stamp: Stamp, row: WriteRow) -> None:
        key = (stamp.thread_id, stamp.task_id)
        step = stamp.step if stamp.step is not None else -1
        with self._lock:
            self._tasks.setdefault(key, []).append(_Waiting(stamp.graph_ns, step, row))
            while len(self._tasks) > self._max:
                _, lost = self._tasks.popitem(last=False)
                self.dropped += len(lost)
                logger.warning(
                    "dropped %d tracking records of a task whose writes were never "
                    "saved (more than %d tasks waiting)",
                    len(lost),
                    self._max,
                )

    def take(self, thread_id: str, task_id: str) -> list[WriteRow]:
        """The task's records, removed from the buffer (its writes are saving)."""
        with self._lock:
            waiting = self._tasks.pop((thread_id, task_id), [])
        return [w.row for w in waiting]

    def take_finished(self, thread_id: str, graph_ns: str, step: int) -> list[WriteRow]:
        """Records of the graph's tasks of steps <= `step`: their step is over,
        so their writes will not be saved on their own any more."""
        rows: list[WriteRow] = []
        with self._lock:
            if not self._tasks:
                return rows
            for key in [k for k in self._tasks if k[0] == thread_id]:
                waiting = self._tasks[key]
                done = [w for w in waiting if w.graph_ns == graph_ns and w.step <= step]
                if not done:
                    continue
                rows.extend(w.row for w in done)
                left = [w for w in waiting if w not in done]
                if left:
                    self._tasks[key] = left
                else:
                    del self._tasks[key]
        return rows

    def waiting(self, thread_id: str) -> list[WriteRow]:
        """Records of the thread not saved yet (a copy; they stay buffered)."""
        with self._lock:
            return [
                w.row
                for (t, _), waiting in self._tasks.items()
                if t == thread_id
                for w in waiting
            ]


def is_record(row: WriteRow) -> bool:
    return row.channel == RECORD_CHANNEL


def task_context(thread_id: str, records: Iterable[Mapping[str, Any]]) -> TaskContext:
    """The thread's TaskContext, rebuilt from its records in time order.

    Every model call is an entry of `model_tracker` (with token counts, latency
    and error when known; repeated calls are not merged, each one counts), the
    last operation per path is in `file_tracker`, and every record is an entry
    of `context_history` whose metadata is the record's stamp.
    """
    ctx = TaskContext({"chat_id": thread_id}, enable_persistence=False)
    unique = {r["id"]: r for r in records}
    ordered = sorted(unique.values(), key=lambda r: (r["stamp"]["time"], r["id"]))
    for r in ordered:
        stamp = dict(r["stamp"])
        at = parse_timestamp(stamp["time"], "time")
        data = dict(r["data"])
        kind = r["kind"]
        if kind == "model_usage":
            entry: dict[str, Any] = {**data, "timestamp": at, "stamp": stamp}
            ctx.model_tracker.append(ModelUsage(**entry))  # type: ignore[typeddict-item]
            update = ContextUpdate(at, "model_usage", data, stamp)
        elif kind == "file_operation":
            path = data["path"]
            ctx.file_tracker[path] = FileOperation(
                operation=data["operation"],
                source=data["source"],
                timestamp=at,
                state="active",
            )
            update = ContextUpdate(at, "file_operation", data, stamp)
        else:
            meta = {**dict(data.get("metadata") or {}), **stamp}
            update = ContextUpdate(at, data["update_type"], data["data"], meta)
        ctx.context_history.append(update)
    return ctx


__all__ = [
    "KINDS",
    "RECORD_CHANNEL",
    "RecordBuffer",
    "Stamp",
    "is_record",
    "new_record",
    "record_row",
    "task_context",
]
