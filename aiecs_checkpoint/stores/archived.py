"""A hot checkpoint store with the ClickHouse archive behind it.

Every write goes to the hot store first (its result is the caller's result),
then its rows are queued for the archive; the archive can never slow down or
fail a write. A read the hot store cannot answer (a thread expired by TTL, or a
flushed / replaced Redis) restores the whole thread from the archive into the
hot store and is answered from there, so every read path (get, list, the delta
walk, state history) returns exactly what was saved. Threads found absent from
the archive are remembered briefly, so a new thread costs one archive query.

History rewrites (prune, delete_for_runs, copy_thread) restore what they need,
run on the hot store, then replace the thread's archived rows with the result:
deleted means deleted in both tiers. `delete_for_runs` finds the threads that
hold those runs in the outbox, then in ClickHouse (in that order, so a row
delivered meanwhile is not missed); it raises `StoreError` when the archive
cannot answer, rather than leave archived checkpoints behind. A rewrite raises
`StoreError` too, changing nothing, for a thread the hot store lost while this
process still queues rows of it (the archive's copy is not complete yet).

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

import asyncio
import builtins
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from aiecs_checkpoint.errors import StoreError
from aiecs_checkpoint.stores import clickhouse_layout as C
from aiecs_checkpoint.stores import model
from aiecs_checkpoint.stores.base import (
    CheckpointRow,
    DeltaHistory,
    ListValue,
    StoredTuple,
    ValueWrite,
    Version,
    WriteRow,
)
from aiecs_checkpoint.stores.clickhouse import Archive

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

Head = tuple[int, CheckpointRow]
"""A listed thread: its activity ms and latest row."""


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

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._at: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, thread_id: object) -> bool:
        at = self._at.get(thread_id)  # type: ignore[call-overload]
        return at is not None and time.monotonic() - at < ABSENT_TTL_S

    def add(self, thread_id: str) -> None:
        self._at[thread_id] = time.monotonic()
        self._at.move_to_end(thread_id)
        while len(self._at) > self._size:
            self._at.popitem(last=False)

    def discard(self, thread_id: str) -> None:
        self._at.pop(thread_id, None)


class _Tiering:
    """What the sync and async faces share: the archive and the rows to queue."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.absent = _Absent()

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

    def archived_writes(
        self, thread_id: str, ns: str, cid: str, writes: Sequence[WriteRow]
    ) -> None:
        rows = C.Rows.empty()
        C.write_rows(thread_id, ns, cid, writes, rows)
        self.archive.enqueue(rows, thread_id)

    def replace(self, thread_id: str, thread: model.Thread, at: datetime) -> None:
        """Queue: remove the thread's rows archived up to `at`, then write
        `thread` whole (an empty one as its listing tombstones), archived just
        after `at`."""
        self.archive.enqueue_delete(C.THREAD_TABLES, "thread_id", thread_id, at)
        rows = C.Rows.empty()
        C.delete_row(thread_id, at, rows)
        C.thread_rows(thread_id, thread, rows, at + timedelta(microseconds=1))
        self.archive.enqueue(rows, thread_id)
        if not thread:
            self.absent.add(thread_id)

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

    def fetch(self, thread_id: str, deleted_us: int | None) -> model.Thread | None:
        """The archived thread, without rows archived before `deleted_us`: {}
        when absent or the archive is unavailable, None when this process still
        queues rows or deletes of it (what ClickHouse holds is stale and cannot
        be restored yet; a thread this process emptied is in `absent`)."""
        if thread_id in self.absent:
            return {}
        if self.archive.pending(thread_id):
            self.archive.flush(PENDING_FLUSH_S)
            if self.archive.pending(thread_id):
                return None
        after = None
        if deleted_us is not None:
            after = _EPOCH + timedelta(microseconds=deleted_us)
        try:
            thread = self.archive.read_thread(thread_id, after)
        except StoreError as exc:
            # The writer already reports an unreachable archive (once, WARNING);
            # a miss during an outage is counted, not logged per thread.
            logger.debug(
                "cannot restore thread %r from the archive: %s", thread_id, exc
            )
            self.archive.counters.failed_reads += 1
            return {}
        if not thread:
            self.absent.add(thread_id)
        return thread


def _behind(thread_id: str) -> StoreError:
    return StoreError(
        f"thread {thread_id!r} is not in the hot store and the archive has not "
        "caught up with this process's writes of it yet; nothing was changed, "
        "try again"
    )


class ArchivedStore:
    """Sync face: a `CheckpointStore` over a hot store plus the archive."""

    def __init__(self, hot: Any, archive: Archive) -> None:
        self.hot = hot
        self.tier = _Tiering(archive)
        self.backend = hot.backend

    def _restore(self, thread_id: str, strict: bool = False) -> bool:
        if thread_id in self.tier.absent:
            return False
        thread = self.tier.fetch(thread_id, self.hot.deleted_at(thread_id))
        if thread is None and strict:
            raise _behind(thread_id)
        if thread:
            self.hot.import_thread(thread_id, thread)
        return bool(thread)

    def _absent(self, thread_id: str) -> bool:
        return next(iter(self.hot.list(thread_id, None)), None) is None

    def put_checkpoint(
        self, row: CheckpointRow, values: dict[str, tuple[Version, ValueWrite]]
    ) -> dict[str, ListValue]:
        assigned: dict[str, ListValue] = self.hot.put_checkpoint(row, values)
        self.tier.archived_put(row, values, assigned)
        return assigned

    def put_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
    ) -> None:
        self.hot.put_writes(thread_id, checkpoint_ns, checkpoint_id, rows)
        self.tier.archived_writes(thread_id, checkpoint_ns, checkpoint_id, rows)

    def get(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
    ) -> StoredTuple | None:
        found: StoredTuple | None = self.hot.get(
            thread_id, checkpoint_ns, checkpoint_id
        )
        if found is None and self._absent(thread_id) and self._restore(thread_id):
            found = self.hot.get(thread_id, checkpoint_ns, checkpoint_id)
        return found

    def list(
        self,
        thread_id: str | None,
        checkpoint_ns: str | None,
        before: str | None = None,
    ) -> Iterator[StoredTuple]:
        stream = iter(self.hot.list(thread_id, checkpoint_ns, before))
        first = next(stream, None)
        if first is None and thread_id is not None:
            if self._absent(thread_id) and self._restore(thread_id):
                yield from self.hot.list(thread_id, checkpoint_ns, before)
            return
        if first is not None:
            yield first
            yield from stream

    def delta_history(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        channels: Sequence[str],
    ) -> DeltaHistory | None:
        found: DeltaHistory | None = self.hot.delta_history(
            thread_id, checkpoint_ns, checkpoint_id, channels
        )
        if found is None and self._absent(thread_id) and self._restore(thread_id):
            found = self.hot.delta_history(
                thread_id, checkpoint_ns, checkpoint_id, channels
            )
        return found

    def delete_thread(self, thread_id: str) -> None:
        us, at = _stamp()
        self.hot.mark_deleted(thread_id, us, DELETED_TTL_S)
        self.hot.delete_thread(thread_id)
        self.tier.replace(thread_id, {}, at)

    def _ensure(self, thread_ids: Iterable[str]) -> builtins.list[str]:
        """Restore what a history rewrite needs (`StoreError` when it cannot)."""
        ids = list(dict.fromkeys(thread_ids))
        for t in ids:
            if self._absent(t):
                self._restore(t, strict=True)
        return ids

    def _marked(self, thread_ids: Iterable[str]) -> tuple[builtins.list[str], datetime]:
        """Restore the threads a rewrite needs, then mark them deleted until now."""
        ids = self._ensure(thread_ids)
        us, at = _stamp()
        for t in ids:
            self.hot.mark_deleted(t, us, DELETED_TTL_S)
        return ids, at

    def _rearchive(self, thread_ids: Iterable[str], at: datetime) -> None:
        for t in thread_ids:
            self.tier.replace(t, self.hot.export_thread(t), at)

    def delete_runs(self, run_keys: Iterable[str]) -> None:
        keys = list(run_keys)
        threads, at = self._marked(self.tier.threads_for_runs(keys))
        self.hot.delete_runs(keys)
        self._rearchive(threads, at)

    def prune(self, thread_ids: Iterable[str], keep_latest: bool) -> None:
        ids, at = self._marked(thread_ids)
        self.hot.prune(ids, keep_latest)
        self._rearchive(ids, at)

    def copy_thread(self, source: str, target: str) -> None:
        self._ensure([source, target])
        _, at = _stamp()
        self.hot.copy_thread(source, target)
        self._rearchive([target], at)

    def import_thread(self, thread_id: str, thread: model.Thread) -> None:
        """Replace the thread in both tiers (what was archived of it before
        is never restored over it)."""
        us, at = _stamp()
        self.hot.mark_deleted(thread_id, us, DELETED_TTL_S)
        self.hot.import_thread(thread_id, thread)
        self.tier.absent.discard(thread_id)
        self.tier.replace(thread_id, thread, at)

    def count_checkpoints(self) -> int:
        return int(self.hot.count_checkpoints())

    def thread_heads(
        self, before: Key | None, limit: int
    ) -> tuple[builtins.list[Head], Key | None]:
        hot, hot_resume = self.hot.thread_heads(before, limit)
        page = self.tier.archived_heads(before, limit)
        if page is None:
            return builtins.list(hot), hot_resume
        archived, resume = page
        in_hot = self.hot.latest_rows([a.thread_id for a in archived])
        return merge_heads(hot, hot_resume, archived, resume, in_hot)

    def latest_rows(
        self, thread_ids: Sequence[str]
    ) -> Sequence[tuple[CheckpointRow | None, int | None]]:
        return self.hot.latest_rows(thread_ids)  # type: ignore[no-any-return]

    def ping(self) -> None:
        self.hot.ping()

    def export_thread(self, thread_id: str) -> model.Thread:
        self._ensure([thread_id])
        return self.hot.export_thread(thread_id)  # type: ignore[no-any-return]

    def thread_records(self, thread_id: str) -> builtins.list[WriteRow]:
        if self._absent(thread_id):
            self._restore(thread_id)
        return self.hot.thread_records(thread_id)  # type: ignore[no-any-return]

    def mark_deleted(self, thread_id: str, at_us: int, ttl_s: int) -> None:
        self.hot.mark_deleted(thread_id, at_us, ttl_s)

    def deleted_at(self, thread_id: str) -> int | None:
        return self.hot.deleted_at(thread_id)  # type: ignore[no-any-return]


class AsyncArchivedStore:
    """Async face: the same behaviour over an async hot store; archive reads run
    in a worker thread so the event loop never waits on ClickHouse."""

    def __init__(self, hot: Any, tier: _Tiering) -> None:
        self.hot = hot
        self.tier = tier

    async def _restore(self, thread_id: str, strict: bool = False) -> bool:
        if thread_id in self.tier.absent:
            return False
        deleted_us = await self.hot.deleted_at(thread_id)
        thread = await asyncio.to_thread(self.tier.fetch, thread_id, deleted_us)
        if thread is None and strict:
            raise _behind(thread_id)
        if thread:
            await self.hot.import_thread(thread_id, thread)
        return bool(thread)

    async def _absent(self, thread_id: str) -> bool:
        async for _ in self.hot.list(thread_id, None):
            return False
        return True

    async def put_checkpoint(
        self, row: CheckpointRow, values: dict[str, tuple[Version, ValueWrite]]
    ) -> dict[str, ListValue]:
        assigned: dict[str, ListValue] = await self.hot.put_checkpoint(row, values)
        self.tier.archived_put(row, values, assigned)
        return assigned

    async def put_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
    ) -> None:
        await self.hot.put_writes(thread_id, checkpoint_ns, checkpoint_id, rows)
        self.tier.archived_writes(thread_id, checkpoint_ns, checkpoint_id, rows)

    async def get(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
    ) -> StoredTuple | None:
        found: StoredTuple | None = await self.hot.get(
            thread_id, checkpoint_ns, checkpoint_id
        )
        if found is None and await self._absent(thread_id):
            if await self._restore(thread_id):
                found = await self.hot.get(thread_id, checkpoint_ns, checkpoint_id)
        return found

    async def list(
        self,
        thread_id: str | None,
        checkpoint_ns: str | None,
        before: str | None = None,
    ) -> AsyncIterator[StoredTuple]:
        stream = self.hot.list(thread_id, checkpoint_ns, before)
        first = await anext(stream, None)
        if first is None and thread_id is not None:
            if await self._absent(thread_id) and await self._restore(thread_id):
                async for item in self.hot.list(thread_id, checkpoint_ns, before):
                    yield item
            return
        if first is not None:
            yield first
            async for item in stream:
                yield item

    async def delta_history(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        channels: Sequence[str],
    ) -> DeltaHistory | None:
        found: DeltaHistory | None = await self.hot.delta_history(
            thread_id, checkpoint_ns, checkpoint_id, channels
        )
        if found is None and await self._absent(thread_id):
            if await self._restore(thread_id):
                found = await self.hot.delta_history(
                    thread_id, checkpoint_ns, checkpoint_id, channels
                )
        return found

    async def delete_thread(self, thread_id: str) -> None:
        us, at = _stamp()
        await self.hot.mark_deleted(thread_id, us, DELETED_TTL_S)
        await self.hot.delete_thread(thread_id)
        self.tier.replace(thread_id, {}, at)

    async def _ensure(self, thread_ids: Iterable[str]) -> builtins.list[str]:
        ids = list(dict.fromkeys(thread_ids))
        for t in ids:
            if await self._absent(t):
                await self._restore(t, strict=True)
        return ids

    async def _marked(
        self, thread_ids: Iterable[str]
    ) -> tuple[builtins.list[str], datetime]:
        ids = await self._ensure(thread_ids)
        us, at = _stamp()
        for t in ids:
            await self.hot.mark_deleted(t, us, DELETED_TTL_S)
        return ids, at

    async def _rearchive(self, thread_ids: Iterable[str], at: datetime) -> None:
        for t in thread_ids:
            self.tier.replace(t, await self.hot.export_thread(t), at)

    async def delete_runs(self, run_keys: Iterable[str]) -> None:
        keys = list(run_keys)
        found = await asyncio.to_thread(self.tier.threads_for_runs, keys)
        threads, at = await self._marked(found)
        await self.hot.delete_runs(keys)
        await self._rearchive(threads, at)

    async def prune(self, thread_ids: Iterable[str], keep_latest: bool) -> None:
        ids, at = await self._marked(thread_ids)
        await self.hot.prune(ids, keep_latest)
        await self._rearchive(ids, at)

    async def copy_thread(self, source: str, target: str) -> None:
        await self._ensure([source, target])
        _, at = _stamp()
        await self.hot.copy_thread(source, target)
        await self._rearchive([target], at)

    async def import_thread(self, thread_id: str, thread: model.Thread) -> None:
        """See `ArchivedStore.import_thread`."""
        us, at = _stamp()
        await self.hot.mark_deleted(thread_id, us, DELETED_TTL_S)
        await self.hot.import_thread(thread_id, thread)
        self.tier.absent.discard(thread_id)
        self.tier.replace(thread_id, thread, at)

    async def count_checkpoints(self) -> int:
        return int(await self.hot.count_checkpoints())

    async def thread_heads(
        self, before: Key | None, limit: int
    ) -> tuple[builtins.list[Head], Key | None]:
        hot, hot_resume = await self.hot.thread_heads(before, limit)
        page = await asyncio.to_thread(self.tier.archived_heads, before, limit)
        if page is None:
            return builtins.list(hot), hot_resume
        archived, resume = page
        in_hot = await self.hot.latest_rows([a.thread_id for a in archived])
        return merge_heads(hot, hot_resume, archived, resume, in_hot)

    async def latest_rows(
        self, thread_ids: Sequence[str]
    ) -> Sequence[tuple[CheckpointRow | None, int | None]]:
        return await self.hot.latest_rows(thread_ids)  # type: ignore[no-any-return]

    async def export_thread(self, thread_id: str) -> model.Thread:
        await self._ensure([thread_id])
        return await self.hot.export_thread(thread_id)  # type: ignore[no-any-return]

    async def thread_records(self, thread_id: str) -> builtins.list[WriteRow]:
        if await self._absent(thread_id):
            await self._restore(thread_id)
        return await self.hot.thread_records(thread_id)  # type: ignore[no-any-return]

    async def ping(self) -> None:
        await self.hot.ping()

    async def mark_deleted(self, thread_id: str, at_us: int, ttl_s: int) -> None:
        await self.hot.mark_deleted(thread_id, at_us, ttl_s)

    async def deleted_at(self, thread_id: str) -> int | None:
        return await self.hot.deleted_at(thread_id)  # type: ignore[no-any-return]
