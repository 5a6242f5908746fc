"""ContextEngine: the one storage engine behind the saver and the domain APIs.

The engine owns the stores. Today that is the embedded in-process memory store
(no server, no configuration); the Redis hot store and the ClickHouse archive
plug in here, so the saver and the session/conversation/task-context APIs see
one storage whatever the deployment.
"""

from __future__ import annotations

from typing import Any

from aiecs_checkpoint.stores.base import (
    AsyncCheckpointStore,
    CheckpointStore,
    InProcessAsync,
)
from aiecs_checkpoint.stores.memory import MemoryStore


class ContextEngine:
    """Owns the checkpoint store shared by `ContextEngineSaver` and the domain APIs."""

    def __init__(self, *, store: CheckpointStore | None = None) -> None:
        self.checkpoints: CheckpointStore = (
            store if store is not None else MemoryStore()
        )
        self.acheckpoints: AsyncCheckpointStore = InProcessAsync(self.checkpoints)

    @property
    def storage_backend(self) -> str:
        """Name of the hot store: "memory" for the embedded default."""
        return self.checkpoints.backend

    async def initialize(self) -> bool:
        """Prepare the stores (the memory store needs nothing); True when ready."""
        return True

    async def close(self) -> None:
        """Release the stores' resources; the memory store holds none."""

    def get_metrics_snapshot(self) -> dict[str, Any]:
        """Counts read from the store itself (not from this process's counters)."""
        return {
            "storage_backend": self.storage_backend,
            "total_checkpoints": self.checkpoints.count_checkpoints(),
        }
