"""The saver's reads: get_tuple, list and the delta-channel history walk.

Each read is one store operation: validate the config (`codec`), ask the store,
decode with the saver's `Decoder`. Everything a read returns is the caller's
own: list elements are copied from what the cache keeps (`saver.elements`),
everything else is decoded afresh. On a store that skips held elements (Redis),
a read tells it which leading list elements this process holds decoded
(`SaverCache.held`), so the reply carries only what changed; if the cache
dropped some of them meanwhile (`OmittedElement`), that checkpoint is fetched
again whole, the only extra round trip.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    CheckpointTuple,
    DeltaChannelHistory,
)

from aiecs_checkpoint.errors import StoreError
from aiecs_checkpoint.saver.cache import OmittedElement
from aiecs_checkpoint.saver.checks import check_list_args
from aiecs_checkpoint.saver.codec import list_scope, matches, parse_config
from aiecs_checkpoint.saver.context import SaverContext
from aiecs_checkpoint.saver.sends import MissingElements
from aiecs_checkpoint.stores.ops import Emit, Op, Stream, advance
from aiecs_checkpoint.stores.records import Held, StoredTuple

T = TypeVar("T")

FETCHES = 4
"""Rounds of fetching elements ref values point at before giving up."""


class Reads:
    """get_tuple, list and get_delta_channel_history as store operations."""

    def __init__(self, ctx: SaverContext) -> None:
        self.ctx = ctx

    def _decoded(self, decode: Callable[[], T]) -> Op[T]:
        """`decode()`; when a ref value points at log elements this process does
        not keep (`saver.sends`), they are fetched and decoding is retried."""
        for _ in range(FETCHES):
            try:
                return decode()
            except MissingElements as missing:
                thread_id, ns, channel = missing.key
                store = self.ctx.engine.checkpoints
                items = yield from store.log_items(
                    thread_id, ns, channel, missing.epoch, missing.runs
                )
                load = functools.partial(self.ctx.decoder.load, thread_id, ns)
                self.ctx.cache.add_items(
                    missing.key, missing.epoch, missing.runs, items, load
                )
        try:
            return decode()
        except MissingElements as missing:
            raise StoreError(
                f"stored elements {missing.runs} of log {missing.epoch} of "
                f"{missing.key} are gone although a stored value points at them"
            ) from missing

    def get_tuple(self, config: RunnableConfig) -> Op[CheckpointTuple | None]:
        """The checkpoint named by the config, or the latest: O(1) either way."""
        t = parse_config(config)
        store = self.ctx.engine.checkpoints
        held = (
            self.ctx.cache.held(t.thread_id, t.checkpoint_ns)
            if store.skips_held
            else {}
        )
        if held:
            stored = yield from store.get(
                t.thread_id, t.checkpoint_ns, t.checkpoint_id, held
            )
            if stored is None:
                return None
            try:
                return (yield from self._tuple(stored))
            except OmittedElement:
                pass
        stored = yield from store.get(t.thread_id, t.checkpoint_ns, t.checkpoint_id)
        return (yield from self._tuple(stored)) if stored is not None else None

    def _tuple(self, stored: StoredTuple) -> Op[CheckpointTuple]:
        return (yield from self._decoded(lambda: self.ctx.decoder.tuple(stored)))

    def list(
        self,
        config: RunnableConfig | None,
        filter: Mapping[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Stream:
        """Emit checkpoints newest first (see `ContextEngineSaver.list`)."""
        before_id, limit = check_list_args(filter, before, limit)
        thread_id, ns, only_id = list_scope(config)
        if limit is not None and limit <= 0:
            return
        store = self.ctx.engine.checkpoints
        held = self._held_for(ns) if store.skips_held else None
        stream = store.list(thread_id, ns, before_id, held)
        remaining = limit
        try:
            while True:
                found, stored = yield from advance(stream)
                if not found:
                    return
                try:
                    accept = functools.partial(self._accept, stored, only_id, filter)
                    tup = yield from self._decoded(accept)
                except OmittedElement:
                    tup = yield from self._refetch(stored)
                if tup is None:
                    continue
                yield Emit(tup)
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return
        finally:
            stream.close()

    def _held_for(self, checkpoint_ns: str | None) -> Callable[[str], Held]:
        return lambda thread_id: self.ctx.cache.held(thread_id, checkpoint_ns)

    def _accept(
        self,
        stored: StoredTuple,
        only_id: str | None,
        filter: Mapping[str, Any] | None,
    ) -> CheckpointTuple | None:
        """The listed checkpoint as a tuple, None when filtered out.

        Raises `OmittedElement` when the store left out elements the cache has
        dropped since: the caller fetches that checkpoint whole (`_refetch`).
        """
        if only_id is not None and stored.row.checkpoint_id != only_id:
            return None
        metadata = self.ctx.decoder.metadata(stored)
        if not matches(metadata, filter):
            return None
        return self.ctx.decoder.tuple(stored, metadata)

    def _refetch(self, stored: StoredTuple) -> Op[CheckpointTuple | None]:
        """A listed checkpoint fetched again with every list element (None when
        it was deleted meanwhile)."""
        row = stored.row
        store = self.ctx.engine.checkpoints
        whole = yield from store.get(
            row.thread_id, row.checkpoint_ns, row.checkpoint_id
        )
        return self.ctx.decoder.tuple(whole) if whole is not None else None

    def delta_history(
        self, config: RunnableConfig, channels: Sequence[str]
    ) -> Op[Mapping[str, DeltaChannelHistory]]:
        """Seed and on-path writes per channel, from one walk inside the store."""
        if not channels:
            return {}
        t = parse_config(config)
        history = yield from self.ctx.engine.checkpoints.delta_history(
            t.thread_id, t.checkpoint_ns, t.checkpoint_id, channels
        )
        return (
            yield from self._decoded(
                lambda: self.ctx.decoder.delta_history(t, history, channels)
            )
        )


__all__ = ["Reads"]
