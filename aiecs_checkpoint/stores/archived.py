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
deleted means deleted in both tiers. `delete_for_runs` first flushes the outbox
and asks the archive which threads hold those runs; it raises `StoreError` when
the archive cannot answer, rather than leave archived checkpoints behind.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
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

    def replace(self, thread_id: str, thread: model.Thread) -> None:
        """Queue: remove the thread's archived rows, then write `thread` whole."""
        self.archive.enqueue_delete(C.THREAD_TABLES, "thread_id", thread_id)
        if not thread:
            self.absent.add(thread_id)
        if thread:
            rows = C.Rows.empty()
            C.thread_rows(thread_id, thread, rows)
            self.archive.enqueue(rows, thread_id)

    def fetch(self, thread_id: str) -> model.Thread:
        """The archived thread ({} when absent or the archive is unavailable)."""
        if thread_id in self.absent:
            return {}
        if self.archive.pending(thread_id):
            self.archive.flush(PENDING_FLUSH_S)
            if self.archive.pending(thread_id):
                # The archive is behind this process's own writes or deletes of
                # the thread: what it holds is stale, so it must not be restored.
                return {}
        try:
            thread = self.archive.read_thread(thread_id)
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


class ArchivedStore:
    """Sync face: a `CheckpointStore` over a hot store plus the archive."""

    def __init__(self, hot: Any, archive: Archive) -> None:
        self.hot = hot
        self.tier = _Tiering(archive)
        self.backend = hot.backend

    def _restore(self, thread_id: str) -> bool:
        thread = self.tier.fetch(thread_id)
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
        self.hot.delete_thread(thread_id)
        self.tier.replace(thread_id, {})

    def _ensure(self, thread_ids: Iterable[str]) -> builtins.list[str]:
        ids = list(dict.fromkeys(thread_ids))
        for t in ids:
            if self._absent(t):
                self._restore(t)
        return ids

    def _rearchive(self, thread_ids: Iterable[str]) -> None:
        for t in thread_ids:
            self.tier.replace(t, self.hot.export_thread(t))

    def delete_runs(self, run_keys: Iterable[str]) -> None:
        keys = list(run_keys)
        self.tier.archive.flush(PENDING_FLUSH_S)
        threads = self._ensure(self.tier.archive.threads_for_runs(keys))
        self.hot.delete_runs(keys)
        self._rearchive(threads)

    def prune(self, thread_ids: Iterable[str], keep_latest: bool) -> None:
        ids = self._ensure(thread_ids)
        self.hot.prune(ids, keep_latest)
        self._rearchive(ids)

    def copy_thread(self, source: str, target: str) -> None:
        self._ensure([source, target])
        self.hot.copy_thread(source, target)
        self._rearchive([target])

    def count_checkpoints(self) -> int:
        return int(self.hot.count_checkpoints())

    def ping(self) -> None:
        self.hot.ping()

    def export_thread(self, thread_id: str) -> model.Thread:
        self._ensure([thread_id])
        return self.hot.export_thread(thread_id)  # type: ignore[no-any-return]


class AsyncArchivedStore:
    """Async face: the same behaviour over an async hot store; archive reads run
    in a worker thread so the event loop never waits on ClickHouse."""

    def __init__(self, hot: Any, tier: _Tiering) -> None:
        self.hot = hot
        self.tier = tier

    async def _restore(self, thread_id: str) -> bool:
        thread = await asyncio.to_thread(self.tier.fetch, thread_id)
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
        await self.hot.delete_thread(thread_id)
        self.tier.replace(thread_id, {})

    async def _ensure(self, thread_ids: Iterable[str]) -> builtins.list[str]:
        ids = list(dict.fromkeys(thread_ids))
        for t in ids:
            if await self._absent(t):
                await self._restore(t)
        return ids

    async def _rearchive(self, thread_ids: Iterable[str]) -> None:
        for t in thread_ids:
            self.tier.replace(t, await self.hot.export_thread(t))

    async def delete_runs(self, run_keys: Iterable[str]) -> None:
        keys = list(run_keys)
        archive = self.tier.archive
        await asyncio.to_thread(archive.flush, PENDING_FLUSH_S)
        found = await asyncio.to_thread(archive.threads_for_runs, keys)
        threads = await self._ensure(found)
        await self.hot.delete_runs(keys)
        await self._rearchive(threads)

    async def prune(self, thread_ids: Iterable[str], keep_latest: bool) -> None:
        ids = await self._ensure(thread_ids)
        await self.hot.prune(ids, keep_latest)
        await self._rearchive(ids)

    async def copy_thread(self, source: str, target: str) -> None:
        await self._ensure([source, target])
        await self.hot.copy_thread(source, target)
        await self._rearchive([target])

    async def count_checkpoints(self) -> int:
        return int(await self.hot.count_checkpoints())

    async def ping(self) -> None:
        await self.hot.ping()
