"""Storage records and the pure logic every checkpoint store shares.

Stores never see Python values: the saver serializes everything with its `serde`
first, so a store holds only `(type, bytes)` pairs (`Typed`) plus the structural
fields it must index (ids, parent ids, channel names and versions, a digest of the
run id). Under `EncryptedSerializer` nothing a user wrote is kept in plaintext.

The storage model, shared by every store:

* a checkpoint row per (thread, namespace, checkpoint id): the serialized
  checkpoint without `channel_values`, serialized metadata, parent id, the plain
  `channel_versions` map needed to find the values, and the delta channels named
  by `counters_since_delta_snapshot`;
* a channel value per (thread, namespace, channel, version), stored once and
  referenced by every checkpoint that has that version, never copied;
* list values are stored incrementally: each element is serialized once into an
  append-only per-channel element log (identified by a random epoch), and a
  version is a manifest of log positions. A conversation that grows by one
  message per step costs one element per step, not the whole list again;
* pending writes per checkpoint, keyed by (task id, idx), with their task path
  so they come back in `writes_sort_key` order;
* an optional frozen "delta base" on a checkpoint whose ancestors were removed
  by `prune` or `delete_for_runs`: the seed and writes its DeltaChannels need,
  captured before the ancestors went away, so the thread stays reconstructible.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import (
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field

from langgraph.checkpoint.base import WRITES_IDX_MAP, writes_sort_key

Typed = tuple[str, bytes]
"""A value as the serializer's `dumps_typed` returns it."""

Version = str | int | float

EMPTY_TYPE = "empty"
"""Type tag of a channel that has a version but no value (as InMemorySaver)."""


Runs = tuple[tuple[int, int], ...]
"""Element-log positions as half-open runs; an append-only list is one run."""


@dataclass(frozen=True, slots=True)
class ListValue:
    """A list channel value: an element-log epoch and the positions it is made of."""

    epoch: str
    runs: Runs


@dataclass(frozen=True, slots=True)
class ListItems:
    """A resolved list value: its positions plus each element's serialized form.

    `items` holds one element per position, in manifest order, except positions
    below `held`: a store that was told the reader holds them decoded (`Held`)
    leaves them out, and the reader takes them from its cache.
    """

    epoch: str
    runs: Runs
    items: tuple[Typed, ...]
    held: int = 0


StoredValue = Typed | ListValue
"""What a store keeps per (channel, version)."""

SlotRuns = tuple[tuple[int, int], ...]
"""`ListWrite.slots` as (first slot, count) runs: reused positions ascending by
one, new elements descending by one (-1, -2, ...); see `slot_runs`."""

Held = Mapping[tuple[str, str], tuple[str, int]]
"""(namespace, channel) -> (element-log epoch, n): the reader holds positions
0..n-1 of that log decoded, so a store may leave them out of list values."""

ResolvedValue = Typed | ListItems
"""What a store returns per (channel, version): list values come with their items."""


@dataclass(frozen=True, slots=True)
class ListWrite:
    """How the saver asks a store to write a list value.

    `runs` are (first slot, count) runs over the list's elements in order: a
    slot >= 0 reuses element-log position `slot` of `epoch`; a slot < 0 is the
    new element `new_items[-slot - 1]`, appended to the log by the store (which
    assigns its position atomically). A list that grew by k elements is two
    runs, whatever its length (`SlotRuns`).
    """

    epoch: str | None
    runs: SlotRuns
    new_items: tuple[Typed, ...]

    @classmethod
    def of_slots(
        cls, epoch: str | None, slots: Iterable[int], new_items: tuple[Typed, ...]
    ) -> ListWrite:
        """A write given one slot per element."""
        return cls(epoch, slot_runs(slots), new_items)

    @property
    def slots(self) -> list[int]:
        """One slot per element (expanded from `runs`)."""
        out: list[int] = []
        for first, count in self.runs:
            out += (
                range(first, first + count)
                if first >= 0
                else range(first, first - count, -1)
            )
        return out

    def slot_runs(self) -> SlotRuns:
        """The slots as runs."""
        return self.runs


ValueWrite = Typed | ListWrite


RECORD_CHANNEL = "__aiecs_record__"
"""Channel of the pending writes that carry a task's tracking records (model usage,
file operations, context updates). They are stored with the task's other writes
but never handed to LangGraph; `task_path` holds the record's run digest."""


@dataclass(frozen=True, slots=True)
class WriteRow:
    """One pending write of a task, serialized."""

    task_id: str
    idx: int
    channel: str
    value: Typed
    task_path: str


@dataclass(frozen=True, slots=True)
class DeltaEntry:
    """A DeltaChannel's history up to (not including) a checkpoint's own writes."""

    seed: ResolvedValue | None
    writes: tuple[WriteRow, ...]


@dataclass(slots=True)
class CheckpointRow:
    """One checkpoint as a store keeps it."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    checkpoint: Typed
    metadata: Typed
    versions: dict[str, Version]
    run_key: str | None = None
    delta_channels: tuple[str, ...] = ()
    delta_base: dict[str, DeltaEntry] = field(default_factory=dict)
    index: tuple[str, ...] | None = None
    """Thread-index entries of the row's metadata (`index_entries`): keyed
    digests of its (key, value) pairs and the key's id; None for rows written
    before the index existed."""


UNINDEXED = "#?"
"""Index entry of threads whose latest row has no index (`CheckpointRow.index`
None): every filtered listing visits them."""


def index_entries(index: tuple[str, ...] | None) -> tuple[str, ...]:
    """The thread-index entries a thread whose latest row has `index` is in.

    Entries starting with `#` name the key the row's digests were made with
    (its "key id"), or `UNINDEXED`; the others are digests.
    """
    return index if index else (UNINDEXED,)


def is_key_entry(entry: str) -> bool:
    """True for a key-id entry (`#...`), false for a digest."""
    return entry.startswith("#")


@dataclass(frozen=True, slots=True)
class IndexQuery:
    """What a filtered thread listing asks a store's thread index for.

    A thread is a candidate when, for every option, it is in at least one of
    the option's entries, or when its latest row was indexed under another key
    than `key_id` (or not at all). Stores may use any one option (the smallest)
    instead of all: candidates are a superset of the matches, and the saver
    applies the exact filter to each.
    """

    key_id: str
    options: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class StoredTuple:
    """A checkpoint row with its resolved values and ordered pending writes."""

    row: CheckpointRow
    values: dict[str, ResolvedValue]
    writes: tuple[WriteRow, ...]


@dataclass(frozen=True, slots=True)
class DeltaHistory:
    """Per channel: the seed (if any) and the on-path writes, oldest first."""

    seeds: dict[str, ResolvedValue]
    writes: dict[str, list[WriteRow]]


def random_id() -> str:
    """32 random hex digits (element-log epochs and other store-made ids).

    Drawn from the OS, never from `uuid.uuid4()`: test suites patch that for
    deterministic ids, and storing a checkpoint must not shift them.
    """
    return os.urandom(16).hex()


def run_key(run_id: object) -> str | None:
    """Index key of a run id: a digest, so run ids are not kept in plaintext."""
    if run_id is None:
        return None
    return hashlib.blake2b(str(run_id).encode(), digest_size=16).hexdigest()


def write_idx(channel: str, position: int) -> int:
    """The idx a write is stored under: special channels have fixed negative ones."""
    return WRITES_IDX_MAP.get(channel, position)


def merge_writes(
    existing: Mapping[tuple[str, int], WriteRow], incoming: Iterable[WriteRow]
) -> dict[tuple[str, int], WriteRow]:
    """Rows to store: special writes (idx < 0) overwrite, regular are first-wins."""
    out: dict[tuple[str, int], WriteRow] = {}
    for w in incoming:
        key = (w.task_id, w.idx)
        if w.idx >= 0 and (key in existing or key in out):
            continue
        out[key] = w
    return out


def ordered_writes(writes: Iterable[WriteRow]) -> tuple[WriteRow, ...]:
    """Pending writes in the order live execution applies them."""
    return tuple(
        sorted(writes, key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))
    )


def is_empty(value: ResolvedValue | StoredValue | None) -> bool:
    """True for a missing value or the empty marker."""
    return value is None or (isinstance(value, tuple) and value[0] == EMPTY_TYPE)


def walk_delta_history(
    target: CheckpointRow,
    channels: Sequence[str],
    get_row: Callable[[str], CheckpointRow | None],
    get_writes: Callable[[CheckpointRow], Sequence[WriteRow]],
    get_value: Callable[[CheckpointRow, str], ResolvedValue | None],
) -> DeltaHistory:
    """Walk `target`'s parent chain once for all `channels`.

    Same result as `BaseCheckpointSaver.get_delta_channel_history`: per channel,
    the nearest ancestor value (seed) and the writes stored on the path after it.
    A frozen delta base on a row stands in for the ancestors it replaced.
    `get_writes` must return a row's writes in `writes_sort_key` order.
    """
    remaining = set(channels)
    newest_first: dict[str, list[WriteRow]] = {c: [] for c in channels}
    seeds: dict[str, ResolvedValue] = {}

    def apply_base(row: CheckpointRow) -> None:
        for ch in [c for c in remaining if c in row.delta_base]:
            entry = row.delta_base[ch]
            newest_first[ch].extend(reversed(entry.writes))
            if entry.seed is not None:
                seeds[ch] = entry.seed
            remaining.discard(ch)

    apply_base(target)
    cursor = target.parent_id
    while cursor is not None and remaining:
        row = get_row(cursor)
        if row is None:
            break
        for w in reversed(get_writes(row)):
            if w.channel in remaining:
                newest_first[w.channel].append(w)
        for ch in [c for c in remaining if c in row.versions]:
            value = get_value(row, ch)
            if not is_empty(value):
                assert value is not None
                seeds[ch] = value
                remaining.discard(ch)
        apply_base(row)
        cursor = row.parent_id
    return DeltaHistory(
        seeds=seeds,
        writes={c: list(reversed(ws)) for c, ws in newest_first.items()},
    )


def frozen_base(
    row: CheckpointRow,
    is_populated: Callable[[CheckpointRow, str], bool],
    walk: Callable[[CheckpointRow, Sequence[str]], DeltaHistory],
) -> dict[str, DeltaEntry]:
    """The delta base `row` needs before its ancestors are removed.

    Only delta channels without a stored value at `row` need one: a walk from a
    descendant stops at `row` for the others.
    """
    needed = [c for c in row.delta_channels if not is_populated(row, c)]
    if not needed:
        return {}
    history = walk(row, needed)
    return {
        c: DeltaEntry(seed=history.seeds.get(c), writes=tuple(history.writes[c]))
        for c in needed
    }


class StaleListBase(Exception):
    """A list write reused positions of an element log that no longer exists.

    Internal: the saver catches it and writes the value again without reuse.
    """


def compress_positions(positions: Iterable[int]) -> Runs:
    """Positions as half-open runs: [0, 1, 2, 7] -> ((0, 3), (7, 8))."""
    runs: list[tuple[int, int]] = []
    for p in positions:
        if runs and runs[-1][1] == p:
            runs[-1] = (runs[-1][0], p + 1)
        else:
            runs.append((p, p + 1))
    return tuple(runs)


def runs_of(slots: SlotRuns, appended_at: int) -> Runs:
    """The log positions of a list write's slot runs, its new elements appended
    to the log from position `appended_at`: per run, not per element."""
    runs: list[tuple[int, int]] = []
    for first, count in slots:
        start = first if first >= 0 else appended_at - first - 1
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], start + count)
        else:
            runs.append((start, start + count))
    return tuple(runs)


def new_positions(slots: SlotRuns, stored: Runs) -> list[tuple[int, int]]:
    """(new item index, log position) of every new element of a list write
    whose slots `slots` were stored at `stored`: per run, then per new item."""
    out: list[tuple[int, int]] = []
    runs = iter(stored)
    start, stop = next(runs, (0, 0))
    for first, count in slots:
        while count:
            if start == stop:
                start, stop = next(runs)
            take = min(count, stop - start)
            if first < 0:
                out += zip(
                    range(-first - 1, -first - 1 + take),
                    range(start, start + take),
                    strict=True,
                )
                first -= take
            else:
                first += take
            start += take
            count -= take
    return out


def expand_runs(runs: Iterable[Sequence[int]]) -> list[int]:
    """Inverse of `compress_positions`."""
    out: list[int] = []
    for start, end in runs:
        out += range(start, end)
    return out


def slot_runs(slots: Iterable[int]) -> SlotRuns:
    """Slots as (first, count) runs: [4, 5, 6, -1, -2, 0] -> (4, 3), (-1, 2), (0, 1)."""
    runs: list[tuple[int, int]] = []
    first, count = 0, 0
    for s in slots:
        if count and s >= 0 and first >= 0 and s == first + count:
            count += 1
        elif count and s < 0 and first < 0 and s == first - count:
            count += 1
        else:
            if count:
                runs.append((first, count))
            first, count = s, 1
    if count:
        runs.append((first, count))
    return tuple(runs)
