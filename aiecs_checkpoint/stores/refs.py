"""Stored values that point into element logs instead of repeating lists.

A `Send` whose argument carries the graph's state (LangGraph's prebuilt agent
sends the whole state with every tool call) would store every message again,
in the task's writes and in the `__pregel_tasks` channel. Instead, the saver
stores such a value as a *ref value*: the value serialized with each such list
cut down to its elements not stored yet, plus, per list, where in which element
log the stored elements are (`ListRef`). Reading it back takes those elements
from the log and puts the list back together.

A ref value is an ordinary `Typed` pair, `(REF_TYPE, payload)`, so every store
keeps it as it keeps any value. The payload is msgpack `[inner type, inner
bytes, [[path, channel, epoch, runs, tail], ...]]`: the inner bytes are the
serializer's (encrypted under `EncryptedSerializer`); paths (dict keys of the
`Send` argument), channel names, epochs and positions are structure and stay
in clear. History rewrites that compact or rename element logs
(`stores.thread_model`) keep refs pointing at the same elements (`remap`), and
count the positions they use as live (`uses`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import ormsgpack

from aiecs_checkpoint.errors import CorruptDataError
from aiecs_checkpoint.stores.records import Runs, Typed

REF_TYPE = "aiecs-refs/1"
"""Type tag of a ref value (never a serializer's own type)."""


@dataclass(frozen=True, slots=True)
class ListRef:
    """A list inside a value: the elements at `runs` of the element log
    (`channel`, `epoch`), followed by the `tail` elements the value holds
    inline at `path` (dict keys from the value's root)."""

    path: tuple[str, ...]
    channel: str
    epoch: str
    runs: Runs
    tail: int

    @property
    def at(self) -> tuple[str, Runs]:
        """(epoch, runs): where the shared elements are."""
        return self.epoch, self.runs


def wrap(inner: Typed, refs: Iterable[ListRef]) -> Typed:
    """A ref value for `inner` (serialized with each list cut to its tail)."""
    entries = [
        [list(r.path), r.channel, r.epoch, [list(run) for run in r.runs], r.tail]
        for r in refs
    ]
    return REF_TYPE, ormsgpack.packb([inner[0], inner[1], entries])


def unwrap(value: Typed) -> tuple[Typed, list[ListRef]]:
    """(the inner value, its refs) of a ref value; `CorruptDataError` when the
    stored payload is not one (damaged or forged)."""
    try:
        kind, data, entries = ormsgpack.unpackb(value[1])
        refs = [
            ListRef(
                tuple(path),
                channel,
                epoch,
                tuple((int(a), int(b)) for a, b in runs),
                int(tail),
            )
            for path, channel, epoch, runs, tail in entries
        ]
        if not (isinstance(kind, str) and isinstance(data, bytes)):
            raise ValueError("the inner value is not a (type, bytes) pair")
        if any(type(r.channel) is not str or type(r.epoch) is not str for r in refs):
            raise ValueError("a list reference names no channel or epoch")
    except (ValueError, TypeError) as exc:  # malformed payload: data, not a bug
        raise CorruptDataError(
            f"a stored list reference could not be decoded ({exc}): the store "
            "holds a damaged or forged value"
        ) from None
    return (kind, data), refs


def is_ref(value: object) -> bool:
    """True for a ref value."""
    return isinstance(value, tuple) and len(value) == 2 and value[0] == REF_TYPE


def uses(values: Iterable[Typed]) -> Iterator[tuple[str, str, Runs]]:
    """(channel, epoch, runs) of every log position the ref values point at."""
    for value in values:
        if is_ref(value):
            for ref in unwrap(value)[1]:
                yield ref.channel, ref.epoch, ref.runs


Remap = Callable[[str, str, Runs], tuple[str, Runs]]
"""(channel, epoch, runs) -> (new epoch, new runs) of the same elements."""


def remap(value: Typed, moved: Remap) -> Typed:
    """`value` with its refs pointing where `moved` says the elements went
    (other values unchanged)."""
    if not is_ref(value):
        return value
    inner, refs = unwrap(value)
    out = []
    for ref in refs:
        epoch, runs = moved(ref.channel, ref.epoch, ref.runs)
        out.append(ListRef(ref.path, ref.channel, epoch, runs, ref.tail))
    return wrap(inner, out)


__all__ = ["REF_TYPE", "ListRef", "Remap", "is_ref", "remap", "unwrap", "uses", "wrap"]
