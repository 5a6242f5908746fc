"""aiecs_checkpoint: a LangGraph checkpointer and context engine in one storage.

from aiecs_checkpoint import ContextEngineSaver
graph = builder.compile(checkpointer=ContextEngineSaver())
"""

from aiecs_checkpoint.engine import ContextEngine
from aiecs_checkpoint.errors import (
    AiecsCheckpointError,
    InvalidConfigError,
    InvalidNamespaceError,
    InvalidPruneStrategyError,
    InvalidThreadIdError,
    SerializationError,
    StoreError,
    SyncCallOnEventLoopError,
)
from aiecs_checkpoint.saver import ContextEngineSaver

__version__ = "0.1.0"

__all__ = [
    "AiecsCheckpointError",
    "ContextEngine",
    "ContextEngineSaver",
    "InvalidConfigError",
    "InvalidNamespaceError",
    "InvalidPruneStrategyError",
    "InvalidThreadIdError",
    "SerializationError",
    "StoreError",
    "SyncCallOnEventLoopError",
    "__version__",
]
