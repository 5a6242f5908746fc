"""Process-local caches that make list channels cost what changed, within a byte budget.

One `SaverCache` per saver holds two kinds of entries in one least-recently-used
order, bounded by `max_bytes` together:

* element logs, per (thread, namespace, channel, epoch): each element decoded
  once and kept privately (`saver.elements`: plain msgpack bytes, or a decoded
  object never handed out), with every known element's stored size. Log
  entries are immutable and an epoch is never reused, so a kept element can
  never go stale. A read copies what it returns from here (every caller gets
  objects of its own) and tells the store which leading positions it holds
  (`held`), so the store leaves those out of its reply.
* lists, per (thread, namespace, channel): the objects of the last list this
  saver wrote (`written`) and of the last lists it handed out (`reads`), with
  each element's log position. A put reuses the position of every element that
  is the very same object, so unchanged elements are not serialized again,
  whoever's objects they are: the writer's own (its list only grew), or copies
  a reader got (a graph run starting from a read, a second worker, a poller,
  `update_state`). Copies handed out may have been edited by their reader, so
  an element matched in a read generation is reused only if it still equals
  the stored element (`unchanged`). Objects the saver was given by a put are
  trusted not to be edited in place without being written again (LangGraph's
  contract for state); one written again by a task is marked edited and
  serialized again until stored anew.

Sizes are estimates in bytes: a kept element counts its stored size plus
`KEPT_OVERHEAD`, a list handed out `COPY_OVERHEAD` per element (copies share
immutable leaves with what is kept) plus the size of its plain elements
(decoded afresh), and a written list the stored size of its elements (the
caller's objects, kept alive by the cache). Evicting an entry costs a re-decode
or a re-serialization (or, between a read's request and its decoding, a second
request without the held positions: `OmittedElement`), never correctness.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Any

from aiecs_checkpoint.saver.elements import (
    FLAT,
    MISSING,
    MODEL,
    OBJECT,
    PLAIN,
    SHARED,
    ElementCodec,
    build,
    fresh,
)
from aiecs_checkpoint.saver.sends import MissingElements
from aiecs_checkpoint.stores.records import (
    Held,
    ListValue,
    ListWrite,
    Runs,
    SlotRuns,
    Typed,
    expand_runs,
    new_positions,
)

ListKey = tuple[str, str, str]
"""(thread id, namespace, channel)."""

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
"""The default byte budget of one saver's caches (`cache_bytes=`)."""

KEPT_OVERHEAD = 64
"""Bytes counted per kept element beyond its stored size (object headers)."""

COPY_OVERHEAD = 160
"""Bytes counted per element of a list handed out, beyond the data it does not
share with what is kept (copies share strings and numbers; plain elements,
decoded afresh, share nothing and count their size too)."""

READ_GENERATIONS = 2
"""Lists handed out that a put may reuse positions of, per list channel."""

UNKNOWN_SIZE = 256
"""Size assumed for an element whose stored size this process does not know."""

EDITED_THREADS = 1024
"""(thread, namespace) pairs whose edited-element marks are kept."""

FEW_MARKS = 8
"""Up to this many edited-element marks are looked up one by one in a list
(each at C speed); more take one pass over the list's ids."""


class OmittedElement(LookupError):
    """A store omitted an element this cache was expected to hold; fetch again."""


class Known:
    """A list as last written or handed out: its elements and their log positions."""

    __slots__ = ("_ids", "_positions", "elements", "epoch", "nbytes", "runs")

    def __init__(
        self,
        epoch: str,
        elements: list[Any],
        runs: Runs,
        nbytes: int,
        head: Known | None = None,
    ) -> None:
        """`head`: a generation whose objects `elements` starts with, whose
        ids are reused rather than taken again (a list that only grew)."""
        self.epoch = epoch
        self.elements = elements
        self.runs = runs
        self.nbytes = nbytes
        self._positions: list[int] | None = None
        self._ids: list[int] | None = None
        if head is not None and head._ids is not None:
            rest = elements[len(head._ids) :]
            self._ids = head._ids + list(map(id, rest))

    @property
    def ids(self) -> list[int]:
        """Element i's `id`, per element (taken once per generation, or
        extended from the generation this one grew from)."""
        if self._ids is None:
            self._ids = list(map(id, self.elements))
        return self._ids

    @property
    def positions(self) -> list[int]:
        """Element i's log position, per element (expanded from `runs` once)."""
        if self._positions is None:
            self._positions = expand_runs(self.runs)
        return self._positions

    def positions_at(self, indexes: Sequence[int]) -> list[int]:
        """The log positions of the elements at `indexes`: looked up in the
        runs for a few, without expanding every run of a long list."""
        if self._positions is not None or len(indexes) > FEW_MARKS:
            positions = self.positions
            return [positions[i] for i in indexes]
        out: list[int] = []
        for i in indexes:
            before = 0
            for start, stop in self.runs:
                if i < before + stop - start:
                    out.append(start + i - before)
                    break
                before += stop - start
            else:
                raise IndexError(i)
        return out

    @property
    def slot_runs(self) -> SlotRuns:
        """The positions as `ListWrite` slot runs: (first, count)."""
        return tuple((start, stop - start) for start, stop in self.runs)

    def extended_by(self, value: Sequence[Any], dirty: set[int]) -> bool:
        """True when `value` starts with exactly these objects and none is dirty."""
        n = len(self.elements)
        return (
            len(value) >= n
            and all(map(operator.is_, value, self.elements))
            and (not dirty or dirty.isdisjoint(self.ids))
        )

    def dirty_at(self, value: Sequence[Any], dirty: set[int]) -> list[int] | None:
        """When `value` starts with exactly these objects: the indexes of those
        in `dirty` (none: []); otherwise None. Searched at C speed."""
        n = len(self.elements)
        if len(value) < n or not all(map(operator.is_, value, self.elements)):
            return None
        if not dirty:
            return []
        ids = self.ids
        # few marks (the usual case): look each up; many: one pass over the ids
        hits = dirty if len(dirty) <= FEW_MARKS else dirty.intersection(ids)
        found: list[int] = []
        for d in hits:
            try:
                i = ids.index(d)
            except ValueError:
                continue
            while True:
                found.append(i)
                try:
                    i = ids.index(d, i + 1)
                except ValueError:
                    break
        return sorted(found)

    def hits(self, ids: set[int]) -> int:
        """How many of these objects have an id in `ids`."""
        return 0 if not ids else len(ids.intersection(map(id, self.elements)))

    def by_id(self) -> dict[int, tuple[Any, int]]:
        """id -> (object, position) of every element."""
        pairs = zip(self.elements, self.positions, strict=True)
        return {id(e): (e, p) for e, p in pairs}


class _Log:
    """Kept elements of one element log, by position."""

    __slots__ = (
        "dense",
        "kept",
        "kinds",
        "known",
        "nbytes",
        "plain",
        "sizes",
        "total",
    )

    def __init__(self) -> None:
        self.kinds = bytearray()
        self.kept: list[Any] = []
        self.sizes: list[int] = []
        self.dense = 0
        self.nbytes = 0
        self.total = 0
        self.known = 0
        self.plain = 0

    def sized(self, position: int, size: int) -> None:
        """Record an element's stored size."""
        old = self.sizes[position]
        self.sizes[position] = size
        self.total += size - old
        self.known += not old

    def grow(self, end: int) -> None:
        if end > len(self.kinds):
            extra = end - len(self.kinds)
            self.kinds += bytes(extra)
            self.kept += [None] * extra
            self.sizes += [0] * extra

    def advance(self) -> None:
        kinds, dense = self.kinds, self.dense
        while dense < len(kinds) and kinds[dense] != MISSING:
            dense += 1
        self.dense = dense

    def copies_size(self, count: int) -> int:
        """Estimated bytes of `count` copies handed out (see `COPY_OVERHEAD`)."""
        plain = self.plain * count // max(len(self.kinds), 1)
        return count * COPY_OVERHEAD + plain

    def size_of(self, count: int) -> int:
        """Estimated stored bytes of `count` elements of this log (the mean
        size of the elements whose size is known)."""
        if not self.known:
            return count * UNKNOWN_SIZE
        return count * self.total // self.known


class _List:
    """What a put may reuse of one list channel.

    `objs` maps the id of every object of the written generation to the object
    (and may still hold objects of written generations replaced since): a
    task's write is checked against it in time proportional to the write, not
    to the list, and holding the objects keeps their ids from being reused by
    others. It grows by what a written generation adds to the one it extends,
    and is rebuilt when it holds twice what is needed. Read generations are
    not indexed (they are scanned: a graph run's first put makes its read the
    written generation, so a scan is rare outside a raw caller's loop).
    """

    __slots__ = ("nbytes", "objs", "reads", "written")

    def __init__(self) -> None:
        self.written: Known | None = None
        self.reads: list[Known] = []
        self.nbytes = 0
        self.objs: dict[int, Any] = {}

    def write(self, known: Known, base: Known | None) -> None:
        """Make `known` the written generation (`base`: the generation whose
        objects are its head, if any)."""
        previous, self.written = self.written, known
        elements = known.elements
        if base is not None and base is previous:
            new = elements[len(base.elements) :]
            self.objs.update(zip(map(id, new), new, strict=True))
        else:
            if base is not None and any(g is base for g in self.reads):
                # a run's first put after its read: that read lives on as written
                self.reads = [g for g in self.reads if g is not base]
            self.objs = {}
        if len(self.objs) > 2 * len(elements) + 64 or not self.objs:
            self.objs = dict(zip(map(id, elements), elements, strict=True))
        self.measure()

    def read(self, known: Known) -> None:
        """Add `known` as the newest read generation."""
        self.reads = [known, *self.reads[: READ_GENERATIONS - 1]]
        self.measure()

    def measure(self) -> None:
        written = self.written
        if written is None:
            stale = 0
        else:
            live = max(len(written.elements), 1)
            stale = written.nbytes * max(len(self.objs) - live, 0) // live
        total = stale if written is None else stale + written.nbytes
        for g in self.reads:
            total += g.nbytes
        self.nbytes = total

    def gens(self) -> list[Known]:
        return [g for g in (self.written, *self.reads) if g is not None]

    def stored(self, items: Iterable[Any]) -> list[Any]:
        """The objects of `items` that a generation holds: the written one by
        index, read ones by a C-level identity scan (a task may write an object
        of the run's read before its first checkpoint is saved)."""
        objs = self.objs
        found: list[Any] = []
        for x in items:
            if objs.get(id(x)) is x or any(
                id(x) in map(id, g.elements) for g in self.reads
            ):
                found.append(x)
        return found


LogKey = tuple[str, str, str, str]
"""(thread id, namespace, channel, epoch)."""


class SaverCache:
    """The saver's decoded elements and list generations, in one byte budget.

    Thread-safe: one lock guards every entry (a decode or copy runs under it).
    """

    def __init__(
        self, codec: ElementCodec, max_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        self.codec = codec
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._lru: OrderedDict[tuple[str, ...], _Log | _List] = OrderedDict()
        self._epochs: dict[tuple[str, str], dict[str, str]] = {}
        self._channels: dict[tuple[str, str], set[str]] = {}
        """(thread, namespace) -> channels that may have a list entry."""
        self._edited: OrderedDict[tuple[str, str], dict[int, tuple[Any, str]]] = (
            OrderedDict()
        )
        self.used = 0

    # -- budget ------------------------------------------------------------------

    def _touch(self, key: tuple[str, ...], entry: _Log | _List, before: int) -> None:
        """Mark `entry` most recently used and account its growth."""
        self._lru[key] = entry
        self._lru.move_to_end(key)
        self.used += entry.nbytes - before

    def _shrink(self, keep: Iterable[tuple[str, ...]] = ()) -> None:
        """Evict least recently used entries (not those in `keep`) until the
        cache fits its budget."""
        if self.used <= self.max_bytes:
            return
        spared = set(keep)
        while self.used > self.max_bytes and len(self._lru) > len(spared):
            key = next(k for k in self._lru if k not in spared)
            entry = self._lru.pop(key)
            self.used -= entry.nbytes
            if isinstance(entry, _List):
                self._drop_channel(key)

    def _log(self, key: LogKey, create: bool) -> _Log | None:
        found = self._lru.get(key)
        if found is None and create:
            found = _Log()
            self._lru[key] = found
            thread, ns, channel, epoch = key
            self._epochs.setdefault((thread, ns), {})[channel] = epoch
        assert found is None or isinstance(found, _Log)
        return found

    def _list(self, key: ListKey, create: bool) -> _List | None:
        found = self._lru.get(key)
        if found is None and create:
            found = _List()
            self._lru[key] = found
            self._channels.setdefault((key[0], key[1]), set()).add(key[2])
        assert found is None or isinstance(found, _List)
        return found

    # -- reads ---------------------------------------------------------------------

    def held(self, thread_id: str, checkpoint_ns: str | None) -> Held:
        """Per (namespace, channel) of the thread (one namespace, or all when
        None): the log epoch last decoded and how many leading positions are kept."""
        with self._lock:
            if checkpoint_ns is not None:
                scopes = [(thread_id, checkpoint_ns)]
            else:
                scopes = [s for s in self._epochs if s[0] == thread_id]
            out: dict[tuple[str, str], tuple[str, int]] = {}
            for scope in scopes:
                epochs = self._epochs.get(scope)
                if not epochs:
                    continue
                for channel, epoch in list(epochs.items()):
                    log = self._lru.get((*scope, channel, epoch))
                    if not isinstance(log, _Log):
                        del epochs[channel]
                    elif log.dense:
                        out[(scope[1], channel)] = (epoch, log.dense)
                if not epochs:
                    del self._epochs[scope]
            return out

    def read_list(
        self,
        key: ListKey,
        epoch: str,
        runs: Runs,
        items: Sequence[Typed],
        held: int,
        load: Callable[[Typed], Any] | None = None,
    ) -> list[Any]:
        """Fresh copies of the elements at `runs`, each decoded once per process.

        `items` are the serialized elements in run order, except positions below
        `held`, which must be kept here already (else `OmittedElement`). The
        copies are remembered as a read generation of the list.
        """
        log_key = (*key, epoch)
        with self._lock:
            log = self._log(log_key, create=True)
            assert log is not None
            before = log.nbytes
            self._ingest(log, runs, items, held, load)
            log.advance()
            self._touch(log_key, log, before)
            out = self._copies(log, runs)
            self._remember_read(key, Known(epoch, out, runs, log.copies_size(len(out))))
            self._shrink(keep=(log_key, key))
            return out

    def shared(self, key: ListKey, epoch: str, runs: Runs) -> list[Any]:
        """Fresh copies of kept elements (those a ref value points at); raises
        `MissingElements` when some are not kept."""
        log_key = (*key, epoch)
        with self._lock:
            log = self._log(log_key, create=False)
            end = max((stop for _, stop in runs), default=0)
            if (
                log is None
                or len(log.kinds) < end
                or any(log.kinds.find(MISSING, a, b) >= 0 for a, b in runs)
            ):
                raise MissingElements(key, epoch, runs)
            self._lru.move_to_end(log_key)
            return self._copies(log, runs)

    def add_items(
        self,
        key: ListKey,
        epoch: str,
        runs: Runs,
        items: Sequence[Typed],
        load: Callable[[Typed], Any] | None = None,
    ) -> None:
        """Keep elements fetched for a ref value (`log_items`)."""
        log_key = (*key, epoch)
        with self._lock:
            log = self._log(log_key, create=True)
            assert log is not None
            before = log.nbytes
            if len(items) == sum(b - a for a, b in runs):
                self._ingest(log, runs, items, 0, load)
            log.advance()
            self._touch(log_key, log, before)
            self._shrink(keep=(log_key,))

    def match(
        self, thread_id: str, checkpoint_ns: str, in_run: bool
    ) -> Callable[[list[Any]], tuple[str, str, Runs, int] | None]:
        """For `saver.sends`: the stored list channel (of this thread and
        namespace) whose written generation, or in a graph run a generation
        the run read, is exactly the head of a given list. Looked up only when
        a value holds a `Send`."""

        def find(value: list[Any]) -> tuple[str, str, Runs, int] | None:
            with self._lock:
                dirty, _ = self.edited(thread_id, checkpoint_ns, "")
                for channel in self._channels.get((thread_id, checkpoint_ns), ()):
                    entry = self._lru.get((thread_id, checkpoint_ns, channel))
                    if not isinstance(entry, _List):
                        continue
                    gens = [entry.written] + (entry.reads if in_run else [])
                    for known in gens:
                        if known and known.elements and known.extended_by(value, dirty):
                            shared = len(known.elements)
                            return channel, known.epoch, known.runs, shared
            return None

        return find

    def _ingest(
        self,
        log: _Log,
        runs: Runs,
        items: Sequence[Typed],
        held: int,
        load: Callable[[Typed], Any] | None = None,
    ) -> None:
        """Decode and keep every element of `items` not kept yet (found with a
        C-level search, so a read of a long list costs what is new)."""
        end = max((stop for _, stop in runs), default=0)
        log.grow(end)
        kinds, kept = log.kinds, log.kept
        offset = 0
        for start, stop in runs:
            mid = min(stop, max(start, held))
            if mid > start and kinds.find(MISSING, start, mid) >= 0:
                raise OmittedElement(start)
            p = kinds.find(MISSING, mid, stop)
            while p >= 0:
                item = items[offset + p - mid]
                kind, value = self.codec.ingest(item, load)
                size = len(item[1])
                kinds[p], kept[p] = kind, value
                log.sized(p, size)
                log.nbytes += size + KEPT_OVERHEAD
                if kind == PLAIN:
                    log.plain += size
                p = kinds.find(MISSING, p + 1, stop)
            offset += stop - mid

    def _copies(self, log: _Log, runs: Runs) -> list[Any]:
        """Fresh copies of the elements at `runs`. A run of one kind is copied
        at C speed: plain elements decoded together in one call, flat dicts
        copied with `map(dict, ...)`, immutable ones shared; other elements
        are copied one by one."""
        kinds, kept = log.kinds, log.kept
        out: list[Any] = []
        plain_at: list[int] = []
        blobs: list[bytes] = []
        for start, stop in runs:
            span = stop - start
            first = kinds[start] if span else SHARED
            if kinds.count(first, start, stop) == span:
                if first == FLAT:
                    out += map(dict, kept[start:stop])
                    continue
                if first == SHARED:
                    out += kept[start:stop]
                    continue
                if first == MODEL:
                    out += map(build, kept[start:stop])
                    continue
                if first == PLAIN:
                    plain_at += range(len(out), len(out) + span)
                    blobs += kept[start:stop]
                    out += kept[start:stop]
                    continue
            for p in range(start, stop):
                kind, value = kinds[p], kept[p]
                if kind == PLAIN:
                    plain_at.append(len(out))
                    blobs.append(value)
                out.append(
                    build(value)
                    if kind == MODEL
                    else dict(value)
                    if kind == FLAT
                    else value
                    if kind in (SHARED, PLAIN)
                    else fresh(value)
                )
        if not blobs:
            return out
        if len(plain_at) == len(out):
            return self.codec.decode_plain(blobs)
        for i, value in zip(plain_at, self.codec.decode_plain(blobs), strict=True):
            out[i] = value
        return out

    # -- writes --------------------------------------------------------------------

    def candidates(
        self, key: ListKey, manual: bool, trust_reads: bool
    ) -> list[tuple[Known, bool]]:
        """Generations a put of `key` may reuse, with whether each must be
        verified (`unchanged`).

        The written generation is trusted: LangGraph state is not edited in
        place unless written again (then marked edited). Read generations are
        verified unless `trust_reads` (a graph run saving checkpoints in the
        background, whose checkpoint must keep what it held before a later
        task edited an object in place). A manual update (`update_state`, a
        fork) may carry objects its caller edited, so it trusts no written
        generation and only the newest read (the one LangGraph made for that
        update), verified.
        """
        with self._lock:
            entry = self._list(key, create=False)
            if entry is None:
                return []
            self._lru.move_to_end(key)
            if manual:
                return [(g, True) for g in entry.reads[:1]]
            written = [(entry.written, False)] if entry.written is not None else []
            return written + [(g, not trust_reads) for g in entry.reads]

    def unchanged(
        self, key: ListKey, epoch: str, positions: Sequence[int], values: Sequence[Any]
    ) -> list[bool]:
        """Per (position, value): True when `value` equals the element stored at
        that position of the `epoch` log (False when this process no longer
        keeps it)."""
        with self._lock:
            log = self._log((*key, epoch), create=False)
            if log is None:
                return [False] * len(values)
            kinds, kept = log.kinds, log.kept
            out = [False] * len(values)
            plain = [
                i
                for i, p in enumerate(positions)
                if p < len(kinds) and kinds[p] == PLAIN
            ]
            if plain:
                vals = [values[i] for i in plain]
                blobs = [kept[positions[i]] for i in plain]
                if self.codec.plain_equal(vals, blobs):
                    for i in plain:
                        out[i] = True
                else:
                    for i, v, b in zip(plain, vals, blobs, strict=True):
                        out[i] = self.codec.plain_equal([v], [b])
            for i, p in enumerate(positions):
                kind = kinds[p] if p < len(kinds) else MISSING
                if kind in (OBJECT, FLAT, SHARED, MODEL):
                    stored = build(kept[p]) if kind == MODEL else kept[p]
                    try:
                        out[i] = bool(values[i] == stored)
                    except Exception:
                        out[i] = False
            return out

    def record_written(
        self,
        key: ListKey,
        stored: ListValue,
        elements: Sequence[Any],
        write: ListWrite,
        base: Known | None,
    ) -> None:
        """After a put: element i of `elements` is stored at position i of
        `stored.runs`, its new elements with their sizes; `base` is the
        generation the list extends, if any (only the rest is indexed)."""
        epoch, runs = stored.epoch, stored.runs
        sizes = [len(item[1]) for item in write.new_items]
        with self._lock:
            log = self._log((*key, epoch), create=False)
            if log is not None and sizes:
                placed = new_positions(write.runs, runs)
                log.grow(max(p for _, p in placed) + 1)
                for index, position in placed:
                    if log.kinds[position] != MISSING:
                        # kept from before the store lost writes: not this element
                        self._unkeep(log, position)
                    log.sized(position, sizes[index])
            if base is not None and base.epoch == epoch:
                nbytes = base.nbytes + sum(sizes)
            elif log is not None:
                nbytes = log.size_of(len(elements))
            else:
                nbytes = len(elements) * UNKNOWN_SIZE
            known = Known(epoch, list(elements), runs, nbytes, base)
            entry = self._list(key, create=True)
            assert entry is not None
            before = entry.nbytes
            entry.write(known, base)
            self._touch(key, entry, before)
            self._shrink(keep=(key,))

    def _remember_read(self, key: ListKey, known: Known) -> None:
        entry = self._list(key, create=True)
        assert entry is not None
        before = entry.nbytes
        entry.read(known)
        self._touch(key, entry, before)

    # -- edited elements -----------------------------------------------------------

    def mark_edited(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        channel: str,
        items: Iterable[Any],
    ) -> None:
        """A task wrote `items` against `checkpoint_id`: those this saver knows
        as stored elements may have been edited in place, so later puts
        serialize them again (until one stores them anew)."""
        with self._lock:
            entry = self._list((thread_id, checkpoint_ns, channel), create=False)
            hits = entry.stored(items) if entry is not None else []
            if not hits:
                return
            scope = (thread_id, checkpoint_ns)
            edited = self._edited.setdefault(scope, {})
            self._edited.move_to_end(scope)
            while len(self._edited) > EDITED_THREADS:
                self._edited.popitem(last=False)
            for element in hits:
                edited[id(element)] = (element, checkpoint_id)

    def edited(
        self, thread_id: str, checkpoint_ns: str, putting: str
    ) -> tuple[set[int], set[int]]:
        """(ids to serialize again, ids to keep as stored) in the put of `putting`.

        Every edited object must be serialized again, except those written
        against `putting` itself: LangGraph may save a checkpoint in the
        background after the next step's task edited its objects, and that
        checkpoint's values predate the edit, so those keep their stored
        position even if they no longer equal it.
        """
        if not self._edited:
            return set(), set()
        with self._lock:
            edited = self._edited.get((thread_id, checkpoint_ns))
            if not edited:
                return set(), set()
            dirty = {i for i, (_, cid) in edited.items() if cid != putting}
            return dirty, set(edited) - dirty

    def settle(
        self, thread_id: str, checkpoint_ns: str, putting: str, elements: Sequence[Any]
    ) -> None:
        """Edited objects that the put of `putting` stored anew are edited no more."""
        if not self._edited:
            return
        with self._lock:
            edited = self._edited.get((thread_id, checkpoint_ns))
            if not edited:
                return
            # A mark holds its object, so an id among `elements` is that
            # object. Few marks (the usual case): an identity scan each, from
            # the end, where a task's writes usually are; many: one set of ids.
            marks = [(k, obj) for k, (obj, cid) in edited.items() if cid != putting]
            if len(marks) <= FEW_MARKS:
                settled = [
                    k
                    for k, obj in marks
                    if any(map(operator.is_, reversed(elements), repeat(obj)))
                ]
            else:
                ids = set(map(id, elements))
                settled = [k for k, _ in marks if k in ids]
            for k in settled:
                del edited[k]

    # -- forgetting ----------------------------------------------------------------

    def _drop_channel(self, key: tuple[str, ...]) -> None:
        scope = (key[0], key[1])
        channels = self._channels.get(scope)
        if channels is not None:
            channels.discard(key[2])
            if not channels:
                del self._channels[scope]

    def forget_thread(self, thread_id: str, logs: bool = False) -> None:
        """Drop the thread's list generations and edited marks (after it was
        deleted or rewritten). Its element logs stay (epochs are never reused)
        unless `logs`: after the store lost writes, positions this process
        kept may be handed out again."""
        with self._lock:
            if logs:
                logged = [k for k in self._lru if len(k) == 4 and k[0] == thread_id]
                for log_key in logged:
                    self.used -= self._lru.pop(log_key).nbytes
                for scope in [s for s in self._epochs if s[0] == thread_id]:
                    del self._epochs[scope]
            scopes = [s for s in self._channels if s[0] == thread_id]
            for scope in scopes:
                for channel in list(self._channels.get(scope, ())):
                    key = (*scope, channel)
                    entry = self._lru.get(key)
                    if isinstance(entry, _List):
                        self.used -= self._lru.pop(key).nbytes
                    self._drop_channel(key)
            for scope in [s for s in self._edited if s[0] == thread_id]:
                del self._edited[scope]

    def clear(self) -> None:
        """Drop everything (reads and puts stay exact, only slower for a while)."""
        with self._lock:
            self._lru.clear()
            self._epochs.clear()
            self._channels.clear()
            self._edited.clear()
            self.used = 0

    @staticmethod
    def _unkeep(log: _Log, position: int) -> None:
        """Drop the element kept at `position` (its bytes stay counted until
        the log is evicted)."""
        log.kinds[position] = MISSING
        log.kept[position] = None
        log.dense = min(log.dense, position)

    def forget_log(self, key: ListKey, epoch: str, positions: Iterable[int]) -> None:
        """Drop kept elements of a log (tests use it to simulate eviction)."""
        with self._lock:
            log = self._log((*key, epoch), create=False)
            if log is None:
                return
            for p in positions:
                if p < len(log.kinds):
                    log.kinds[p] = MISSING
                    log.kept[p] = None
                    log.dense = min(log.dense, p)


__all__ = [
    "DEFAULT_CACHE_BYTES",
    "Known",
    "ListKey",
    "OmittedElement",
    "SaverCache",
]
