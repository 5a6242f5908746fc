"""Process-local caches that make list channels cost what changed, not their length.

* `ElementIndex`: per (thread, namespace, channel), the list elements this process
  last wrote or read, with their element-log positions. A new version of the list
  reuses a position when it holds the very same object (identity, not equality),
  so unchanged elements are never serialized again. LangGraph state values must
  not be mutated in place (nodes return updates), which is what makes identity a
  sound test; an element that is a new object is always serialized.
* `DecodeCache`: decoded element per (thread, namespace, channel, epoch, position).
  Log entries are immutable and an epoch is never reused, so an entry can never
  go stale; readers get a shallow copy so a reader that reassigns attributes
  cannot change what the next reader sees.

Both are bounded LRU maps: losing an entry only costs a re-serialization or a
re-decode, never correctness.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
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


class ElementIndex:
    """Which element-log position holds which live object, per list channel."""

    def __init__(self, capacity: int = 1024) -> None:
        self._lru: _LRU[ListKey, tuple[str, dict[int, tuple[Any, int]]]] = _LRU(
            capacity
        )

    def lookup(self, key: ListKey) -> tuple[str, dict[int, tuple[Any, int]]] | None:
        """The epoch and id(obj) -> (obj, position) map last recorded for `key`."""
        return self._lru.get(key)

    def record(
        self, key: ListKey, epoch: str, elements: Sequence[Any], positions: Sequence[int]
    ) -> None:
        """Remember that `elements[i]` is stored at `positions[i]` of `epoch`."""
        self._lru.put(
            key, (epoch, {id(e): (e, p) for e, p in zip(elements, positions)})
        )

    def forget_thread(self, thread_id: str) -> None:
        """Drop every entry of a thread (after it was deleted or rewritten)."""
        self._lru.discard_where(lambda k: k[0] == thread_id)


class DecodeCache:
    """Decoded list elements by their immutable storage position."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._lru: _LRU[tuple[str, str, str, str, int], Any] = _LRU(capacity)

    def decode(
        self,
        key: ListKey,
        epoch: str,
        position: int,
        load: Callable[[], Any],
    ) -> Any:
        """The element at `position`, decoded once per process, copied per reader."""
        full = (*key, epoch, position)
        cached = self._lru.get(full)
        if cached is None:
            cached = (load(),)
            self._lru.put(full, cached)
        try:
            return copy.copy(cached[0])
        except Exception:
            return load()
