"""The saver's side of tracking: buffering task records, rebuilding TaskContexts.

Records made by the node helpers (`tracking.nodes`) and `ModelUsageTracker`
are serialized at once (a value the serializer rejects fails in the node) and
buffered until their task's writes are saved (`saver.writes`). A thread's
TaskContext is rebuilt from its stored record writes, optionally with the
records this process has not saved yet.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from aiecs_checkpoint.domain.task_context import TaskContext
from aiecs_checkpoint.saver.codec import check_thread_id, dumps
from aiecs_checkpoint.saver.context import SaverContext
from aiecs_checkpoint.stores.ops import Op
from aiecs_checkpoint.tracking import records


class Recording:
    """Task records of one saver."""

    def __init__(self, ctx: SaverContext) -> None:
        self.ctx = ctx

    def record(
        self, kind: str, data: Mapping[str, Any], stamp: records.Stamp
    ) -> dict[str, Any]:
        """Serialize a record of the running task and buffer it until its
        writes are saved."""
        record = records.new_record(kind, data, stamp)
        value = dumps(self.ctx.serde, record, f"{kind} record")
        self.ctx.records.add(stamp, records.record_row(record, value, stamp.run_id))
        return record

    def task_context(self, thread_id: str, include_unsaved: bool) -> Op[TaskContext]:
        """The thread's TaskContext from its stored (and maybe unsaved) records."""
        thread_id = check_thread_id(thread_id)
        rows = yield from self.ctx.engine.checkpoints.thread_records(thread_id)
        if include_unsaved:
            rows += self.ctx.records.waiting(thread_id)
        found: builtins.list[Any] = [self.ctx.serde.loads_typed(w.value) for w in rows]
        return records.task_context(thread_id, found)


__all__ = ["Recording"]
