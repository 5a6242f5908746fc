"""Checkpoint stores: the embedded memory store (default), later Redis and ClickHouse."""

from aiecs_checkpoint.stores.memory import MemoryStore

__all__ = ["MemoryStore"]
