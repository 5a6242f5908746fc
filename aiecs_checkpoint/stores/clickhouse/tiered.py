"""A hot checkpoint store with the ClickHouse archive behind it.

Every write goes to the hot store first (its result is the caller's result),
then its rows are queued for the archive; the archive can never slow down or
fail a write. A read the hot store cannot answer (a thread expired by TTL, or a
flushed / replaced Redis) restores the whole thread from the archive into the
hot store and is answered from there, so every read path (get, list, the delta
walk, state history) returns exactly what was saved. Threads ClickHouse said
it lacks are remembered briefly, so a new thread costs one archive query.

A read the archive must answer and cannot raises `StoreError`, changing
nothing: ClickHouse unreachable, or this process still queueing rows of the
thread it cannot deliver. A thread is never reported absent (and started anew
by a resumed graph) unless ClickHouse said so. So while the archive is down, a
thread id the hot store does not hold, a new one included, cannot be read.

History rewrites (prune, delete_for_runs, copy_thread) restore what they need,
run on the hot store, then replace the thread's archived rows with the result:
deleted means deleted in both tiers. `delete_for_runs` finds the threads that
hold those runs in the outbox, then in ClickHouse (in that order, so a row
delivered meanwhile is not missed); it raises `StoreError` when the archive
cannot answer, rather than leave archived checkpoints behind. A rewrite raises
`StoreError` too, changing nothing, for a thread the hot store lost while this
process still queues rows of it (the archive's copy is not complete yet).

When the outbox dropped rows of a thread (overflow), the thread's next
checkpoint put, once the outbox has room again, archives it whole anew (as a
rewrite does), so its archived copy is complete again. A restore shows only
whole checkpoints in any case (`model.whole`): those whose rows did not all
arrive (dropped, or queued by a process that died) are left out and the
archived copy is replaced by what was restored; when none is whole, the
restore raises `StoreError`.

A delete reaches the archive later than the hot store (one flush interval, or
an outage's length), so before a thread's history is deleted or rewritten the
hot store is told when (`mark_deleted`, kept `DELETED_TTL_S`): a restore, from
any process sharing the hot store, only takes archived rows written after that
time, so a deleted thread never comes back. Rewritten rows are archived just
after that time. (Across processes this relies on their clocks agreeing to
well under the time between a delete and another process's next write.)

Thread listing merges two pages ordered the same way, by (activity ms, thread
id) descending: the hot store's threads (activity: its registry / index), and
archived threads the hot store lacks (activity: the newest `archived_at` of
their rows, read from `context_threads`). An archived thread is left out when
the hot store has it, when everything archived of it predates its last delete
(`deleted_at`), or while the outbox holds rows of it (as a restore would). The
merged page stops where the shorter-reaching page stops, so the next page
resumes there from both sides. If the archive cannot answer, the page is the
hot store's alone (logged, counted in `failed_reads`).
"""

from __future__ import annotations

import builtins
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone

from aiecs_checkpoint.errors import StoreError
from aiecs_checkpoint.stores import thread_model as model
from aiecs_checkpoint.stores.clickhouse import layout as C
from aiecs_checkpoint.stores.clickhouse.archive import Archive
from aiecs_checkpoint.stores.ops import Blocking, Emit, Op, Stream, advance
from aiecs_checkpoint.stores.protocols import CheckpointStore, Head
from aiecs_checkpoint.stores.records import (
    CheckpointRow,
    DeltaHistory,
    Held,
    IndexQuery,
    ListValue,
    Runs,
    StoredTuple,
    Typed,
    ValueWrite,
    Version,
    WriteRow,
)

logger = logging.getLogger("aiecs_checkpoint.archive")

ABSENT_TTL_S = 30.0
"""How long a thread found in neither tier is not looked up again."""

PENDING_FLUSH_S = 2.0
"""Longest wait for this thread's queued rows before reading the archive."""

DELETED_TTL_S = 7 * 24 * 3600
"""How long the hot store remembers when a thread's history was deleted."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


Key = tuple[int, str]
"""A thread's place in the listing: (activity ms, thread id)."""


def merge_heads(
    hot: Sequence[Head],
    hot_resume: Key | None,
    archived: Sequence[C.ArchivedThread],
    archive_resume: Key | None,
    in_hot: Sequence[tuple[CheckpointRow | None, int | None]],
) -> tuple[builtins.list[Head], Key | None]:
    """The hot page plus the archived threads the hot store lacks and did not
    delete (`in_hot`: the hot store's row and deletion time of each), newest
    first, down to where both pages reach; and the key to resume from."""
    heads = builtins.list(hot)
    for found, (row, deleted_us) in zip(archived, in_hot, strict=True):
        head = found.head(deleted_us) if row is None else None
        if head is not None:
            heads.append((found.ms, head))
    reached = [k for k in (hot_resume, archive_resume) if k is not None]
    bound = max(reached) if reached else None
    heads.sort(key=lambda h: (h[0], h[1].thread_id), reverse=True)
    out: builtins.list[Head] = []
    seen: set[str] = set()
    for ms, row in heads:
        if bound is not None and (ms, row.thread_id) < bound:
            break
        if row.thread_id not in seen:
            seen.add(row.thread_id)
            out.append((ms, row))
    return out, bound


def _stamp() -> tuple[int, datetime]:
    """Now, as whole microseconds and as the same instant in a datetime."""
    us = time.time_ns() // 1000
    return us, _EPOCH + timedelta(microseconds=us)


class _Absent:
    """Threads recently found in neither tier (bounded, expiring)."""

    def __init__(self, size: int = 10_000, ttl_s: float = ABSENT_TTL_S) -> None:
        self._size = size
        self._ttl_s = ttl_s
        self._at: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, thread_id: object) -> bool:
        at = self._at.get(thread_id)  # type: ignore[call-overload]
        return at is not None and time.monotonic() - at < self._ttl_s

    def add(self, thread_id: str) -> None:
        self._at[thread_id] = time.monotonic()
        self._at.move_to_end(thread_id)
        while len(self._at) > self._size:
            self._at.popitem(last=False)

    def discard(self, thread_id: str) -> None:
        self._at.pop(thread_id, None)


class _Tiering:
    """The archive, the rows to queue, and the threads known to be absent."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.absent = _Absent()
        self.emptied = _Absent(ttl_s=float("inf"))
        """Threads whose last queued entry here empties them (a delete): while
        it is queued, ClickHouse's rows of them are known to be stale."""

    def archived_put(
        self,
        row: CheckpointRow,
        values: dict[str, tuple[Version, ValueWrite]],
        assigned: dict[str, ListValue],
    ) -> None:
        rows = C.Rows.empty()
        C.checkpoint_rows(row, values, assigned, rows)
        self.archive.enqueue(rows, row.thread_id)
        self.absent.discard(row.thread_id)
        self.emptied.discard(row.thread_id)

    def archived_writes(
        self, thread_id: str, ns: str, cid: str, writes: Sequence[WriteRow]
    ) -> None:
        rows = C.Rows.empty()
        C.write_rows(thread_id, ns, cid, writes, rows)
        self.archive.enqueue(rows, thread_id)
        self.emptied.discard(thread_id)

    def replace(self, thread_id: str, thread: model.Thread, at: datetime) -> None:
        """Queue: remove the thread's rows archived up to `at`, then write
        `thread` whole (an empty one as its listing tombstones), archived just
        after `at`."""
        self.archive.enqueue_delete(C.THREAD_TABLES, "thread_id", thread_id, at)
        rows = C.Rows.empty()
        C.delete_row(thread_id, at, rows)
        C.thread_rows(thread_id, thread, rows, at + timedelta(microseconds=1))
        self.archive.enqueue(rows, thread_id)
        if thread:
            self.emptied.discard(thread_id)
        else:
            self.absent.add(thread_id)
            self.emptied.add(thread_id)

    def threads_for_runs(self, run_keys: Sequence[str]) -> builtins.list[str]:
        """Threads with checkpoints of those runs in the archive or on their way
        there (`StoreError` when the archive cannot answer). The outbox is read
        first: a row delivered meanwhile is then already in ClickHouse."""
        queued = self.archive.queued_threads_for_runs(run_keys)
        found = self.archive.threads_for_runs(run_keys)
        return list(dict.fromkeys(queued + found))

    def archived_heads(
        self, before: Key | None, limit: int
    ) -> tuple[builtins.list[C.ArchivedThread], Key | None] | None:
        """A page of archived threads, without those the outbox still holds rows
        of, and the key it reaches; None when the archive cannot answer."""
        try:
            page = self.archive.thread_heads(before, limit)
        except StoreError as exc:
            logger.warning("listing threads without the archive: %s", exc)
            self.archive.counters.failed_reads += 1
            return None
        resume = (page[-1].ms, page[-1].thread_id) if len(page) == limit else None
        return [a for a in page if not self.archive.pending(a.thread_id)], resume

    def fetch(self, thread_id: str, deleted_us: int | None) -> tuple[model.Thread, int]:
        """The archived thread, without rows archived before `deleted_us` ({}
        when ClickHouse has none), and without checkpoints that lack rows they
        reference (`model.whole`), with how many were left out. `StoreError`
        when it cannot say: ClickHouse unreachable, or this process still
        queues rows of the thread (what ClickHouse holds is stale); also when
        ClickHouse holds checkpoints of the thread but none whole. A thread
        this process emptied is {} while its delete is queued."""
        if thread_id in self.absent:
            return {}, 0
        if self.archive.pending(thread_id):
            if thread_id in self.emptied:
                return {}, 0
            self.archive.flush(PENDING_FLUSH_S)
            if self.archive.pending(thread_id):
                raise _behind(thread_id)
        self.emptied.discard(thread_id)
        after = None
        if deleted_us is not None:
            after = _EPOCH + timedelta(microseconds=deleted_us)
        try:
            thread = self.archive.read_thread(thread_id, after)
        except StoreError as exc:
            self.archive.counters.failed_reads += 1
            raise StoreError(
                f"thread {thread_id!r} is not in the hot store and the archive "
                f"cannot be read to restore it ({exc}); nothing was changed, "
                "try again when ClickHouse is reachable"
            ) from exc
        if not thread:
            self.absent.add(thread_id)
            return thread, 0
        kept, left_out = model.whole(thread)
        if not kept:
            raise StoreError(
                f"thread {thread_id!r} is not in the hot store and none of its "
                f"{left_out} archived checkpoints is whole (rows of each were "
                "lost before reaching ClickHouse: an outbox overflow, or a process "
                "that died with rows queued); delete the thread to start it anew"
            )
        if left_out:
            logger.warning(
                "thread %r restored from the archive without %d of its "
                "checkpoints, whose rows did not all reach ClickHouse; its "
                "archived copy is replaced by what was restored",
                thread_id,
                left_out,
            )
        return kept, left_out


def _behind(thread_id: str) -> StoreError:
    return StoreError(
        f"thread {thread_id!r} is not in the hot store and the archive has not "
        "caught up with this process's writes of it yet; nothing was changed, "
        "try again"
    )


class ArchivedStore:
    """A `CheckpointStore` over a hot store plus the archive: every operation
    runs the hot store's and queues or reads archive rows around it; archive
    reads are `Blocking` requests, so the event loop never waits on ClickHouse."""

    def __init__(self, hot: CheckpointStore, archive: Archive) -> None:
        self.hot = hot
        self.tier = _Tiering(archive)
        self.backend = hot.backend
        self.skips_held = hot.skips_held

    def _restore(self, thread_id: str) -> Op[bool]:
        """Restore a thread the hot store lacks: True when the archive had it
        (`StoreError` when the archive cannot say)."""
        if thread_id in self.tier.absent:
            return False
        deleted_us = yield from self.hot.deleted_at(thread_id)
        thread, left_out = yield Blocking(self.tier.fetch, (thread_id, deleted_us))
        if left_out:
            # both tiers take the whole part: the archive's partial rows of
            # the thread must never be read again (nor reused by new appends)
            yield from self.import_thread(thread_id, thread)
        elif thread:
            yield from self.hot.import_thread(thread_id, thread)
        return bool(thread)

    def _absent(self, thread_id: str) -> Op[bool]:
        stream = self.hot.list(thread_id, None, None)
        found, _ = yield from advance(stream)
        stream.close()
        return not found

    def _lost(self, thread_id: str) -> Op[bool]:
        """True when the hot store lacks the thread and the archive restored it."""
        absent = yield from self._absent(thread_id)
        return absent and (yield from self._restore(thread_id))

    def put_checkpoint(
        self, row: CheckpointRow, values: dict[str, tuple[Version, ValueWrite]]
    ) -> Op[dict[str, ListValue]]:
        assigned = yield from self.hot.put_checkpoint(row, values)
        self.tier.archived_put(row, values, assigned)
        if self.tier.archive.damaged(row.thread_id):
            yield from self._heal(row.thread_id)
        return assigned

    def _heal(self, thread_id: str) -> Op[None]:
        """Archive the thread whole again: the outbox dropped rows of it, so
        its archived copy lacks some (a restore would show less of it)."""
        us, at = _stamp()
        yield from self.hot.mark_deleted(thread_id, us, DELETED_TTL_S)
        yield from self._rearchive([thread_id], at)

    def put_writes(
        self, thread_id: str, ns: str, cid: str, rows: Sequence[WriteRow]
    ) -> Op[None]:
        yield from self.hot.put_writes(thread_id, ns, cid, rows)
        self.tier.archived_writes(thread_id, ns, cid, rows)

    def get(
        self, thread_id: str, ns: str, cid: str | None, held: Held | None = None
    ) -> Op[StoredTuple | None]:
        found = yield from self.hot.get(thread_id, ns, cid, held)
        if found is None and (yield from self._lost(thread_id)):
            found = yield from self.hot.get(thread_id, ns, cid, held)
        return found

    def list(
        self,
        thread_id: str | None,
        ns: str | None,
        before: str | None,
        held: Callable[[str], Held] | None = None,
    ) -> Stream:
        stream = self.hot.list(thread_id, ns, before, held)
        found, first = yield from advance(stream)
        if not found:
            stream.close()
            if thread_id is not None and (yield from self._lost(thread_id)):
                yield from self.hot.list(thread_id, ns, before, held)
            return
        yield Emit(first)
        yield from stream

    def delta_history(
        self, thread_id: str, ns: str, cid: str | None, channels: Sequence[str]
    ) -> Op[DeltaHistory | None]:
        args = (thread_id, ns, cid, channels)
        found = yield from self.hot.delta_history(*args)
        if found is None and (yield from self._lost(thread_id)):
            found = yield from self.hot.delta_history(*args)
        return found

    def log_items(
        self, thread_id: str, ns: str, channel: str, epoch: str, runs: Runs
    ) -> Op[builtins.list[Typed]]:
        """From the hot store (the ref values pointing there came from it)."""
        return (yield from self.hot.log_items(thread_id, ns, channel, epoch, runs))

    def delete_thread(self, thread_id: str) -> Op[None]:
        us, at = _stamp()
        yield from self.hot.mark_deleted(thread_id, us, DELETED_TTL_S)
        yield from self.hot.delete_thread(thread_id)
        self.tier.replace(thread_id, {}, at)

    def _ensure(self, thread_ids: Iterable[str]) -> Op[builtins.list[str]]:
        """Restore what a history rewrite needs (`StoreError` when it cannot)."""
        ids = builtins.list(dict.fromkeys(thread_ids))
        for t in ids:
            if (yield from self._absent(t)):
                yield from self._restore(t)
        return ids

    def _marked(
        self, thread_ids: Iterable[str]
    ) -> Op[tuple[builtins.list[str], datetime]]:
        """Restore the threads a rewrite needs, then mark them deleted until now."""
        ids = yield from self._ensure(thread_ids)
        us, at = _stamp()
        for t in ids:
            yield from self.hot.mark_deleted(t, us, DELETED_TTL_S)
        return ids, at

    def _rearchive(self, thread_ids: Iterable[str], at: datetime) -> Op[None]:
        for t in thread_ids:
            self.tier.replace(t, (yield from self.hot.export_thread(t)), at)

    def delete_runs(self, run_keys: Iterable[str]) -> Op[None]:
        keys = builtins.list(run_keys)
        found = yield Blocking(self.tier.threads_for_runs, (keys,))
        threads, at = yield from self._marked(found)
        yield from self.hot.delete_runs(keys)
        yield from self._rearchive(threads, at)

    def prune(self, thread_ids: Iterable[str], keep_latest: bool) -> Op[None]:
        ids, at = yield from self._marked(thread_ids)
        yield from self.hot.prune(ids, keep_latest)
        yield from self._rearchive(ids, at)

    def copy_thread(self, source: str, target: str) -> Op[None]:
        yield from self._ensure([source, target])
        _, at = _stamp()
        yield from self.hot.copy_thread(source, target)
        yield from self._rearchive([target], at)

    def count_checkpoints(self) -> Op[int]:
        return (yield from self.hot.count_checkpoints())

    def thread_heads(
        self, before: Key | None, limit: int, query: IndexQuery | None = None
    ) -> Op[tuple[Sequence[Head], Key | None]]:
        """The hot store's page (its thread index's candidates with `query`)
        merged with the archived threads it lacks. The archive has no thread
        index: with `query` its threads are still visited, a page at a time,
        and the saver's filter drops those that do not match."""
        hot, hot_resume = yield from self.hot.thread_heads(before, limit, query)
        page = yield Blocking(self.tier.archived_heads, (before, limit))
        if page is None:
            return builtins.list(hot), hot_resume
        archived, resume = page
        in_hot = yield from self.hot.latest_rows([a.thread_id for a in archived])
        return merge_heads(hot, hot_resume, archived, resume, in_hot)

    def latest_rows(
        self, thread_ids: Sequence[str]
    ) -> Op[Sequence[tuple[CheckpointRow | None, int | None]]]:
        return (yield from self.hot.latest_rows(thread_ids))

    def index_secret(self, fresh: Typed) -> Op[Typed]:
        return (yield from self.hot.index_secret(fresh))

    def ping(self) -> Op[None]:
        yield from self.hot.ping()

    def export_thread(self, thread_id: str) -> Op[model.Thread]:
        yield from self._ensure([thread_id])
        return (yield from self.hot.export_thread(thread_id))

    def import_thread(self, thread_id: str, thread: model.Thread) -> Op[None]:
        """Replace the thread in both tiers (what was archived of it before is
        never restored over it)."""
        us, at = _stamp()
        yield from self.hot.mark_deleted(thread_id, us, DELETED_TTL_S)
        yield from self.hot.import_thread(thread_id, thread)
        self.tier.absent.discard(thread_id)
        self.tier.replace(thread_id, thread, at)

    def thread_records(self, thread_id: str) -> Op[builtins.list[WriteRow]]:
        yield from self._lost(thread_id)
        return (yield from self.hot.thread_records(thread_id))

    def mark_deleted(self, thread_id: str, at_us: int, ttl_s: int) -> Op[None]:
        yield from self.hot.mark_deleted(thread_id, at_us, ttl_s)

    def deleted_at(self, thread_id: str) -> Op[int | None]:
        return (yield from self.hot.deleted_at(thread_id))
