"""Process-local caches that make list channels cost what changed, not their length.

* `ElementIndex`: per (thread, namespace, channel), the list this process last
  wrote or read, with each element's element-log position. A new version of the
  list reuses the position of every element that is the very same object
  (identity, never equality), so unchanged elements are not serialized again.
  The common case, a list that only grew, is checked at C speed.
  A stored element that a task writes again may have been edited in place: it
  is serialized again by every later put (until stored anew), so a message
  edited and returned by a node is stored as edited. LangGraph state must not
  be mutated in place otherwise.
* `DecodeCache`: decoded elements per (thread, namespace, channel, epoch),
  indexed by position. Log entries are immutable and an epoch is never reused,
  so an entry can never go stale. Decoded elements are shared by the reads of
  one process, as LangGraph shares state objects within a run. A read tells
  the store which leading positions it holds decoded (`DecodeCache.held`), and
  the store leaves those elements out of its reply.

Both are bounded LRU maps: losing an entry costs a re-serialization or a
re-decode (or, between a read's request and its decoding, a second request
without the held positions: `OmittedElement`), never correctness.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from aiecs_checkpoint.stores.records import Held, Runs, SlotRuns, expand_runs

K = TypeVar("K")
V = TypeVar("V")

ListKey = tuple[str, str, str]
"""(thread id, namespace, channel)."""


class _LRU(Generic[K, V]):
    """A small thread-safe LRU map."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._capacity:
                self._data.popitem(last=False)

    def keys_where(self, predicate: Callable[[K], bool]) -> list[K]:
        with self._lock:
            return [k for k in self._data if predicate(k)]

    def discard_where(self, predicate: Callable[[K], bool]) -> None:
        with self._lock:
            for key in [k for k in self._data if predicate(k)]:
                del self._data[key]


class Known:
    """A list as last written or read: its elements and their log positions."""

    __slots__ = ("_positions", "elements", "epoch", "runs")

    def __init__(self, epoch: str, elements: list[Any], runs: Runs) -> None:
        self.epoch = epoch
        self.elements = elements
        self.runs = runs
        self._positions: list[int] | None = None

    @property
    def positions(self) -> list[int]:
        """Element i's log position, per element (expanded from `runs` once)."""
        if self._positions is None:
            self._positions = expand_runs(self.runs)
        return self._positions

    @property
    def slot_runs(self) -> SlotRuns:
        """The positions as `ListWrite` slot runs: (first, count)."""
        return tuple((start, stop - start) for start, stop in self.runs)

    def positions_of(self, ids: set[int]) -> list[int]:
        """Positions of the recorded elements whose id is in `ids`."""
        if not ids or ids.isdisjoint(map(id, self.elements)):
            return []
        pairs = zip(self.elements, self.positions, strict=True)
        return [p for e, p in pairs if id(e) in ids]

    def extended_by(self, value: Sequence[Any], dirty: set[int]) -> bool:
        """True when `value` starts with exactly these objects and none is dirty."""
        n = len(self.elements)
        return (
            len(value) >= n
            and all(map(operator.is_, value, self.elements))
            and (not dirty or dirty.isdisjoint(map(id, self.elements)))
        )

    def reuse(self, value: Sequence[Any], dirty: set[int]) -> list[int | None]:
        """Per element of `value`, the position it can reuse, or None."""
        if self.extended_by(value, dirty):
            return [*self.positions, *([None] * (len(value) - len(self.elements)))]
        pairs = zip(self.elements, self.positions, strict=True)
        by_id = {id(e): (e, p) for e, p in pairs}
        out: list[int | None] = []
        for element in value:
            hit = by_id.get(id(element))
            ok = hit is not None and hit[0] is element and id(element) not in dirty
            out.append(hit[1] if ok and hit is not None else None)
        return out


class ElementIndex:
    """Which element-log position holds which live object, per list channel."""

    def __init__(self, capacity: int = 1024) -> None:
        self._lists: _LRU[ListKey, Known] = _LRU(capacity)
        self._edited: _LRU[tuple[str, str], dict[int, tuple[Any, str]]] = _LRU(capacity)

    def lookup(self, key: ListKey) -> Known | None:
        """What this process last wrote or read for `key`."""
        return self._lists.get(key)

    def record(
        self, key: ListKey, epoch: str, elements: Iterable[Any], runs: Runs
    ) -> None:
        """Remember that element i of `elements` is stored at position i of `runs`."""
        self._lists.put(key, Known(epoch, list(elements), runs))

    def mark_edited(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        channel: str,
        items: Iterable[Any],
    ) -> tuple[str, list[int]] | None:
        """A task wrote `items` against `checkpoint_id`; note the stored ones.

        An object this process knows as a stored element, written again by a
        task, may have been edited in place: its stored position no longer
        describes it. Returns the epoch and those positions (to drop their
        cached decodes), or None when no stored element was written.
        """
        known = self._lists.get((thread_id, checkpoint_ns, channel))
        if known is None:
            return None
        ids = {id(i) for i in items}
        if ids.isdisjoint(map(id, known.elements)):
            return None
        pairs = zip(known.elements, known.positions, strict=True)
        hits = [(e, p) for e, p in pairs if id(e) in ids]
        if not hits:
            return None
        edited = self._edited.get((thread_id, checkpoint_ns))
        if edited is None:
            edited = {}
            self._edited.put((thread_id, checkpoint_ns), edited)
        for element, _ in hits:
            edited[id(element)] = (element, checkpoint_id)
        return known.epoch, [p for _, p in hits]

    def edited(self, thread_id: str, checkpoint_ns: str, putting: str) -> set[int]:
        """Ids that must be serialized again in the put of checkpoint `putting`.

        Every edited object, except those written against `putting` itself:
        LangGraph may save a checkpoint in the background after the next step's
        task edited its objects, and that checkpoint's values predate the edit.
        """
        edited = self._edited.get((thread_id, checkpoint_ns))
        if not edited:
            return set()
        return {i for i, (_, cid) in edited.items() if cid != putting}

    def settle(
        self, thread_id: str, checkpoint_ns: str, putting: str, elements: Sequence[Any]
    ) -> None:
        """Edited objects that the put of `putting` stored anew are edited no more."""
        edited = self._edited.get((thread_id, checkpoint_ns))
        if not edited:
            return
        for element in elements:
            entry = edited.get(id(element))
            if entry is not None and entry[0] is element and entry[1] != putting:
                del edited[id(element)]

    def forget_thread(self, thread_id: str) -> None:
        """Drop every entry of a thread (after it was deleted or rewritten)."""
        self._lists.discard_where(lambda k: k[0] == thread_id)
        self._edited.discard_where(lambda k: k[0] == thread_id)


_MISSING = object()


class OmittedElement(LookupError):
    """A store omitted an element this cache was expected to hold; fetch again."""


class _Decoded:
    """Decoded elements of one element log by position; `dense` leading ones are
    all present (the prefix a reader can tell a store it holds)."""

    __slots__ = ("dense", "items")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.dense = 0

    def advance(self) -> None:
        items, dense = self.items, self.dense
        while dense < len(items) and items[dense] is not _MISSING:
            dense += 1
        self.dense = dense


class DecodeCache:
    """Decoded list elements by their immutable storage position.

    `held` tells a store which leading positions of which logs are decoded here,
    so its reads can leave them out (`ListItems.held`). A lock keeps `dense`
    exact while other threads decode or forget.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._lru: _LRU[tuple[str, str, str, str], _Decoded] = _LRU(capacity)
        self._epochs: _LRU[tuple[str, str], dict[str, str]] = _LRU(capacity)
        self._lock = threading.Lock()

    def held(self, thread_id: str, checkpoint_ns: str | None) -> Held:
        """Per (namespace, channel) of the thread (one namespace, or all when None):
        the log epoch last decoded and how many leading positions are decoded."""
        if checkpoint_ns is not None:
            scopes = [(thread_id, checkpoint_ns)]
        else:
            scopes = self._epochs.keys_where(lambda k: k[0] == thread_id)
        out: dict[tuple[str, str], tuple[str, int]] = {}
        for scope in scopes:
            epochs = self._epochs.get(scope)
            if not epochs:
                continue
            with self._lock:
                for ch, epoch in list(epochs.items()):
                    entry = self._lru.get((*scope, ch, epoch))
                    if entry is None:
                        if epochs.get(ch) == epoch:
                            del epochs[ch]
                    elif entry.dense:
                        out[(scope[1], ch)] = (epoch, entry.dense)
        return out

    def decode(
        self,
        key: ListKey,
        epoch: str,
        runs: Runs,
        items: Sequence[Any],
        held: int,
        load: Callable[[Any], Any],
    ) -> list[Any]:
        """The elements at the positions of `runs`, each decoded once.

        `items` are the serialized elements in run order, except positions below
        `held`, which must be decoded here already (else `OmittedElement`).
        """
        full = (*key, epoch)
        entry = self._lru.get(full)
        if entry is None:
            entry = _Decoded()
            self._lru.put(full, entry)
        epochs = self._epochs.get((key[0], key[1]))
        if epochs is None:
            epochs = {}
            self._epochs.put((key[0], key[1]), epochs)
        epochs[key[2]] = epoch
        with self._lock:
            decoded = entry.items
            end = max((stop for _, stop in runs), default=0)
            if end > len(decoded):
                decoded += [_MISSING] * (end - len(decoded))
            dense = entry.dense
            out: list[Any] = []
            i = 0
            for start, stop in runs:
                mid = min(stop, max(start, held))
                if mid > start:
                    tail = decoded[max(start, dense) : mid]
                    if any(v is _MISSING for v in tail):
                        raise OmittedElement(epoch)
                    out += decoded[start:mid]
                if stop <= mid:
                    continue
                if stop <= dense:
                    out += decoded[mid:stop]
                else:
                    sent = items[i : i + stop - mid]
                    for p, raw in zip(range(mid, stop), sent, strict=True):
                        v = decoded[p]
                        if v is _MISSING:
                            v = decoded[p] = load(raw)
                        out.append(v)
                i += stop - mid
            entry.advance()
            return out

    def forget(self, key: ListKey, epoch: str, positions: Iterable[int]) -> None:
        """Drop decoded elements (their objects were edited in place by a caller)."""
        entry = self._lru.get((*key, epoch))
        if entry is None:
            return
        with self._lock:
            decoded = entry.items
            for p in positions:
                if p < len(decoded):
                    decoded[p] = _MISSING
                    entry.dense = min(entry.dense, p)
