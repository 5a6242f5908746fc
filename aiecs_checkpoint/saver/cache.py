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
  one process, as LangGraph shares state objects within a run.

Both are bounded LRU maps: losing an entry costs a re-serialization or a
re-decode, never correctness.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

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

    def discard_where(self, predicate: Callable[[K], bool]) -> None:
        with self._lock:
            for key in [k for k in self._data if predicate(k)]:
                del self._data[key]


class Known:
    """A list as last written or read: its elements and their log positions."""

    __slots__ = ("elements", "epoch", "positions")

    def __init__(self, epoch: str, elements: list[Any], positions: list[int]) -> None:
        self.epoch = epoch
        self.elements = elements
        self.positions = positions

    def positions_of(self, ids: set[int]) -> list[int]:
        """Positions of the recorded elements whose id is in `ids`."""
        if not ids:
            return []
        pairs = zip(self.elements, self.positions, strict=True)
        return [p for e, p in pairs if id(e) in ids]

    def reuse(self, value: Sequence[Any], dirty: set[int]) -> list[int | None]:
        """Per element of `value`, the position it can reuse, or None."""
        n = len(self.elements)
        if len(value) >= n and all(map(operator.is_, value, self.elements)):
            if not dirty or dirty.isdisjoint(map(id, self.elements)):
                return [*self.positions, *([None] * (len(value) - n))]
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
        self, key: ListKey, epoch: str, elements: Iterable[Any], positions: list[int]
    ) -> None:
        """Remember that element i of `elements` is stored at `positions[i]`."""
        self._lists.put(key, Known(epoch, list(elements), positions))

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


class DecodeCache:
    """Decoded list elements by their immutable storage position."""

    def __init__(self, capacity: int = 4096) -> None:
        self._lru: _LRU[tuple[str, str, str, str], list[Any]] = _LRU(capacity)

    def decode(
        self,
        key: ListKey,
        epoch: str,
        positions: Sequence[int],
        items: Sequence[Any],
        load: Callable[[Any], Any],
    ) -> list[Any]:
        """The elements at `positions` (serialized as `items`), each decoded once."""
        full = (*key, epoch)
        decoded = self._lru.get(full)
        if decoded is None:
            decoded = []
            self._lru.put(full, decoded)
        if positions and max(positions) >= len(decoded):
            decoded.extend([_MISSING] * (max(positions) + 1 - len(decoded)))
        out = [decoded[p] for p in positions]
        missing = [i for i, v in enumerate(out) if v is _MISSING]
        if any(items[i] is None for i in missing):
            raise OmittedElement(epoch)
        for i in missing:
            out[i] = decoded[positions[i]] = load(items[i])
        return out

    def forget(self, key: ListKey, epoch: str, positions: Iterable[int]) -> None:
        """Drop decoded elements (their objects were edited in place by a caller)."""
        decoded = self._lru.get((*key, epoch))
        if decoded is not None:
            for p in positions:
                if p < len(decoded):
                    decoded[p] = _MISSING
