"""What the saver's parts share: the engine, the serializer and the caches.

`ContextEngineSaver` is a facade over parts with one job each (`reads`,
`writes`, `rewrites`, `recording`, `threads`). Each part writes its operations
once, as store operations the facade runs with the engine's sync or async
runner; they share one `SaverContext`, rebuilt when the serializer changes
(`with_allowlist`), so nothing decoded under one allowlist is handed out under
another.
"""

from __future__ import annotations

from dataclasses import dataclass

from langgraph.checkpoint.serde.base import SerializerProtocol

from aiecs_checkpoint.engine import ContextEngine
from aiecs_checkpoint.saver.cache import DecodeCache, ElementIndex
from aiecs_checkpoint.saver.codec import Decoder
from aiecs_checkpoint.tracking.records import RecordBuffer
from aiecs_checkpoint.tracking.sessions import SessionTracker


@dataclass(slots=True)
class SaverContext:
    """The state one saver's parts share."""

    engine: ContextEngine
    serde: SerializerProtocol
    index: ElementIndex
    cache: DecodeCache
    decoder: Decoder
    records: RecordBuffer
    sessions: SessionTracker | None

    @classmethod
    def new(
        cls,
        engine: ContextEngine,
        serde: SerializerProtocol,
        records: RecordBuffer,
        sessions: SessionTracker | None,
    ) -> SaverContext:
        """A context with empty caches for `serde`."""
        index, cache = ElementIndex(), DecodeCache()
        decoder = Decoder(serde, index, cache)
        return cls(engine, serde, index, cache, decoder, records, sessions)

    def reset_caches(self) -> None:
        """Drop everything this saver holds decoded or indexed (reads and puts
        stay exact, only slower until the caches fill again)."""
        self.index, self.cache = ElementIndex(), DecodeCache()
        self.decoder = Decoder(self.serde, self.index, self.cache)


__all__ = ["SaverContext"]
