"""One thread's checkpoint data in memory, and every operation on it.

The memory store keeps its threads in this form. The Redis store loads a thread
into this form for the operations that rewrite history (prune, delete_for_runs,
copy_thread), runs the same functions, and writes the result back atomically, so
both stores rewrite history with one piece of code.

Per namespace (`Namespace`):

* `ids`: checkpoint ids kept sorted (uuid6 ids sort by creation): the latest is
  `ids[-1]`, a `before` cursor is a bisect;
* `rows`: checkpoint id -> `CheckpointRow`;
* `writes`: checkpoint id -> {(task id, idx): WriteRow};
* `values`: (channel, version) -> stored value, shared by every checkpoint that
  has that version;
* `logs`: (channel, epoch) -> append-only element log of list values, and
  `epochs`: channel -> the epoch new elements are appended to.
"""

from __future__ import annotations

import bisect
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aiecs_checkpoint.stores import refs
from aiecs_checkpoint.stores.records import (
    RECORD_CHANNEL,
    CheckpointRow,
    DeltaEntry,
    DeltaHistory,
    Held,
    ListItems,
    ListValue,
    ListWrite,
    ResolvedValue,
    Runs,
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
    random_id,
    runs_of,
    walk_delta_history,
)


@dataclass
class Namespace:
    """The checkpoints, values, writes and element logs of one namespace."""

    ids: list[str] = field(default_factory=list)
    rows: dict[str, CheckpointRow] = field(default_factory=dict)
    writes: dict[str, dict[tuple[str, int], WriteRow]] = field(default_factory=dict)
    values: dict[tuple[str, Version], StoredValue] = field(default_factory=dict)
    logs: dict[tuple[str, str], list[Typed]] = field(default_factory=dict)
    epochs: dict[str, str] = field(default_factory=dict)


Thread = dict[str, Namespace]
"""A thread: namespace -> its data."""


def put_checkpoint(
    ns: Namespace, row: CheckpointRow, values: dict[str, tuple[Version, ValueWrite]]
) -> tuple[dict[str, ListValue], CheckpointRow | None]:
    """Store a row and its new values; returns list manifests and the replaced row.

    Raises `StaleListBase`, changing nothing, when a list write reuses positions
    of an element log that is gone.
    """
    for channel, (_, write) in values.items():
        if isinstance(write, ListWrite) and write.epoch is not None:
            if (channel, write.epoch) not in ns.logs:
                raise StaleListBase(write.epoch)
    assigned: dict[str, ListValue] = {}
    for channel, (version, write) in values.items():
        if isinstance(write, ListWrite):
            stored = append_list(ns, channel, write)
            assigned[channel] = stored
            ns.values[(channel, version)] = stored
        else:
            ns.values[(channel, version)] = write
    return assigned, insert_row(ns, row)


def append_list(ns: Namespace, channel: str, write: ListWrite) -> ListValue:
    """Append a list write's new elements to its log; returns the manifest."""
    epoch = write.epoch or ns.epochs.get(channel) or random_id()
    log = ns.logs.setdefault((channel, epoch), [])
    ns.epochs.setdefault(channel, epoch)
    start = len(log)
    log.extend(write.new_items)
    return ListValue(epoch=epoch, runs=runs_of(write.slot_runs(), start))


def insert_row(ns: Namespace, row: CheckpointRow) -> CheckpointRow | None:
    """Add or replace a row, keeping `ids` sorted; returns the replaced row."""
    cid = row.checkpoint_id
    old = ns.rows.get(cid)
    if old is None:
        if not ns.ids or ns.ids[-1] < cid:
            ns.ids.append(cid)
        else:
            bisect.insort(ns.ids, cid)
    ns.rows[cid] = row
    return old


def put_writes(ns: Namespace, checkpoint_id: str, rows: Sequence[WriteRow]) -> None:
    """Store a task's writes: special ones overwrite, regular are first-wins."""
    stored = ns.writes.setdefault(checkpoint_id, {})
    stored.update(merge_writes(stored, rows))


def value(
    ns: Namespace, channel: str, version: Version, held: tuple[str, int] | None = None
) -> ResolvedValue | None:
    """The stored value of (channel, version), list elements resolved, except
    the leading positions a reader holds (`held`: epoch, count) of that log."""
    stored = ns.values.get((channel, version))
    if isinstance(stored, ListValue):
        log = ns.logs[(channel, stored.epoch)]
        skip = held[1] if held is not None and held[0] == stored.epoch else 0
        items: list[Typed] = []
        for start, stop in stored.runs:
            items += log[max(start, skip) : stop]
        return ListItems(stored.epoch, stored.runs, tuple(items), skip)
    return stored


def resolve(ns: Namespace, row: CheckpointRow, held: Held | None = None) -> StoredTuple:
    """A row with its values and ordered writes (see `value` for `held`)."""
    values: dict[str, ResolvedValue] = {}
    name = row.checkpoint_ns
    for ch, ver in row.versions.items():
        mine = held.get((name, ch)) if held else None
        resolved = value(ns, ch, ver, mine)
        if resolved is not None and not is_empty(resolved):
            values[ch] = resolved
    writes = ordered_writes(ns.writes.get(row.checkpoint_id, {}).values())
    return StoredTuple(row=row, values=values, writes=writes)


def walk(ns: Namespace, target: CheckpointRow, channels: Sequence[str]) -> DeltaHistory:
    """DeltaChannel history of `target` within its namespace."""
    return walk_delta_history(
        target,
        channels,
        get_row=ns.rows.get,
        get_writes=lambda r: ordered_writes(
            ns.writes.get(r.checkpoint_id, {}).values()
        ),
        get_value=lambda r, ch: value(ns, ch, r.versions[ch]),
    )


def freeze(ns: Namespace, rows: Iterable[CheckpointRow]) -> None:
    """Give each row the frozen delta base it needs before ancestors are removed."""
    for row in rows:
        base = frozen_base(
            row,
            is_populated=lambda r, ch: (
                ch in r.versions and not is_empty(value(ns, ch, r.versions[ch]))
            ),
            walk=lambda r, chs: walk(ns, r, chs),
        )
        if base:
            row.delta_base = {**base, **row.delta_base}


def delete_ids(ns: Namespace, cids: set[str]) -> list[CheckpointRow]:
    """Remove checkpoints; survivors that lose their parent get a delta base.

    Returns the removed rows. Unreferenced values are dropped and element logs
    compacted.
    """
    orphans = [
        r
        for r in ns.rows.values()
        if r.checkpoint_id not in cids and r.parent_id in cids
    ]
    freeze(ns, orphans)
    removed = [ns.rows.pop(c) for c in cids if c in ns.rows]
    for cid in cids:
        ns.writes.pop(cid, None)
    ns.ids = [c for c in ns.ids if c not in cids]
    collect_garbage(ns)
    return removed


def keep_latest(ns: Namespace) -> list[CheckpointRow]:
    """Keep only the latest checkpoint (with the delta base it needs); tracking
    records of the dropped checkpoints move onto it (pruning history keeps what
    the thread's tasks recorded)."""
    if len(ns.ids) <= 1:
        return []
    latest = ns.rows[ns.ids[-1]]
    freeze(ns, [latest])
    carried = {
        key: w
        for cid in ns.ids[:-1]
        for key, w in ns.writes.get(cid, {}).items()
        if w.channel == RECORD_CHANNEL
    }
    removed = delete_ids(ns, set(ns.ids[:-1]))
    if carried:
        ns.writes.setdefault(latest.checkpoint_id, {}).update(carried)
    return removed


def records(thread: Thread) -> list[WriteRow]:
    """The tracking record writes of a thread's stored checkpoints: writes of
    a checkpoint never stored (a process killed before its put landed) are
    orphans LangGraph ignores, and so are their records."""
    return [
        w
        for ns in thread.values()
        for cid, by_task in ns.writes.items()
        if cid in ns.rows
        for w in by_task.values()
        if w.channel == RECORD_CHANNEL
    ]


def drop_run_records(ns: Namespace, run_keys: set[str]) -> None:
    """Remove the tracking records of those runs (wherever they are attached:
    a resumed run's tasks write onto the previous run's checkpoint)."""
    for cid, by_task in list(ns.writes.items()):
        doomed = [
            key
            for key, w in by_task.items()
            if w.channel == RECORD_CHANNEL and w.task_path in run_keys
        ]
        for key in doomed:
            del by_task[key]
        if not by_task:
            del ns.writes[cid]


def whole(thread: Thread) -> tuple[Thread, int]:
    """The thread without its checkpoints that lack something they reference,
    and how many were left out (0: `thread` itself, unchanged).

    A thread rebuilt from rows that did not all arrive (an archive outbox that
    overflowed, or died with its process) can hold checkpoints whose channel
    values or list elements are missing. Those are left out with their writes,
    then values no checkpoint references are dropped and element logs
    compacted (`collect_garbage`), so what remains is whole and consistent.
    """
    gaps = {name: _incomplete(ns) for name, ns in thread.items()}
    left_out = sum(len(cids) for cids in gaps.values())
    if not left_out:
        return thread, 0
    out: Thread = {}
    for name, ns in clone(thread).items():
        doomed = gaps[name]
        if doomed:
            for cid in doomed:
                del ns.rows[cid]
                ns.writes.pop(cid, None)
            ns.ids = [c for c in ns.ids if c not in doomed]
            collect_garbage(ns)
        if ns.rows:
            out[name] = ns
    return out, left_out


def _incomplete(ns: Namespace) -> set[str]:
    """Checkpoints of `ns` missing a value of one of their channel versions,
    or an element of a log that one of their list values or ref values (in
    their writes, delta bases or referenced elements) points at."""
    refs_in: dict[tuple[str, str], list[int]] = {}

    def ref_positions(key: tuple[str, str], log: list[Typed]) -> list[int]:
        found = refs_in.get(key)
        if found is None:
            found = refs_in[key] = [i for i, x in enumerate(log) if refs.is_ref(x)]
        return found

    def present(needed: list[tuple[str, str, Runs]]) -> bool:
        seen: set[tuple[str, str, int, int]] = set()
        while needed:
            ch, epoch, runs = needed.pop()
            log = ns.logs.get((ch, epoch))
            for start, stop in runs:
                if stop <= start or (ch, epoch, start, stop) in seen:
                    continue
                if log is None or stop > len(log):
                    return False
                seen.add((ch, epoch, start, stop))
                at = ref_positions((ch, epoch), log)
                first = bisect.bisect_left(at, start)
                inner = [log[p] for p in at[first : bisect.bisect_left(at, stop)]]
                needed += refs.uses(inner)
        return True

    out: set[str] = set()
    for cid in ns.ids:
        row = ns.rows[cid]
        needed: list[tuple[str, str, Runs]] = []
        sources = [w.value for w in ns.writes.get(cid, {}).values()]
        for entry in row.delta_base.values():
            sources += [w.value for w in entry.writes]
            if isinstance(entry.seed, ListItems):
                sources += entry.seed.items
        needed += refs.uses(sources)
        for channel, version in row.versions.items():
            stored = ns.values.get((channel, version))
            if stored is None:
                out.add(cid)
                break
            if isinstance(stored, ListValue):
                needed.append((channel, stored.epoch, stored.runs))
        else:
            if not present(needed):
                out.add(cid)
    return out


def collect_garbage(ns: Namespace) -> None:
    """Drop values and writes no checkpoint references; compact element logs.

    A log position is live when a stored list value holds it or a ref value
    (`stores.refs`) points at it, from a write, a delta base, or a live element
    of another log; refs are remapped with the positions they point at.
    """
    live = {(ch, v) for r in ns.rows.values() for ch, v in r.versions.items()}
    ns.values = {k: v for k, v in ns.values.items() if k in live}
    ns.writes = {k: v for k, v in ns.writes.items() if k in ns.rows}
    used: dict[tuple[str, str], set[int]] = {}
    for (ch, _), v in ns.values.items():
        if isinstance(v, ListValue):
            used.setdefault((ch, v.epoch), set()).update(expand_runs(v.runs))
    _mark_refs(ns, used)
    remap: dict[tuple[str, str], tuple[str, dict[int, int]]] = {}
    logs: dict[tuple[str, str], list[Typed]] = {}
    for (ch, epoch), positions in used.items():
        log = ns.logs[(ch, epoch)]
        if len(positions) == len(log):
            logs[(ch, epoch)] = log
            continue
        fresh = random_id()
        order = sorted(positions)
        logs[(ch, fresh)] = [log[p] for p in order]
        remap[(ch, epoch)] = (fresh, {p: i for i, p in enumerate(order)})
    for key, v in list(ns.values.items()):
        if isinstance(v, ListValue) and (key[0], v.epoch) in remap:
            fresh, pos = remap[(key[0], v.epoch)]
            runs = compress_positions(pos[p] for p in expand_runs(v.runs))
            ns.values[key] = ListValue(fresh, runs)
    epochs: dict[str, str] = {}
    for ch, epoch in ns.epochs.items():
        current = remap[(ch, epoch)][0] if (ch, epoch) in remap else epoch
        if (ch, current) in logs:
            epochs[ch] = current
    ns.logs = logs
    ns.epochs = epochs
    if remap:

        def moved(channel: str, epoch: str, runs: Runs) -> tuple[str, Runs]:
            if (channel, epoch) not in remap:
                return epoch, runs
            fresh, pos = remap[(channel, epoch)]
            return fresh, compress_positions(pos[p] for p in expand_runs(runs))

        _remap_refs(ns, moved)


def _ref_sources(ns: Namespace) -> list[Typed]:
    """Values of writes and delta bases (where ref values can be)."""
    out = [w.value for by in ns.writes.values() for w in by.values()]
    for row in ns.rows.values():
        for entry in row.delta_base.values():
            out += [w.value for w in entry.writes]
            if isinstance(entry.seed, ListItems):
                out += entry.seed.items
    return out


def _mark_refs(ns: Namespace, used: dict[tuple[str, str], set[int]]) -> None:
    """Add to `used` every log position a live ref value points at."""
    pending = list(refs.uses(_ref_sources(ns)))
    for (ch, epoch), positions in list(used.items()):
        log = ns.logs.get((ch, epoch), [])
        pending += refs.uses(log[p] for p in positions if p < len(log))
    while pending:
        ch, epoch, runs = pending.pop()
        found = ns.logs.get((ch, epoch))
        if found is None:
            continue
        log = found
        mine = used.setdefault((ch, epoch), set())
        new = [p for p in expand_runs(runs) if p not in mine and p < len(log)]
        mine.update(new)
        pending += refs.uses(log[p] for p in new)


def _remap_refs(ns: Namespace, moved: refs.Remap) -> None:
    """Point every ref value of the namespace where `moved` says."""
    for by in ns.writes.values():
        for task_idx, w in by.items():
            if refs.is_ref(w.value):
                remapped = refs.remap(w.value, moved)
                by[task_idx] = dataclasses.replace(w, value=remapped)
    for log_key, log in ns.logs.items():
        if any(refs.is_ref(item) for item in log):
            ns.logs[log_key] = [refs.remap(item, moved) for item in log]
    for row in ns.rows.values():
        for ch, entry in list(row.delta_base.items()):
            seed = entry.seed
            if isinstance(seed, ListItems):
                items = tuple(refs.remap(i, moved) for i in seed.items)
                seed = ListItems(seed.epoch, seed.runs, items, seed.held)
            writes = tuple(
                dataclasses.replace(w, value=refs.remap(w.value, moved))
                for w in entry.writes
            )
            row.delta_base[ch] = DeltaEntry(seed=seed, writes=writes)


def copy_into(src: Thread, dst: Thread, target_thread: str) -> list[CheckpointRow]:
    """Copy every namespace of `src` into `dst` (rows renamed to `target_thread`).

    Returns the rows added. An element log keeps its epoch only when the
    target holds a log of that epoch that agrees with it (one is a prefix of
    the other; the target's is extended). Otherwise it is copied under a fresh
    epoch and the copied manifests, refs and delta-base seeds are remapped:
    when the target's log diverged (an earlier copy that went on separately),
    and also when the target has none, since it may have had one that was
    deleted and whose elements a reader's cache still keeps by position
    (`saver.cache`). So no epoch of a thread ever names two different logs.
    """
    added: list[CheckpointRow] = []
    for name, s in src.items():
        added += _copy_namespace(s, dst.setdefault(name, Namespace()), target_thread)
    return added


def with_fresh_epochs(thread: Thread, thread_id: str) -> Thread:
    """`thread` (rows named `thread_id`) with every element log under a new epoch.

    For importing a thread from outside (an export): the id may have held a
    longer history under the same epochs, whose elements a running reader's
    cache still keeps by position past the end of the imported logs.
    """
    out: Thread = {}
    copy_into(thread, out, thread_id)
    return out


def _copy_namespace(
    s: Namespace, d: Namespace, target_thread: str
) -> list[CheckpointRow]:
    """`copy_into` for one namespace."""
    renamed: dict[tuple[str, str], str] = {}
    for (ch, epoch), log in s.logs.items():
        mine = d.logs.get((ch, epoch))
        if mine is None or (mine != log[: len(mine)] and log != mine[: len(log)]):
            renamed[(ch, epoch)] = random_id()

    def moved(channel: str, epoch: str, runs: Runs) -> tuple[str, Runs]:
        return renamed.get((channel, epoch), epoch), runs

    def copied(value: Typed) -> Typed:
        return refs.remap(value, moved) if renamed else value

    for (ch, epoch), log in s.logs.items():
        mine = d.logs.get((ch, epoch))
        if (ch, epoch) in renamed:
            d.logs[(ch, renamed[(ch, epoch)])] = [copied(i) for i in log]
        elif mine is not None and len(log) > len(mine):
            mine.extend(copied(i) for i in log[len(mine) :])
    added: list[CheckpointRow] = []
    for cid in s.ids:
        row = dataclasses.replace(s.rows[cid], thread_id=target_thread)
        if renamed:
            row.delta_base = {
                ch: _copied_entry(ch, e, renamed, copied)
                for ch, e in row.delta_base.items()
            }
        insert_row(d, row)
        added.append(row)
    for cid, ws in s.writes.items():
        d.writes.setdefault(cid, {}).update(
            {k: dataclasses.replace(w, value=copied(w.value)) for k, w in ws.items()}
        )
    for (ch, version), v in s.values.items():
        if isinstance(v, ListValue) and (ch, v.epoch) in renamed:
            v = ListValue(renamed[(ch, v.epoch)], v.runs)
        d.values[(ch, version)] = v
    for ch, epoch in s.epochs.items():
        d.epochs.setdefault(ch, renamed.get((ch, epoch), epoch))
    return added


def _copied_entry(
    channel: str,
    entry: DeltaEntry,
    renamed: dict[tuple[str, str], str],
    copied: Callable[[Typed], Typed],
) -> DeltaEntry:
    """A delta base entry copied where logs were renamed."""
    seed = _renamed(channel, entry.seed, renamed)
    if isinstance(seed, ListItems):
        seed = ListItems(seed.epoch, seed.runs, tuple(map(copied, seed.items)))
    writes = tuple(dataclasses.replace(w, value=copied(w.value)) for w in entry.writes)
    return DeltaEntry(seed=seed, writes=writes)


def _renamed(
    channel: str, seed: ResolvedValue | None, renamed: dict[tuple[str, str], str]
) -> ResolvedValue | None:
    if isinstance(seed, ListItems) and (channel, seed.epoch) in renamed:
        return ListItems(renamed[(channel, seed.epoch)], seed.runs, seed.items)
    return seed


def clone(thread: Thread) -> Thread:
    """A copy sharing only immutable records (rows are copied: freezing a delta
    base mutates them)."""
    out: Thread = {}
    for name, ns in thread.items():
        out[name] = Namespace(
            ids=list(ns.ids),
            rows={
                c: dataclasses.replace(
                    r, versions=dict(r.versions), delta_base=dict(r.delta_base)
                )
                for c, r in ns.rows.items()
            },
            writes={c: dict(w) for c, w in ns.writes.items()},
            values=dict(ns.values),
            logs={k: list(v) for k, v in ns.logs.items()},
            epochs=dict(ns.epochs),
        )
    return out


# -- thread activity (listing) ----------------------------------------------------

_UUID_EPOCH = 0x01B21DD213814000
"""The uuid timestamp epoch (1582-10-15) in 100 ns ticks before the Unix epoch."""


def now_ms() -> int:
    """Wall-clock time in ms (thread activity)."""
    return time.time_ns() // 1_000_000


def id_time_ms(checkpoint_id: str) -> int | None:
    """When a uuid6 checkpoint id (LangGraph's) was made, in ms; else None."""
    try:
        u = uuid.UUID(checkpoint_id)
    except ValueError:
        return None
    if u.version != 6:
        return None
    hi = u.int >> 64
    return ((((hi >> 16) << 12) | (hi & 0x0FFF)) - _UUID_EPOCH) // 10_000


def restored_activity_ms(thread: Thread) -> int:
    """Activity time of a thread restored whole: its newest checkpoint id's time
    (so a restore does not move it to the top of the listing), else now."""
    times = [id_time_ms(ns.ids[-1]) for ns in thread.values() if ns.ids]
    known = [t for t in times if t is not None]
    return max(known) if known else now_ms()


def latest_row(thread: Thread | None) -> CheckpointRow | None:
    """The thread's latest checkpoint: of the root namespace, else of any."""
    if not thread:
        return None
    root = thread.get("")
    if root is not None and root.ids:
        return root.rows[root.ids[-1]]
    tips = [ns.rows[ns.ids[-1]] for ns in thread.values() if ns.ids]
    return max(tips, key=lambda r: r.checkpoint_id, default=None)
