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
   a resumed graph does not run (nor record) tasks whose writes were saved. A
   task stopped by `interrupt()` runs again from its start on resume, so what
   it records before the interrupt is recorded once per execution.
3. Records of tasks whose writes are never saved individually (a task cancelled
   because a sibling failed) are stored with the next checkpoint of their graph
   saved at or after their step; with `durability="exit"` (one checkpoint, at
   the end) every record of the run, subgraphs included, goes with it. A store
   call that fails puts its records back in the buffer for the retry.
4. A record is counted only while the checkpoint its write belongs to is
   stored: LangGraph ignores writes of a checkpoint that was never saved (a
   process killed under `durability="async"` after the writes and before the
   checkpoint), and so does the TaskContext. Records taken for a `put_writes`
   stay "in flight" until it returns; a checkpoint put meanwhile (LangGraph
   may save the next checkpoint first) stores them with itself, so a saved
   step never loses its records. A record stored twice that way keeps its id
   and counts once. Limit: under `durability="async"`, records made inside a
   subgraph of a parent step whose checkpoint was never saved can still count.

Stored records travel with their checkpoints: `copy_thread` copies them,
`delete_thread` removes them, `prune(keep_latest)` moves them onto the kept
checkpoint, and `delete_for_runs` removes the records of those runs (each record
write carries its run digest in `task_path`). LangGraph never sees them: the
saver leaves `RECORD_CHANNEL` out of `pending_writes`.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiecs_checkpoint.domain.models import parse_timestamp, utc_now
from aiecs_checkpoint.domain.task_context import (
    ContextUpdate,
    FileOperation,
    ModelUsage,
    RecordStamp,
    TaskContext,
)
from aiecs_checkpoint.stores.records import (
    RECORD_CHANNEL,
    WriteRow,
    random_id,
    run_key,
)

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

    def as_dict(self, at: datetime) -> RecordStamp:
        return RecordStamp(
            thread_id=self.thread_id,
            checkpoint_ns=self.checkpoint_ns,
            node=self.node,
            task_id=self.task_id,
            step=self.step,
            run_id=self.run_id,
            time=at,
        )


class TaskRecorder(ABC):
    """A checkpointer that keeps task records (`ContextEngineSaver`): what the
    node helpers and `ModelUsageTracker` find in a run's config and record into."""

    @abstractmethod
    def record(
        self, kind: str, data: Mapping[str, Any], stamp: Stamp
    ) -> dict[str, Any]:
        """Buffer a record of the running task until its writes are saved."""

    @abstractmethod
    def get_task_context(
        self, thread_id: str, *, include_unsaved: bool = False
    ) -> TaskContext:
        """The thread's TaskContext rebuilt from its records (the saver's
        `get_task_context`, which `current_task_context()` calls)."""

    @abstractmethod
    async def aget_task_context(
        self, thread_id: str, *, include_unsaved: bool = False
    ) -> TaskContext:
        """Async `get_task_context`."""


def new_record(kind: str, data: Mapping[str, Any], stamp: Stamp) -> dict[str, Any]:
    """A record stamped now."""
    if kind not in KINDS:
        raise ValueError(f"record kind must be one of {KINDS}, got {kind!r}")
    return {
        "id": random_id(),
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
class Waiting:
    """A buffered record: its task, the graph namespace and step of that task."""

    task_id: str
    graph_ns: str
    step: int
    row: WriteRow

    def inside(self, graph_ns: str) -> bool:
        """True when the task ran in graph `graph_ns` or in a subgraph of it."""
        return (
            graph_ns == ""
            or self.graph_ns == graph_ns
            or self.graph_ns.startswith(graph_ns + "|")
        )


class RecordBuffer:
    """Serialized records of running tasks, until their writes are saved.

    Per saver and per process, safe across threads (parallel tasks record
    concurrently); indexed by thread, so a put only looks at its own thread.
    """

    def __init__(self, max_tasks: int = MAX_BUFFERED_TASKS) -> None:
        self._lock = threading.Lock()
        self._max = max_tasks
        self._threads: dict[str, dict[str, list[Waiting]]] = {}
        self._flight: dict[str, dict[str, list[Waiting]]] = {}
        self._order: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.dropped = 0

    def add(self, stamp: Stamp, row: WriteRow) -> None:
        step = stamp.step if stamp.step is not None else -1
        item = Waiting(stamp.task_id, stamp.graph_ns, step, row)
        with self._lock:
            self._put([item], stamp.thread_id)
            while len(self._order) > self._max:
                (thread_id, task_id), _ = self._order.popitem(last=False)
                lost = self._threads[thread_id].pop(task_id)
                if not self._threads[thread_id]:
                    del self._threads[thread_id]
                self.dropped += len(lost)
                logger.warning(
                    "dropped %d tracking records of a task whose writes were never "
                    "saved (more than %d tasks waiting)",
                    len(lost),
                    self._max,
                )

    def _put(self, items: Iterable[Waiting], thread_id: str) -> None:
        tasks = self._threads.setdefault(thread_id, {})
        for item in items:
            tasks.setdefault(item.task_id, []).append(item)
            self._order[(thread_id, item.task_id)] = None

    def put_back(self, thread_id: str, items: Iterable[Waiting]) -> None:
        """Return taken records whose store call failed (kept for the retry)."""
        items = list(items)
        with self._lock:
            self._land(thread_id, items)
            self._put(items, thread_id)

    def take(self, thread_id: str, task_id: str) -> list[Waiting]:
        """The task's records, moved from the buffer to in flight (its writes
        are saving): until `landed`, a checkpoint put covering their step
        stores them too (`take_finished`)."""
        with self._lock:
            tasks = self._threads.get(thread_id)
            if not tasks or task_id not in tasks:
                return []
            self._order.pop((thread_id, task_id), None)
            taken = tasks.pop(task_id)
            if not tasks:
                del self._threads[thread_id]
            flying = self._flight.setdefault(thread_id, {})
            flying.setdefault(task_id, []).extend(taken)
            return taken

    def landed(self, thread_id: str, items: Iterable[Waiting]) -> None:
        """Taken records whose store call returned: no longer in flight."""
        if thread_id not in self._flight:
            return
        with self._lock:
            self._land(thread_id, items)

    def _land(self, thread_id: str, items: Iterable[Waiting]) -> None:
        flying = self._flight.get(thread_id)
        if not flying:
            return
        for item in items:
            left = flying.get(item.task_id)
            if left is None:
                continue
            left[:] = [w for w in left if w is not item]
            if not left:
                del flying[item.task_id]
        if not flying:
            del self._flight[thread_id]

    def take_finished(
        self, thread_id: str, graph_ns: str, step: int, at_exit: bool
    ) -> list[Waiting]:
        """Records that go with a checkpoint of graph `graph_ns` at `step`: its
        tasks of steps <= `step` (their step is over, so their writes will not
        be saved on their own any more); at exit (`durability="exit"`, the only
        checkpoint saved) also every task of its subgraphs.

        Records in flight (their task's put_writes has not returned) of those
        steps are included too: LangGraph may store this checkpoint, which
        holds their task's output, before that call lands, and a process
        dying in between must not lose them. Both calls may then store such
        a record; it keeps its id, and a TaskContext counts each id once."""
        if thread_id not in self._threads and thread_id not in self._flight:
            # nothing buffered (the usual put): no lock; a record buffered
            # meanwhile is one this call could have run before anyway
            return []

        def covered(w: Waiting) -> bool:
            inside = w.inside(graph_ns) if at_exit else w.graph_ns == graph_ns
            return inside and (at_exit or w.step <= step)

        with self._lock:
            taken = self._take_from(self._threads, thread_id, covered, True)
            return taken + self._take_from(self._flight, thread_id, covered, False)

    def _take_from(
        self,
        where: dict[str, dict[str, list[Waiting]]],
        thread_id: str,
        covered: Callable[[Waiting], bool],
        ordered: bool,
    ) -> list[Waiting]:
        """Remove and return the thread's records `covered` selects from
        `where` (the buffer, `ordered` by task age, or the in-flight map)."""
        tasks = where.get(thread_id)
        if not tasks:
            return []
        taken: list[Waiting] = []
        for task_id in list(tasks):
            done = [w for w in tasks[task_id] if covered(w)]
            if not done:
                continue
            taken += done
            left = [w for w in tasks[task_id] if w not in done]
            if left:
                tasks[task_id] = left
            else:
                del tasks[task_id]
                if ordered:
                    self._order.pop((thread_id, task_id), None)
        if not tasks:
            del where[thread_id]
        return taken

    def waiting(self, thread_id: str) -> list[WriteRow]:
        """Records of the thread not saved yet, buffered or in flight (they
        stay where they are)."""
        with self._lock:
            found = []
            for where in (self._threads, self._flight):
                tasks = where.get(thread_id, {})
                found += [w.row for items in tasks.values() for w in items]
            return found

    def forget(self, thread_id: str, run_keys: set[str] | None = None) -> None:
        """Drop the thread's buffered records (deleted with it), or only those of
        `run_keys` (`delete_for_runs`)."""

        def doomed(w: Waiting) -> bool:
            return run_keys is None or w.row.task_path in run_keys

        with self._lock:
            self._take_from(self._threads, thread_id, doomed, True)
            self._take_from(self._flight, thread_id, doomed, False)

    def threads(self) -> list[str]:
        """Threads with records buffered or in flight."""
        with self._lock:
            return list(self._threads.keys() | self._flight.keys())


def rows(items: Iterable[Waiting]) -> list[WriteRow]:
    return [w.row for w in items]


def is_record(row: WriteRow) -> bool:
    return row.channel == RECORD_CHANNEL


def task_context(thread_id: str, records: Iterable[Mapping[str, Any]]) -> TaskContext:
    """The thread's TaskContext, rebuilt from its records in time order.

    Every model call is an entry of `model_tracker` (with token counts, latency
    and error when known; repeated calls are not merged, each one counts), the
    last operation per path is in `file_tracker`, and every record is an entry
    of `context_history` whose metadata holds the record's stamp under
    "stamp" (beside the metadata given to `add_context_update`).
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
            ctx.model_tracker.append(model_usage(data, at, stamp))
            update = ContextUpdate(at, "model_usage", data, {"stamp": stamp})
        elif kind == "file_operation":
            path = data["path"]
            ctx.file_tracker[path] = FileOperation(
                operation=data["operation"],
                source=data["source"],
                timestamp=at,
                state="active",
            )
            update = ContextUpdate(at, "file_operation", data, {"stamp": stamp})
        else:
            meta = {**dict(data.get("metadata") or {}), "stamp": stamp}
            update = ContextUpdate(at, data["update_type"], data["data"], meta)
        ctx.context_history.append(update)
    return ctx


def model_usage(data: Mapping[str, Any], at: datetime, stamp: Any) -> ModelUsage:
    """A `model_tracker` entry with every `ModelUsage` key (None when a figure
    was not recorded, as in records stored before the figures existed)."""
    return ModelUsage(
        model_id=str(data["model_id"]),
        provider_id=str(data["provider_id"]),
        mode=str(data["mode"]),
        timestamp=at,
        input_tokens=data.get("input_tokens"),
        output_tokens=data.get("output_tokens"),
        total_tokens=data.get("total_tokens"),
        latency_ms=data.get("latency_ms"),
        error=data.get("error"),
        stamp=stamp,
    )


__all__ = [
    "KINDS",
    "RECORD_CHANNEL",
    "RecordBuffer",
    "Stamp",
    "TaskRecorder",
    "Waiting",
    "is_record",
    "model_usage",
    "new_record",
    "record_row",
    "task_context",
]
