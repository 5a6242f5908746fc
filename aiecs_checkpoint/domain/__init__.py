"""Domain layer of the ContextEngine API: session/conversation models, TaskContext.

Pure Python, no storage: the engine persists these through their `to_dict` /
`from_dict` forms.
"""

from aiecs_checkpoint.domain.models import (
    AGENT_MESSAGE_KEY,
    MESSAGE_ROLES,
    PARTICIPANT_TYPES,
    SESSION_STATUSES,
    SESSION_TYPES,
    AgentCommunicationMessage,
    ConversationMessage,
    ConversationParticipant,
    ConversationSession,
    SessionMetrics,
    ensure_utc,
    parse_timestamp,
    utc_now,
)
from aiecs_checkpoint.domain.task_context import (
    ContextUpdate,
    FileOperation,
    ModelUsage,
    RecordStamp,
    TaskContext,
    build_context,
    history_file_name,
    task_context,
)

__all__ = [
    "AGENT_MESSAGE_KEY",
    "MESSAGE_ROLES",
    "PARTICIPANT_TYPES",
    "SESSION_STATUSES",
    "SESSION_TYPES",
    "AgentCommunicationMessage",
    "ContextUpdate",
    "ConversationMessage",
    "ConversationParticipant",
    "ConversationSession",
    "FileOperation",
    "ModelUsage",
    "RecordStamp",
    "SessionMetrics",
    "TaskContext",
    "build_context",
    "ensure_utc",
    "history_file_name",
    "parse_timestamp",
    "task_context",
    "utc_now",
]
