"""The storage engine shared by the saver and the domain APIs."""

from aiecs_checkpoint.engine.engine import ContextEngine
from aiecs_checkpoint.engine.singleton import (
    close_context_engine,
    get_context_engine,
    initialize_context_engine,
)

__all__ = [
    "ContextEngine",
    "close_context_engine",
    "get_context_engine",
    "initialize_context_engine",
]
