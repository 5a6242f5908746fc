"""The saver's writes: put and put_writes, with the task records they carry.

A put serializes only what the store does not hold yet (`codec.encode_put`
with the `SaverCache`), stores it in one store call, and records where the
list elements now live. If the store no longer has an element log the cache
pointed at, or it holds fewer elements than the cache knew of (writes the
server acknowledged and lost: `StaleListBase`), the saver forgets what it
cached of the thread and writes the value again without reuse. Task
records buffered by the tracking helpers go into the same store call as their
task's writes; a call that fails puts them back for the retry.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata

from aiecs_checkpoint.saver.codec import (
    DURABILITY_KEY,
    PutPlan,
    config_for,
    encode_put,
    encode_writes,
    note_written,
    record_lists,
)
from aiecs_checkpoint.saver.context import SaverContext
from aiecs_checkpoint.saver.index import IndexKey
from aiecs_checkpoint.stores.ops import Op
from aiecs_checkpoint.stores.records import StaleListBase
from aiecs_checkpoint.tracking import records


class Writes:
    """put and put_writes as store operations."""

    def __init__(self, ctx: SaverContext) -> None:
        self.ctx = ctx

    def _plan(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
        index: IndexKey,
        reuse: bool = True,
    ) -> PutPlan:
        ctx = self.ctx
        args = (config, checkpoint, metadata, new_versions)
        cache = ctx.cache if reuse else None
        return encode_put(ctx.serde, cache, *args, index=index)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Op[RunnableConfig]:
        """Store a checkpoint; unchanged list elements are not serialized again."""
        if self.ctx.sessions is not None:
            self.ctx.sessions.check(config, metadata)
        index = yield from self.ctx.index_key.get()
        args = (config, checkpoint, metadata, new_versions, index)
        plan = self._plan(*args)
        store = self.ctx.engine.checkpoints
        row, leftovers = plan.row, self._leftover_records(config, plan, metadata)
        with self._records_kept(row.thread_id, leftovers):
            if leftovers:
                yield from store.put_writes(
                    row.thread_id,
                    row.checkpoint_ns,
                    row.checkpoint_id,
                    [w.row for w in leftovers],
                )
            try:
                assigned = yield from store.put_checkpoint(plan.row, plan.values)
            except StaleListBase:
                # The store lost list elements this process had seen (or the
                # thread was rewritten): nothing cached of the thread can be
                # trusted, so forget it and write every element again.
                self.ctx.cache.forget_thread(plan.row.thread_id, logs=True)
                plan = self._plan(*args, reuse=False)
                assigned = yield from store.put_checkpoint(plan.row, plan.values)
        if self.ctx.sessions is not None:
            yield from self.ctx.sessions.on_put(config, checkpoint, metadata)
        record_lists(self.ctx.cache, plan, assigned)
        return config_for(row.thread_id, row.checkpoint_ns, row.checkpoint_id)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Op[None]:
        """Store a task's writes (special writes overwrite, regular are first-wins)
        with the task's buffered records."""
        ctx = self.ctx
        t, rows = encode_writes(
            ctx.serde, config, writes, task_id, task_path, ctx.cache
        )
        if ctx.sessions is not None:
            ctx.sessions.check(config, {})
        note_written(ctx.cache, t, writes)
        assert t.checkpoint_id is not None
        taken = ctx.records.take(t.thread_id, task_id)
        with self._records_kept(t.thread_id, taken):
            yield from ctx.engine.checkpoints.put_writes(
                t.thread_id,
                t.checkpoint_ns,
                t.checkpoint_id,
                rows + records.rows(taken),
            )
        ctx.records.landed(t.thread_id, taken)
        if ctx.sessions is not None:
            yield from ctx.sessions.on_writes(config, writes)

    def _leftover_records(
        self, config: RunnableConfig, plan: PutPlan, metadata: CheckpointMetadata
    ) -> builtins.list[records.Waiting]:
        """Records of this graph's finished steps whose tasks' writes were not
        saved on their own (cancelled tasks) or are not saved yet (their
        put_writes is in flight or not started: LangGraph may store this
        checkpoint, which holds those tasks' output, first); with
        `durability="exit"` (this is the one checkpoint saved), those of its
        subgraphs too. They are stored on this checkpoint, just before it:
        until it lands they are orphan writes, which reads ignore, so they
        appear exactly when the checkpoint does."""
        step = metadata.get("step")
        if not isinstance(step, int):
            return []
        row = plan.row
        at_exit = (config.get("configurable") or {}).get(DURABILITY_KEY) == "exit"
        return self.ctx.records.take_finished(
            row.thread_id, row.checkpoint_ns, step, at_exit
        )

    @contextmanager
    def _records_kept(
        self, thread_id: str, taken: builtins.list[records.Waiting]
    ) -> Iterator[None]:
        """Put taken records back in the buffer when their store call fails, so
        they are saved with the retried call instead of lost."""
        try:
            yield
        except BaseException:
            self.ctx.records.put_back(thread_id, taken)
            raise


__all__ = ["Writes"]
