"""aiecs_checkpoint: a LangGraph checkpointer and context engine in one storage.

from aiecs_checkpoint import ContextEngineSaver
graph = builder.compile(checkpointer=ContextEngineSaver())
"""

from aiecs_checkpoint._version import __version__
from aiecs_checkpoint.domain import (
    AgentCommunicationMessage,
    ContextUpdate,
    ConversationMessage,
    ConversationParticipant,
    ConversationSession,
    SessionMetrics,
    TaskContext,
    build_context,
    task_context,
)
from aiecs_checkpoint.engine import (
    ContextEngine,
    close_context_engine,
    get_context_engine,
    initialize_context_engine,
)
from aiecs_checkpoint.errors import (
    AiecsCheckpointError,
    InvalidConfigError,
    InvalidCursorError,
    InvalidExportError,
    InvalidNamespaceError,
    InvalidPruneStrategyError,
    InvalidRecordError,
    InvalidThreadIdError,
    SerializationError,
    StoreError,
    TrackingError,
)
from aiecs_checkpoint.saver import ContextEngineSaver
from aiecs_checkpoint.saver.threads import ThreadInfo
from aiecs_checkpoint.tracking.callbacks import ModelUsageTracker
from aiecs_checkpoint.tracking.nodes import (
    acurrent_task_context,
    add_context_update,
    aget_task_context,
    current_task_context,
    get_task_context,
    optional_tracking,
    track_file_operation,
    track_model_usage,
)

__all__ = [
    "AgentCommunicationMessage",
    "AiecsCheckpointError",
    "ContextEngine",
    "ContextEngineSaver",
    "ContextUpdate",
    "ConversationMessage",
    "ConversationParticipant",
    "ConversationSession",
    "InvalidConfigError",
    "InvalidCursorError",
    "InvalidExportError",
    "InvalidNamespaceError",
    "InvalidPruneStrategyError",
    "InvalidRecordError",
    "InvalidThreadIdError",
    "ModelUsageTracker",
    "SerializationError",
    "SessionMetrics",
    "StoreError",
    "TaskContext",
    "ThreadInfo",
    "TrackingError",
    "__version__",
    "acurrent_task_context",
    "add_context_update",
    "aget_task_context",
    "build_context",
    "close_context_engine",
    "current_task_context",
    "get_context_engine",
    "get_task_context",
    "initialize_context_engine",
    "optional_tracking",
    "task_context",
    "track_file_operation",
    "track_model_usage",
]
