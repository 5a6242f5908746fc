"""The embedded in-process checkpoint store (the default: no server needed).

Threads are kept in the form `stores.model` documents (per namespace: sorted
ids, rows, writes, values shared by version, element logs), so the latest
checkpoint and a checkpoint by id cost O(1) / O(log n) whatever the thread's
length (InMemorySaver scans the whole thread). A store-wide index maps a run-id
digest to the rows it produced, for `delete_for_runs`.

Thread listing reads an activity index: `_activity` (thread -> ms of its last
checkpoint write) and `_recent`, the same pairs as (ms, thread id) in a sorted
list. A put, copy or import moves one entry; a delete (thread, prune, the
last checkpoint of `delete_for_runs`) removes it; a page of threads is a bisect
and a slice, so listing never looks at more than the threads it visits.

With a TTL (`ttl_ms`), each thread has a deadline, moved by every write
(put, writes, copy into it, restore, rewrite) and, with `refresh_on_read`, by
every read of it (get, list, the delta walk): all its namespaces, values,
writes and index entries live exactly as long as the thread, as on Redis. The
TTL is the same for every thread, so deadlines are ordered as the threads were
last touched: `_deadlines` keeps them in that order, and each operation first
drops the expired threads from its front (an expired thread is gone from get,
list, list_threads and delete_for_runs at once, and its memory is freed).

The thread index (`saver.index`) is kept the same way: `_ix_of` maps a thread
to the index entries of its latest row (`records.index_entries`), and `_ix`
maps each entry to its threads as (ms, thread id) in a sorted list, moved with
`_recent` by every write. A put, rewrite (delete_for_runs, prune, copy) or
import re-reads the thread's latest row and moves it between entries only when
they changed; a delete removes it from all of them. A filtered page is a
bisect and a slice of the smallest entry the filter names (plus the key-id
entries of other keys, `_key_entries`), so a filter that matches nothing
costs the same at 400 threads as at 4,000. Per put: O(log n) bisects per entry
of the thread, plus moving list items past the thread's old place.

One re-entrant lock serializes access; every operation is a few dictionary
steps and never runs user code under the lock. Operations need no I/O: each
is an `Op` that yields no request (`yield from NO_IO`), so the engine's sync
and async runners both run it inline, without a thread hop.
"""

from __future__ import annotations

import bisect
import builtins
import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence

from aiecs_checkpoint.stores import thread_model as model
from aiecs_checkpoint.stores.ops import NO_IO, Emit, Op, Stream
from aiecs_checkpoint.stores.protocols import Head, ThreadKey
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
    index_entries,
    is_key_entry,
)
from aiecs_checkpoint.stores.thread_model import (
    latest_row,
    now_ms,
    restored_activity_ms,
)

PAGE = 64
"""Rows resolved per lock acquisition while listing."""

RunRef = tuple[str, str, str]
"""(thread id, namespace, checkpoint id)."""


class MemoryStore:
    """Checkpoint storage in process memory; safe to share between threads.

    Args:
        ttl_ms: each thread's lifetime after its last write (0: forever).
        refresh_on_read: reads of a thread extend its lifetime too.
    """

    backend = "memory"
    skips_held = True

    def __init__(self, ttl_ms: int = 0, refresh_on_read: bool = False) -> None:
        self._lock = threading.RLock()
        self._threads: dict[str, model.Thread] = {}
        self._runs: dict[str, set[RunRef]] = {}
        self._deleted: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._activity: dict[str, int] = {}
        self._recent: list[tuple[int, str]] = []
        self._ttl_s = ttl_ms / 1000
        self._refresh_on_read = refresh_on_read and ttl_ms > 0
        self._deadlines: OrderedDict[str, float] = OrderedDict()
        self._ix_of: dict[str, tuple[str, ...]] = {}
        self._ix: dict[str, list[tuple[int, str]]] = {}
        self._key_entries: set[str] = set()
        self._secret: Typed | None = None

    # -- TTL -------------------------------------------------------------------

    def _keep(self, thread_id: str) -> None:
        """A write to the thread: its deadline moves to now + TTL (lock held)."""
        if self._ttl_s and thread_id in self._threads:
            self._deadlines[thread_id] = time.monotonic() + self._ttl_s
            self._deadlines.move_to_end(thread_id)

    def _read(self, thread_id: str) -> None:
        """A read of the thread: with `refresh_on_read`, a write (lock held)."""
        if self._refresh_on_read:
            self._keep(thread_id)

    def _expire(self) -> None:
        """Drop every thread whose deadline has passed (oldest first)."""
        if not self._deadlines:
            return
        with self._lock:
            now = time.monotonic()
            while self._deadlines:
                thread_id, deadline = next(iter(self._deadlines.items()))
                if deadline > now:
                    break
                self._delete_thread(thread_id)

    def _namespace(self, thread_id: str, checkpoint_ns: str) -> model.Namespace:
        """The namespace, created if new (nothing is built when it exists)."""
        thread = self._threads.get(thread_id)
        if thread is None:
            thread = self._threads[thread_id] = {}
        space = thread.get(checkpoint_ns)
        if space is None:
            space = thread[checkpoint_ns] = model.Namespace()
        return space

    def _ns(self, thread_id: str, checkpoint_ns: str) -> model.Namespace | None:
        return self._threads.get(thread_id, {}).get(checkpoint_ns)

    # -- writing -------------------------------------------------------------

    def put_checkpoint(
        self, row: CheckpointRow, values: dict[str, tuple[Version, ValueWrite]]
    ) -> Op[dict[str, ListValue]]:
        """Store a checkpoint and its new channel values atomically."""
        yield from NO_IO
        self._expire()
        with self._lock:
            ns = self._namespace(row.thread_id, row.checkpoint_ns)
            assigned, replaced = model.put_checkpoint(ns, row, values)
            if replaced is not None:
                self._unindex([replaced])
            self._index([row])
            self._reindex(row.thread_id)
            self._touch(row.thread_id, now_ms())
            self._keep(row.thread_id)
            return assigned

    def put_writes(
        self, thread_id: str, ns: str, cid: str, rows: Sequence[WriteRow]
    ) -> Op[None]:
        """Store a task's writes: special ones overwrite, regular are first-wins."""
        yield from NO_IO
        self._expire()
        with self._lock:
            model.put_writes(self._namespace(thread_id, ns), cid, rows)
            self._keep(thread_id)

    # -- reading -------------------------------------------------------------

    def get(
        self, thread_id: str, ns: str, cid: str | None, held: Held | None = None
    ) -> Op[StoredTuple | None]:
        """The checkpoint by id, or the latest of the namespace when id is None,
        without the list elements the reader holds (`held`)."""
        yield from NO_IO
        with self._lock:
            found = self._row(thread_id, ns, cid)
            return None if found is None else model.resolve(*found, held)

    def _row(
        self, thread_id: str, ns: str, cid: str | None
    ) -> tuple[model.Namespace, CheckpointRow] | None:
        """The namespace and the row read by id (latest when None), after
        expiring threads; a read of the thread for `refresh_on_read`."""
        self._expire()
        with self._lock:
            space = self._ns(thread_id, ns)
            if space is None or not space.ids:
                return None
            row = space.rows.get(cid or space.ids[-1])
            if row is None:
                return None
            self._read(thread_id)
            return space, row

    def list(
        self,
        thread_id: str | None,
        ns: str | None,
        before: str | None,
        held: Callable[[str], Held] | None = None,
    ) -> Stream:
        """Checkpoints newest first (by id) across the selected threads/namespaces."""
        yield from NO_IO
        self._expire()
        with self._lock:
            threads = [thread_id] if thread_id is not None else list(self._threads)
            sources = [
                (t, n)
                for t in threads
                for n in self._threads.get(t, {})
                if ns is None or n == ns
            ]
        streams = [self._iter_ns(t, n, before, held) for t, n in sources]
        merged = (
            streams[0]
            if len(streams) == 1
            else heapq.merge(
                *streams, key=lambda st: st.row.checkpoint_id, reverse=True
            )
        )
        for item in merged:
            yield Emit(item)

    def _iter_ns(
        self,
        thread_id: str,
        ns: str,
        before: str | None,
        held: Callable[[str], Held] | None,
    ) -> Iterator[StoredTuple]:
        cursor = before
        while True:
            self._expire()
            hold = held(thread_id) if held is not None else None
            with self._lock:
                space = self._ns(thread_id, ns)
                if space is None:
                    return
                self._read(thread_id)
                hi = len(space.ids)
                if cursor is not None:
                    hi = bisect.bisect_left(space.ids, cursor)
                page = [
                    model.resolve(space, space.rows[cid], hold)
                    for cid in reversed(space.ids[max(0, hi - PAGE) : hi])
                ]
            if not page:
                return
            yield from page
            cursor = page[-1].row.checkpoint_id

    def delta_history(
        self, thread_id: str, ns: str, cid: str | None, channels: Sequence[str]
    ) -> Op[DeltaHistory | None]:
        """Walk the parent chain of a checkpoint once for all `channels`."""
        yield from NO_IO
        with self._lock:
            found = self._row(thread_id, ns, cid)
            return None if found is None else model.walk(*found, channels)

    def log_items(
        self, thread_id: str, ns: str, channel: str, epoch: str, runs: Runs
    ) -> Op[builtins.list[Typed]]:
        """The serialized elements at `runs` of an element log."""
        yield from NO_IO
        self._expire()
        with self._lock:
            space = self._ns(thread_id, ns)
            log = space.logs.get((channel, epoch), []) if space else []
            out: builtins.list[Typed] = []
            for start, stop in runs:
                out += log[start:stop]
            return out

    # -- deleting and copying --------------------------------------------------

    def delete_thread(self, thread_id: str) -> Op[None]:
        """Remove every namespace, checkpoint, value and write of a thread."""
        yield from NO_IO
        self._expire()
        self._delete_thread(thread_id)

    def _delete_thread(self, thread_id: str) -> None:
        with self._lock:
            for ns in self._threads.pop(thread_id, {}).values():
                self._unindex(ns.rows.values())
            self._untrack(thread_id)
            self._deadlines.pop(thread_id, None)

    def delete_runs(self, run_keys: Iterable[str]) -> Op[None]:
        """Remove the checkpoints (and their writes) of the given runs, and the
        tracking records those runs left on other runs' checkpoints."""
        yield from NO_IO
        self._expire()
        keys = set(run_keys)
        with self._lock:
            doomed: dict[tuple[str, str], set[str]] = {}
            for key in keys:
                for t, n, cid in self._runs.get(key, set()):
                    doomed.setdefault((t, n), set()).add(cid)
            for t in {t for t, _ in doomed}:
                for ns in self._threads[t].values():
                    model.drop_run_records(ns, keys)
            for (t, n), cids in doomed.items():
                self._unindex(model.delete_ids(self._threads[t][n], cids))
                self._drop_if_empty(t, n)
            for t in {t for t, _ in doomed}:
                self._keep(t)  # rewritten, as on Redis
                self._reindex(t)

    def prune(self, thread_ids: Iterable[str], keep_latest: bool) -> Op[None]:
        """Keep only the latest checkpoint per namespace, or delete the threads."""
        yield from NO_IO
        self._expire()
        with self._lock:
            for t in thread_ids:
                if not keep_latest:
                    self._delete_thread(t)
                    continue
                for ns in self._threads.get(t, {}).values():
                    self._unindex(model.keep_latest(ns))
                self._keep(t)
                self._reindex(t)

    def copy_thread(self, source: str, target: str) -> Op[None]:
        """Copy a whole thread (every namespace, full parent chains) to another id."""
        yield from NO_IO
        self._expire()
        with self._lock:
            src = self._threads.get(source)
            if src:
                added = model.copy_into(
                    src, self._threads.setdefault(target, {}), target
                )
                self._index(added)
                self._reindex(target)
                self._touch(target, now_ms())
                self._keep(target)

    # -- whole threads (archive restore) ----------------------------------------

    def export_thread(self, thread_id: str) -> Op[model.Thread]:
        """A deep copy of a thread ({} when absent), e.g. to archive it whole."""
        yield from NO_IO
        self._expire()
        with self._lock:
            return model.clone(self._threads.get(thread_id, {}))

    def thread_records(self, thread_id: str) -> Op[builtins.list[WriteRow]]:
        """Every tracking record write of the thread."""
        yield from NO_IO
        self._expire()
        with self._lock:
            return model.records(self._threads.get(thread_id, {}))

    def import_thread(self, thread_id: str, thread: model.Thread) -> Op[None]:
        """Replace a thread with `thread` (restoring it from the archive)."""
        yield from NO_IO
        self._expire()
        with self._lock:
            known = self._activity.get(thread_id)
            self._delete_thread(thread_id)
            if thread:
                self._threads[thread_id] = model.clone(thread)
                for ns in thread.values():
                    self._index(ns.rows.values())
                self._reindex(thread_id)
                self._touch(thread_id, known or restored_activity_ms(thread))
                self._keep(thread_id)

    def mark_deleted(self, thread_id: str, at_us: int, ttl_s: int) -> Op[None]:
        """Remember a deletion (the archive's restore must not undo it)."""
        yield from NO_IO
        with self._lock:
            now = time.monotonic()
            while self._deleted:  # oldest marks first: expire from the front
                _, (_, end) = next(iter(self._deleted.items()))
                if end > now:
                    break
                self._deleted.popitem(last=False)
            self._deleted.pop(thread_id, None)
            self._deleted[thread_id] = (at_us, now + ttl_s)

    def deleted_at(self, thread_id: str) -> Op[int | None]:
        """When the thread's history was last deleted (µs), if remembered."""
        yield from NO_IO
        return self._deleted_at(thread_id)

    def _deleted_at(self, thread_id: str) -> int | None:
        with self._lock:
            found = self._deleted.get(thread_id)
            if found is None or found[1] <= time.monotonic():
                return None
            return found[0]

    # -- run index -------------------------------------------------------------

    def _index(self, rows: Iterable[CheckpointRow]) -> None:
        for row in rows:
            if row.run_key is not None:
                ref = (row.thread_id, row.checkpoint_ns, row.checkpoint_id)
                self._runs.setdefault(row.run_key, set()).add(ref)

    def _unindex(self, rows: Iterable[CheckpointRow]) -> None:
        for row in rows:
            key = row.run_key
            refs = self._runs.get(key) if key is not None else None
            if key is not None and refs is not None:
                refs.discard((row.thread_id, row.checkpoint_ns, row.checkpoint_id))
                if not refs:
                    del self._runs[key]

    def _drop_if_empty(self, thread_id: str, checkpoint_ns: str) -> None:
        thread = self._threads[thread_id]
        if not thread[checkpoint_ns].rows:
            del thread[checkpoint_ns]
            if not thread:
                del self._threads[thread_id]
                self._untrack(thread_id)

    # -- activity index (thread listing) ---------------------------------------

    def _touch(self, thread_id: str, ms: int) -> None:
        """Record a write to the thread at `ms` (call with the lock held)."""
        old = self._activity.get(thread_id)
        if old == ms:
            return
        self._activity[thread_id] = ms
        for entries in (self._recent, *self._entries_of(thread_id)):
            if old is not None:
                _drop(entries, (old, thread_id))
            _insert(entries, (ms, thread_id))

    def _untrack(self, thread_id: str) -> None:
        old = self._activity.pop(thread_id, None)
        if old is not None:
            _drop(self._recent, (old, thread_id))
        self._move(thread_id, old, ())
        self._ix_of.pop(thread_id, None)

    # -- thread index (filtered thread listing) --------------------------------

    def _entries_of(self, thread_id: str) -> builtins.list[builtins.list[ThreadKey]]:
        return [self._ix[e] for e in self._ix_of.get(thread_id, ())]

    def _reindex(self, thread_id: str) -> None:
        """Put the thread in the index entries of its latest row (call with the
        lock held, before `_touch`)."""
        row = latest_row(self._threads.get(thread_id))
        entries = () if row is None else index_entries(row.index)
        self._move(thread_id, self._activity.get(thread_id), entries)

    def _move(self, thread_id: str, ms: int | None, entries: tuple[str, ...]) -> None:
        """Make `entries` the thread's index entries (it is listed at `ms`)."""
        old = self._ix_of.get(thread_id, ())
        if old == entries:
            return
        for e in set(old) - set(entries):
            listed = self._ix[e]
            if ms is not None:
                _drop(listed, (ms, thread_id))
            if not listed:
                del self._ix[e]
                self._key_entries.discard(e)
        for e in set(entries) - set(old):
            listed = self._ix.setdefault(e, [])
            if is_key_entry(e):
                self._key_entries.add(e)
            if ms is not None:
                _insert(listed, (ms, thread_id))
        self._ix_of[thread_id] = entries

    def _sources(
        self, query: IndexQuery | None
    ) -> builtins.list[builtins.list[ThreadKey]]:
        """The sorted lists a page walks: every thread, or the smallest option
        of the query plus the entries of rows indexed under other keys."""
        if query is None:
            return [self._recent]
        best = min(
            query.options, key=lambda o: sum(len(self._ix.get(e, ())) for e in o)
        )
        names = set(best) | (self._key_entries - {query.key_id})
        return [self._ix[e] for e in sorted(names) if e in self._ix]

    def index_secret(self, fresh: Typed) -> Op[Typed]:
        """The thread index's secret (kept in this store)."""
        yield from NO_IO
        with self._lock:
            if self._secret is None:
                self._secret = fresh
            return self._secret

    def thread_heads(
        self, before: ThreadKey | None, limit: int, query: IndexQuery | None = None
    ) -> Op[tuple[Sequence[Head], ThreadKey | None]]:
        """A page of threads, newest activity first, from the activity index
        (with `query`, from the thread index's candidates)."""
        yield from NO_IO
        self._expire()
        with self._lock:
            visited = _page(self._sources(query), before, limit)
            heads: list[Head] = []
            for ms, thread_id in visited:
                row = latest_row(self._threads.get(thread_id))
                if row is not None:
                    heads.append((ms, row))
                else:  # its data was dropped behind the store's back
                    self._untrack(thread_id)
        return heads, (visited[-1] if len(visited) == limit else None)

    def latest_rows(
        self, thread_ids: Sequence[str]
    ) -> Op[Sequence[tuple[CheckpointRow | None, int | None]]]:
        """Per thread: its latest row and when it was last deleted (µs)."""
        yield from NO_IO
        self._expire()
        with self._lock:
            return [
                (latest_row(self._threads.get(t)), self._deleted_at(t))
                for t in thread_ids
            ]

    def ping(self) -> Op[None]:
        """The memory store is always reachable."""
        yield from NO_IO

    # -- statistics ------------------------------------------------------------

    def count_checkpoints(self) -> Op[int]:
        """Number of checkpoints stored, every thread and namespace."""
        yield from NO_IO
        self._expire()
        with self._lock:
            return sum(
                len(ns.rows) for t in self._threads.values() for ns in t.values()
            )


def _insert(entries: list[tuple[int, str]], entry: tuple[int, str]) -> None:
    if not entries or entries[-1] < entry:
        entries.append(entry)
    else:
        bisect.insort(entries, entry)


def _drop(entries: list[tuple[int, str]], entry: tuple[int, str]) -> None:
    i = bisect.bisect_left(entries, entry)
    if i < len(entries) and entries[i] == entry:
        del entries[i]


def _page(
    sources: Sequence[list[tuple[int, str]]], before: ThreadKey | None, limit: int
) -> list[tuple[int, str]]:
    """Up to `limit` distinct threads of the sorted `sources` strictly below
    `before`, newest first: each source contributes at most its top `limit`."""
    slices = []
    for entries in sources:
        hi = len(entries) if before is None else bisect.bisect_left(entries, before)
        slices.append(entries[max(0, hi - limit) : hi][::-1])
    if len(slices) == 1:
        return slices[0]
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    for key in heapq.merge(*slices, reverse=True):
        if key[1] not in seen:
            seen.add(key[1])
            out.append(key)
            if len(out) == limit:
                break
    return out


__all__ = ["MemoryStore"]
