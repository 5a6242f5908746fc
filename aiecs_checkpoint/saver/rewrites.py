"""The saver's history rewrites: delete_thread, delete_for_runs, copy_thread, prune.

The stores do the rewriting (DeltaChannel-safe: `stores.thread_model`); this
part validates the arguments and keeps the saver's own state in step: the
cache forgets the list generations of rewritten threads, and buffered task
records of deleted threads or runs are dropped with them.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiecs_checkpoint.saver.checks import check_ids, check_run_id
from aiecs_checkpoint.saver.codec import check_strategy, check_thread_id
from aiecs_checkpoint.saver.context import SaverContext
from aiecs_checkpoint.stores.ops import Op
from aiecs_checkpoint.stores.records import run_key


class Rewrites:
    """Deleting, copying and pruning threads as store operations."""

    def __init__(self, ctx: SaverContext) -> None:
        self.ctx = ctx

    def delete_thread(self, thread_id: str) -> Op[None]:
        """Delete every checkpoint, value and write of a thread."""
        thread_id = check_thread_id(thread_id)
        yield from self.ctx.engine.checkpoints.delete_thread(thread_id)
        self.ctx.cache.forget_thread(thread_id)
        self.ctx.records.forget(thread_id)

    def delete_for_runs(self, run_ids: Sequence[str]) -> Op[None]:
        """Delete the checkpoints and writes of the given runs (and records)."""
        checked = check_ids(run_ids, "run_ids", check_run_id)
        keys = [k for k in map(run_key, checked) if k is not None]
        yield from self.ctx.engine.checkpoints.delete_runs(keys)
        doomed = set(keys)
        for thread_id in self.ctx.records.threads():
            self.ctx.records.forget(thread_id, doomed)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> Op[None]:
        """Copy every namespace of a thread, with full parent chains and writes."""
        src = check_thread_id(source_thread_id)
        dst = check_thread_id(target_thread_id)
        if src != dst:
            yield from self.ctx.engine.checkpoints.copy_thread(src, dst)

    def prune(self, thread_ids: Sequence[str], strategy: str) -> Op[None]:
        """Keep the latest checkpoint per namespace (`keep_latest`) or delete all."""
        keep_latest = check_strategy(strategy)
        threads = check_ids(thread_ids, "thread_ids", check_thread_id)
        yield from self.ctx.engine.checkpoints.prune(threads, keep_latest)
        for t in threads:
            self.ctx.cache.forget_thread(t)
            if not keep_latest:
                self.ctx.records.forget(t)


__all__ = ["Rewrites"]
