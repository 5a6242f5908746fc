"""The saver's thread listing (`list_threads` / `alist_threads`).

Threads come newest activity first: by (time of the thread's last checkpoint
write, ms; thread id), both descending. Every store keeps that order as an
index (memory: a sorted list; Redis: the `P:threads` registry; the archive: its
`context_threads` table), so a page costs the threads it visits, each read as
its latest checkpoint in one batched call, never a scan of checkpoints.

A filter with an indexed pair (`saver.index`: `user_id` and the other scalar
metadata keys but `step` and `source`) walks the store's thread index instead:
the threads whose latest checkpoint has that (key, value), in the same order,
each then checked against the whole filter. Such a page costs the threads it
lists (plus those indexed under another key, normally none), so a filter that
matches nothing costs one index lookup, whatever the number of threads. Other
filters visit every thread, a batch at a time.

Paging is keyset paging on that order: `before` (the last `ThreadInfo` of the
previous page, or its `cursor`) continues strictly below that thread's place.
While threads are written during a walk, a walk never lists a thread twice
and lists every thread not written during it exactly once. A thread written
during the walk moves to the top: it is listed at its old place if the walk
got there first, else not at all by this walk (a walk from the top shows it
first). Threads created during the walk are likewise left to the next one.
With the archive, a thread moving between tiers during a walk (restored into
the hot store, or expired from it) keeps its place only to within about a
millisecond, so at a page boundary it may be listed twice or missed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from langchain_core.runnables import RunnableConfig

from aiecs_checkpoint.errors import InvalidConfigError, InvalidCursorError
from aiecs_checkpoint.saver.codec import Decoder, check_thread_id, config_for, matches
from aiecs_checkpoint.saver.context import SaverContext
from aiecs_checkpoint.saver.index import index_query
from aiecs_checkpoint.stores.ops import Op
from aiecs_checkpoint.stores.records import CheckpointRow, IndexQuery, StoredTuple

Key = tuple[int, str]
"""A thread's place in the listing: (activity ms, thread id)."""

MAX_BATCH = 500
"""Most threads visited per store call."""

MIN_FILTERED_BATCH = 64
"""Threads visited by the first store call of a filtered page without an index
(then doubling); an indexed page asks for the threads it still needs first."""

_CURSOR_PREFIX = "t1."


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """One thread of a `list_threads` page, as of its latest checkpoint.

    `checkpoint_id`, `created_at` (its `ts`, UTC), `step` and `metadata` describe
    the thread's latest checkpoint of the root namespace (of any namespace if it
    has only subgraph ones); `config` points at it. `updated_at` is the thread's
    activity time (its place in the order); pass the `ThreadInfo` or `cursor` as
    `before` to get the next page.
    """

    thread_id: str
    checkpoint_id: str
    checkpoint_ns: str
    created_at: datetime
    step: int | None
    metadata: dict[str, Any]
    config: RunnableConfig
    updated_at: datetime
    cursor: str


def encode_cursor(key: Key) -> str:
    """An opaque cursor for a place in the listing."""
    raw = json.dumps([key[0], key[1]], ensure_ascii=False).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    """The place a cursor names, or `InvalidCursorError`."""
    if not cursor.startswith(_CURSOR_PREFIX):
        raise InvalidCursorError(
            f"before={cursor!r} is not a list_threads cursor "
            "(pass a ThreadInfo or its .cursor)"
        )
    body = cursor[len(_CURSOR_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        value = json.loads(raw.decode())
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursorError(f"before={cursor!r} is malformed: {exc}") from exc
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and type(value[0]) is int
        and value[0] >= 0
        and isinstance(value[1], str)
        and value[1] != ""
    )
    if not ok:
        raise InvalidCursorError(f"before={cursor!r} is malformed")
    return value[0], check_thread_id(value[1])


def _check_args(
    filter: object, limit: object, before: object
) -> tuple[dict[str, Any] | None, int, Key | None]:
    if filter is not None and (
        not isinstance(filter, Mapping) or not all(isinstance(k, str) for k in filter)
    ):
        raise InvalidConfigError(
            f"filter must be a dict of metadata key -> value, got {filter!r}"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidConfigError(f"limit must be a positive int, got {limit!r}")
    if before is None:
        key = None
    elif isinstance(before, ThreadInfo):
        key = decode_cursor(before.cursor)
    elif isinstance(before, str):
        key = decode_cursor(before)
    else:
        raise InvalidCursorError(
            f"before must be a ThreadInfo, its cursor (str) or None, got {before!r}"
        )
    return (dict(filter) if filter else None), limit, key


def _utc_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


class _Walk:
    """One `list_threads` call: asks the store for threads until the page is
    full."""

    def __init__(
        self,
        decoder: Decoder,
        filter: dict[str, Any] | None,
        limit: int,
        before: Key | None,
        query: IndexQuery | None = None,
    ) -> None:
        self.decoder = decoder
        self.filter = filter
        self.limit = limit
        self.key = before
        self.query = query
        self.done = False
        self.batch = 0 if query is not None else MIN_FILTERED_BATCH
        self.page: list[ThreadInfo] = []

    def request(self) -> tuple[Key | None, int, IndexQuery | None] | None:
        """(after, how many threads to visit, the index query) for the next
        store call, or None."""
        if self.done or len(self.page) >= self.limit:
            return None
        wanted = self.limit - len(self.page)
        if self.filter:
            wanted = max(wanted, self.batch)
            self.batch = max(2 * self.batch, MIN_FILTERED_BATCH)
        return self.key, min(wanted, MAX_BATCH), self.query

    def feed(
        self, heads: Sequence[tuple[int, CheckpointRow]], resume: Key | None
    ) -> None:
        """Take what a store call returned."""
        for ms, row in heads:
            info = self.accept(ms, row)
            if info is not None:
                self.page.append(info)
                if len(self.page) >= self.limit:
                    return
        if resume is None or (self.key is not None and not resume < self.key):
            self.done = True
        self.key = resume

    def accept(self, ms: int, row: CheckpointRow) -> ThreadInfo | None:
        stored = StoredTuple(row=row, values={}, writes=())
        metadata = self.decoder.metadata(stored)
        if not matches(metadata, self.filter):
            return None
        step = metadata.get("step")
        updated_at = _utc_ms(ms)
        return ThreadInfo(
            thread_id=row.thread_id,
            checkpoint_id=row.checkpoint_id,
            checkpoint_ns=row.checkpoint_ns,
            created_at=self.created_at(row) or updated_at,
            step=step if type(step) is int else None,
            metadata=dict(metadata),
            config=config_for(row.thread_id, row.checkpoint_ns, row.checkpoint_id),
            updated_at=updated_at,
            cursor=encode_cursor((ms, row.thread_id)),
        )

    def created_at(self, row: CheckpointRow) -> datetime | None:
        """The checkpoint's `ts` as an aware UTC datetime (None if unreadable)."""
        record = self.decoder.serde.loads_typed(row.checkpoint)
        ts = record.get("ts") if isinstance(record, Mapping) else None
        if not isinstance(ts, str):
            return None
        try:
            at = datetime.fromisoformat(ts)
        except ValueError:
            return None
        if at.tzinfo is None:
            return at.replace(tzinfo=timezone.utc)
        return at.astimezone(timezone.utc)


class ThreadListing:
    """Paged thread listing as one store operation."""

    def __init__(self, ctx: SaverContext) -> None:
        self.ctx = ctx

    def page(
        self, filter: object, limit: object, before: object
    ) -> Op[list[ThreadInfo]]:
        """A page of threads (see `ContextEngineSaver.list_threads`)."""
        checked, n, key = _check_args(filter, limit, before)
        query = None
        if checked:
            query = index_query((yield from self.ctx.index_key.get()), checked)
        walk = _Walk(self.ctx.decoder, checked, n, key, query)
        store = self.ctx.engine.checkpoints
        while (asked := walk.request()) is not None:
            heads, resume = yield from store.thread_heads(*asked)
            walk.feed(heads, resume)
        return walk.page


__all__ = ["ThreadInfo", "ThreadListing"]
