"""Session tracking for graph runs (`ContextEngineSaver(track_sessions=True)`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata

from aiecs_checkpoint.engine import ContextEngine


class SessionTracker:
    """Keeps the engine session whose id is the thread id in step with runs."""

    def __init__(self, engine: ContextEngine, *, mirror_messages: bool) -> None:
        self.engine = engine
        self.mirror_messages = mirror_messages

    def on_put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
    ) -> None:
        raise NotImplementedError

    async def aon_put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
    ) -> None:
        raise NotImplementedError

    def on_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str
    ) -> None:
        raise NotImplementedError

    async def aon_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str
    ) -> None:
        raise NotImplementedError
