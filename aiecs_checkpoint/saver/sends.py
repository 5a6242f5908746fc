"""`Send` arguments stored by reference to the lists they repeat.

LangGraph's prebuilt agent sends each tool call with the whole graph state,
so every `Send` would store every message again (in the task's writes and in
the `__pregel_tasks` channel). When a `Send`'s argument (a dict, possibly
nested) holds a list that starts with exactly the objects of a list channel
this saver stored (its written generation, or within a graph run the
generation the run read), the list is stored as a ref to those log positions
plus its new tail (`stores.refs`). Reading puts the list back together from
the element log: the copies come from the saver's cache, so a read costs the
same as reading the channel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.types import Send

from aiecs_checkpoint.stores import refs
from aiecs_checkpoint.stores.records import Runs

MIN_SHARED = 4
"""Lists shorter than this are stored inline (a ref would not save anything)."""

MAX_DEPTH = 3
"""How deep into nested dicts of a `Send` argument lists are looked for."""

Match = Callable[[list[Any]], tuple[str, str, Runs, int] | None]
"""list -> (channel, epoch, runs, shared length) of a stored prefix, if any."""


class MissingElements(LookupError):
    """A ref value points at log elements this process does not hold; fetch
    them (`store.log_items`) and decode again."""

    def __init__(self, key: tuple[str, str, str], epoch: str, runs: Runs) -> None:
        super().__init__(key, epoch, runs)
        self.key = key
        self.epoch = epoch
        self.runs = runs


def split(value: Any, match: Match) -> tuple[Any, list[refs.ListRef]]:
    """(the value with shared lists cut to their tails, the refs), or (value,
    []) when nothing is shared. Only `Send`s whose argument is a dict."""
    if type(value) is not Send or type(value.arg) is not dict:
        return value, []
    found: list[refs.ListRef] = []
    arg = _split_dict(value.arg, (), match, found)
    if not found:
        return value, []
    cut: Send = object.__new__(Send)
    for name in Send.__slots__:
        if hasattr(value, name):
            setattr(cut, name, getattr(value, name))
    cut.arg = arg
    return cut, found


def _split_dict(
    data: dict[str, Any],
    path: tuple[str, ...],
    match: Match,
    found: list[refs.ListRef],
) -> dict[str, Any]:
    out = data
    for key, item in data.items():
        if type(key) is not str:
            continue
        replaced: Any = item
        if type(item) is list and len(item) >= MIN_SHARED:
            hit = match(item)
            if hit is not None:
                channel, epoch, runs, shared = hit
                replaced = item[shared:]
                tail = len(replaced)
                found.append(refs.ListRef((*path, key), channel, epoch, runs, tail))
        elif type(item) is dict and len(path) < MAX_DEPTH:
            replaced = _split_dict(item, (*path, key), match, found)
        if replaced is not item:
            if out is data:
                out = dict(data)
            out[key] = replaced
    return out


def join(value: Any, parts: list[tuple[refs.ListRef, list[Any]]]) -> Any:
    """Put the shared lists back: each ref's elements, then its tail."""
    if not parts:
        return value
    arg = value.arg
    for ref, shared in parts:
        holder = arg
        for key in ref.path[:-1]:
            holder = holder[key]
        holder[ref.path[-1]] = shared + holder[ref.path[-1]]
    return value


__all__ = ["Match", "MissingElements", "join", "split"]
