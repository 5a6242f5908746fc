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
from aiecs_checkpoint.saver.cache import SaverCache
from aiecs_checkpoint.saver.codec import Decoder
from aiecs_checkpoint.saver.elements import ElementCodec
from aiecs_checkpoint.saver.index import ThreadIndexKey
from aiecs_checkpoint.tracking.records import RecordBuffer
from aiecs_checkpoint.tracking.sessions import SessionTracker


@dataclass(slots=True)
class SaverContext:
    """The state one saver's parts share."""

    engine: ContextEngine
    serde: SerializerProtocol
    cache: SaverCache
    decoder: Decoder
    records: RecordBuffer
    sessions: SessionTracker | None
    index_key: ThreadIndexKey

    @classmethod
    def new(
        cls,
        engine: ContextEngine,
        serde: SerializerProtocol,
        records: RecordBuffer,
        sessions: SessionTracker | None,
        cache_bytes: int,
    ) -> SaverContext:
        """A context with an empty cache of `cache_bytes` for `serde`."""
        cache = SaverCache(ElementCodec(serde), cache_bytes)
        index_key = ThreadIndexKey(serde, engine.checkpoints)
        decoder = Decoder(serde, cache)
        return cls(engine, serde, cache, decoder, records, sessions, index_key)


__all__ = ["SaverContext"]
