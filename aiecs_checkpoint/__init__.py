"""aiecs_checkpoint: a LangGraph checkpointer and context engine in one storage.

from aiecs_checkpoint import ContextEngineSaver
graph = builder.compile(checkpointer=ContextEngineSaver())
"""

from aiecs_checkpoint.engine import ContextEngine
from aiecs_checkpoint.errors import (
    AiecsCheckpointError,
    InvalidConfigError,
    InvalidCursorError,
    InvalidExportError,
    InvalidNamespaceError,
    InvalidPruneStrategyError,
    InvalidThreadIdError,
    SerializationError,
    StoreError,
    SyncCallOnEventLoopError,
    TrackingError,
)
from aiecs_checkpoint.saver import ContextEngineSaver
from aiecs_checkpoint.saver.threads import ThreadInfo
from aiecs_checkpoint.tracking.callbacks import ModelUsageTracker
from aiecs_checkpoint.tracking.nodes import (
    add_context_update,
    aget_task_context,
    get_task_context,
    track_file_operation,
    track_model_usage,
)

__version__ = "0.1.0"

__all__ = [
    "AiecsCheckpointError",
    "ContextEngine",
    "ContextEngineSaver",
    "InvalidConfigError",
    "InvalidCursorError",
    "InvalidExportError",
    "InvalidNamespaceError",
    "InvalidPruneStrategyError",
    "InvalidThreadIdError",
    "ModelUsageTracker",
    "SerializationError",
    "StoreError",
    "SyncCallOnEventLoopError",
    "ThreadInfo",
    "TrackingError",
    "__version__",
    "add_context_update",
    "aget_task_context",
    "get_task_context",
    "track_file_operation",
    "track_model_usage",
]
