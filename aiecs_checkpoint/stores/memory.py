"""The embedded in-process checkpoint store (the default: no server needed).

Layout, per thread and namespace (`_Namespace`):

* `ids`: checkpoint ids kept sorted (uuid6 ids sort by creation), so the latest
  checkpoint is `ids[-1]` and a `before` cursor is a bisect: O(1) / O(log n)
  whatever the thread's length (InMemorySaver scans the whole thread);
* `rows`: checkpoint id -> `CheckpointRow`;
* `writes`: checkpoint id -> {(task id, idx): WriteRow};
* `values`: (channel, version) -> stored value, shared by every checkpoint with
  that version;
* `logs`: (channel, epoch) -> append-only element log of list values;
  `epochs`: channel -> the epoch new elements are appended to.

A store-wide index maps a run-id digest to the rows it produced, for
`delete_for_runs`. One re-entrant lock serializes mutations; every operation is a
few dictionary steps, so the lock is never held across user code.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from aiecs_checkpoint.stores.base import (
    CheckpointRow,
    DeltaEntry,
    DeltaHistory,
    ListItems,
    ListValue,
    ListWrite,
    ResolvedValue,
    StaleListBase,
    StoredTuple,
    StoredValue,
    Typed,
    ValueWrite,
    Version,
    WriteRow,
    compress_positions,
    expand_runs,
    frozen_base,
    is_empty,
    merge_writes,
    ordered_writes,
    walk_delta_history,
)

PAGE = 64
"""Rows copied per lock acquisition while listing."""


@dataclass
class _Namespace:
    ids: list[str] = field(default_factory=list)
    rows: dict[str, CheckpointRow] = field(default_factory=dict)
    writes: dict[str, dict[tuple[str, int], WriteRow]] = field(default_factory=dict)
    values: dict[tuple[str, Version], StoredValue] = field(default_factory=dict)
    logs: dict[tuple[str, str], list[Typed]] = field(default_factory=dict)
    epochs: dict[str, str] = field(default_factory=dict)


class MemoryStore:
    """Checkpoint storage in process memory; safe to share between threads."""

    backend = "memory"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._threads: dict[str, dict[str, _Namespace]] = {}
        self._runs: dict[str, set[tuple[str, str, str]]] = {}

    # -- writing -----------------------------------------------------------------

    def put_checkpoint(
        self, row: CheckpointRow, values: dict[str, tuple[Version, ValueWrite]]
    ) -> dict[str, ListValue]:
        """Store a checkpoint and its new channel values atomically.

        Returns the manifests assigned to list values. Raises `StaleListBase`
        (storing nothing) when a list write reuses an element log that is gone.
        """
        with self._lock:
            ns = self._threads.setdefault(row.thread_id, {}).setdefault(
                row.checkpoint_ns, _Namespace()
            )
            for channel, (_, write) in values.items():
                if isinstance(write, ListWrite) and write.epoch is not None:
                    if (channel, write.epoch) not in ns.logs:
                        raise StaleListBase(write.epoch)
            assigned: dict[str, ListValue] = {}
            for channel, (version, write) in values.items():
                if isinstance(write, ListWrite):
                    stored = self._append_list(ns, channel, write)
                    assigned[channel] = stored
                    ns.values[(channel, version)] = stored
                else:
                    ns.values[(channel, version)] = write
            self._insert_row(ns, row)
            return assigned

    @staticmethod
    def _append_list(ns: _Namespace, channel: str, write: ListWrite) -> ListValue:
        epoch = write.epoch or ns.epochs.get(channel) or uuid.uuid4().hex
        log = ns.logs.setdefault((channel, epoch), [])
        ns.epochs.setdefault(channel, epoch)
        start = len(log)
        log.extend(write.new_items)
        positions = (s if s >= 0 else start - s - 1 for s in write.slots)
        return ListValue(epoch=epoch, runs=compress_positions(positions))

    def _insert_row(self, ns: _Namespace, row: CheckpointRow) -> None:
        cid = row.checkpoint_id
        old = ns.rows.get(cid)
        if old is None:
            if not ns.ids or ns.ids[-1] < cid:
                ns.ids.append(cid)
            else:
                bisect.insort(ns.ids, cid)
        elif old.run_key is not None:
            self._runs.get(old.run_key, set()).discard(
                (row.thread_id, row.checkpoint_ns, cid)
            )
        ns.rows[cid] = row
        if row.run_key is not None:
            self._runs.setdefault(row.run_key, set()).add(
                (row.thread_id, row.checkpoint_ns, cid)
            )

    def put_writes(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str, rows: Sequence[WriteRow]
    ) -> None:
        """Store a task's writes: special writes overwrite, regular ones are first-wins."""
        with self._lock:
            ns = self._threads.setdefault(thread_id, {}).setdefault(
                checkpoint_ns, _Namespace()
            )
            stored = ns.writes.setdefault(checkpoint_id, {})
            stored.update(merge_writes(stored, rows))

    # -- reading -----------------------------------------------------------------

    def get(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
    ) -> StoredTuple | None:
        """The checkpoint by id, or the latest of the namespace when id is None."""
        with self._lock:
            ns = self._ns(thread_id, checkpoint_ns)
            if ns is None or not ns.ids:
                return None
            row = ns.rows.get(checkpoint_id if checkpoint_id is not None else ns.ids[-1])
            return None if row is None else self._resolve(ns, row)

    def list(
        self,
        thread_id: str | None,
        checkpoint_ns: str | None,
        before: str | None = None,
    ) -> Iterator[StoredTuple]:
        """Checkpoints newest first (by id) across the selected threads/namespaces."""
        with self._lock:
            threads = [thread_id] if thread_id is not None else list(self._threads)
            sources = [
                (t, n)
                for t in threads
                for n in self._threads.get(t, {})
                if checkpoint_ns is None or n == checkpoint_ns
            ]
        streams = [self._iter_ns(t, n, before) for t, n in sources]
        if len(streams) == 1:
            yield from streams[0]
            return
        yield from heapq.merge(
            *streams, key=lambda st: st.row.checkpoint_id, reverse=True
        )

    def _iter_ns(self, thread_id: str, checkpoint_ns: str, before: str | None) -> Iterator[StoredTuple]:
        cursor = before
        while True:
            with self._lock:
                ns = self._ns(thread_id, checkpoint_ns)
                if ns is None:
                    return
                hi = len(ns.ids) if cursor is None else bisect.bisect_left(ns.ids, cursor)
                page = [
                    self._resolve(ns, ns.rows[cid])
                    for cid in reversed(ns.ids[max(0, hi - PAGE) : hi])
                ]
            if not page:
                return
            yield from page
            cursor = page[-1].row.checkpoint_id

    def delta_history(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None, channels: Sequence[str]
    ) -> DeltaHistory | None:
        """Walk the parent chain of a checkpoint once for all `channels`."""
        with self._lock:
            ns = self._ns(thread_id, checkpoint_ns)
            if ns is None or not ns.ids:
                return None
            target = ns.rows.get(checkpoint_id or ns.ids[-1])
            if target is None:
                return None
            return self._walk(ns, target, channels)

    def _walk(self, ns: _Namespace, target: CheckpointRow, channels: Sequence[str]) -> DeltaHistory:
        return walk_delta_history(
            target,
            channels,
            get_row=ns.rows.get,
            get_writes=lambda r: ordered_writes(ns.writes.get(r.checkpoint_id, {}).values()),
            get_value=lambda r, ch: self._value(ns, ch, r.versions[ch]),
        )

    def _ns(self, thread_id: str, checkpoint_ns: str) -> _Namespace | None:
        return self._threads.get(thread_id, {}).get(checkpoint_ns)

    @staticmethod
    def _value(ns: _Namespace, channel: str, version: Version) -> ResolvedValue | None:
        stored = ns.values.get((channel, version))
        if isinstance(stored, ListValue):
            log = ns.logs[(channel, stored.epoch)]
            return ListItems(
                stored.epoch, stored.runs, tuple(log[p] for p in expand_runs(stored.runs))
            )
        return stored

    def _resolve(self, ns: _Namespace, row: CheckpointRow) -> StoredTuple:
        values: dict[str, ResolvedValue] = {}
        for ch, ver in row.versions.items():
            value = self._value(ns, ch, ver)
            if not is_empty(value):
                assert value is not None
                values[ch] = value
        writes = ordered_writes(ns.writes.get(row.checkpoint_id, {}).values())
        return StoredTuple(row=row, values=values, writes=writes)

    # -- deleting and copying ------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        """Remove every namespace, checkpoint, value and write of a thread."""
        with self._lock:
            for ns in self._threads.pop(thread_id, {}).values():
                for row in ns.rows.values():
                    self._unindex(row)

    def delete_runs(self, run_keys: Iterable[str]) -> None:
        """Remove the checkpoints (and their writes) of the given runs.

        A surviving checkpoint whose parent goes away first gets a frozen delta
        base, so its DeltaChannels still rebuild the same state.
        """
        with self._lock:
            doomed: dict[tuple[str, str], set[str]] = {}
            for key in run_keys:
                for t, n, cid in self._runs.get(key, set()):
                    doomed.setdefault((t, n), set()).add(cid)
            for (t, n), cids in doomed.items():
                ns = self._threads[t][n]
                survivors = [
                    r for r in ns.rows.values()
                    if r.checkpoint_id not in cids and r.parent_id in cids
                ]
                self._freeze(ns, survivors)
                self._drop_rows(ns, cids)
                self._collect_garbage(t, n, ns)

    def prune(self, thread_ids: Iterable[str], keep_latest: bool) -> None:
        """Keep only the latest checkpoint per namespace, or delete the threads."""
        with self._lock:
            for t in thread_ids:
                if not keep_latest:
                    self.delete_thread(t)
                    continue
                for n, ns in list(self._threads.get(t, {}).items()):
                    if not ns.ids:
                        continue
                    latest = ns.rows[ns.ids[-1]]
                    self._freeze(ns, [latest])
                    self._drop_rows(ns, set(ns.ids[:-1]))
                    self._collect_garbage(t, n, ns)

    def copy_thread(self, source: str, target: str) -> None:
        """Copy a whole thread (every namespace, its full parent chains) to another id."""
        with self._lock:
            for n, src in self._threads.get(source, {}).items():
                dst = self._threads.setdefault(target, {}).setdefault(n, _Namespace())
                for cid in src.ids:
                    self._insert_row(dst, dataclasses.replace(src.rows[cid], thread_id=target))
                for cid, ws in src.writes.items():
                    dst.writes.setdefault(cid, {}).update(ws)
                dst.values.update(src.values)
                for key, log in src.logs.items():
                    dst.logs.setdefault(key, list(log))
                for ch, epoch in src.epochs.items():
                    dst.epochs.setdefault(ch, epoch)

    def _freeze(self, ns: _Namespace, rows: Iterable[CheckpointRow]) -> None:
        for row in rows:
            base = frozen_base(
                row,
                is_populated=lambda r, ch: ch in r.versions
                and not is_empty(self._value(ns, ch, r.versions[ch])),
                walk=lambda r, chs: self._walk(ns, r, chs),
            )
            if base:
                row.delta_base = {**base, **row.delta_base}

    def _drop_rows(self, ns: _Namespace, cids: set[str]) -> None:
        for cid in cids:
            row = ns.rows.pop(cid, None)
            if row is not None:
                self._unindex(row)
            ns.writes.pop(cid, None)
        ns.ids = [c for c in ns.ids if c not in cids]

    def _unindex(self, row: CheckpointRow) -> None:
        if row.run_key is not None:
            keys = self._runs.get(row.run_key)
            if keys is not None:
                keys.discard((row.thread_id, row.checkpoint_ns, row.checkpoint_id))
                if not keys:
                    del self._runs[row.run_key]

    def _collect_garbage(self, thread_id: str, checkpoint_ns: str, ns: _Namespace) -> None:
        """Drop values no checkpoint references, and compact element logs."""
        if not ns.rows:
            del self._threads[thread_id][checkpoint_ns]
            if not self._threads[thread_id]:
                del self._threads[thread_id]
            return
        live = {(ch, v) for r in ns.rows.values() for ch, v in r.versions.items()}
        ns.values = {k: v for k, v in ns.values.items() if k in live}
        ns.writes = {k: v for k, v in ns.writes.items() if k in ns.rows}
        self._compact_logs(ns)

    @staticmethod
    def _compact_logs(ns: _Namespace) -> None:
        used: dict[tuple[str, str], set[int]] = {}
        for (ch, _), v in ns.values.items():
            if isinstance(v, ListValue):
                used.setdefault((ch, v.epoch), set()).update(expand_runs(v.runs))
        remap: dict[tuple[str, str], tuple[str, dict[int, int]]] = {}
        new_logs: dict[tuple[str, str], list[Typed]] = {}
        for (ch, epoch), positions in used.items():
            log = ns.logs[(ch, epoch)]
            if len(positions) == len(log):
                new_logs[(ch, epoch)] = log
                continue
            fresh = uuid.uuid4().hex
            order = sorted(positions)
            new_logs[(ch, fresh)] = [log[p] for p in order]
            remap[(ch, epoch)] = (fresh, {p: i for i, p in enumerate(order)})
        for key, v in list(ns.values.items()):
            if isinstance(v, ListValue) and (key[0], v.epoch) in remap:
                fresh, pos = remap[(key[0], v.epoch)]
                ns.values[key] = ListValue(
                    fresh, compress_positions(pos[p] for p in expand_runs(v.runs))
                )
        ns.logs = new_logs
        epochs: dict[str, str] = {}
        for ch, epoch in ns.epochs.items():
            current = remap[(ch, epoch)][0] if (ch, epoch) in remap else epoch
            if (ch, current) in new_logs:
                epochs[ch] = current
        ns.epochs = epochs

    # -- statistics ----------------------------------------------------------------

    def count_checkpoints(self) -> int:
        """Number of checkpoints stored, every thread and namespace."""
        with self._lock:
            return sum(len(ns.rows) for t in self._threads.values() for ns in t.values())


__all__ = ["DeltaEntry", "MemoryStore"]
