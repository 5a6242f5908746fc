"""Checkpoint stores: the embedded memory store (default), Redis, ClickHouse."""

from aiecs_checkpoint.stores.memory import MemoryStore

__all__ = ["MemoryStore"]
