"""Session and conversation models of the ContextEngine domain API.

Every model validates its fields whenever they are set (construction and later
assignment), keeps datetimes timezone-aware in UTC (a naive datetime is taken
to be UTC), and round-trips losslessly: `Model.from_dict(m.to_dict()) == m`.
`to_dict` output is JSON-compatible apart from `metadata`, which is passed
through as given. Invalid values raise `ValueError` naming the field.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from aiecs_checkpoint.errors import InvalidRecordError

SESSION_STATUSES = frozenset({"active", "completed", "failed", "expired"})
MESSAGE_ROLES = frozenset({"user", "assistant", "system", "tool"})
PARTICIPANT_TYPES = frozenset({"user", "agent", "system", "master_controller"})
SESSION_TYPES = frozenset(
    {"user_to_agent", "agent_to_agent", "user_to_mc", "mc_to_agent"}
)

_SESSION_TYPE_NEEDS: Mapping[str, Mapping[str, int]] = {
    "user_to_agent": {"user": 1, "agent": 1},
    "agent_to_agent": {"agent": 2},
    "user_to_mc": {"user": 1, "master_controller": 1},
    "mc_to_agent": {"master_controller": 1, "agent": 1},
}
"""Participants each session type needs, as type -> minimum count."""

_ROLE_OF_SENDER: Mapping[str, str] = {
    "user": "user",
    "agent": "assistant",
    "master_controller": "assistant",
    "system": "system",
}
"""The conversation role an agent-communication sender speaks with."""

AGENT_MESSAGE_KEY = "agent_message"
"""Metadata key under which `to_conversation_message` keeps the envelope."""

_Check = Callable[[str, Any], Any]


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


def ensure_utc(value: Any, name: str) -> datetime:
    """`value` as an aware UTC datetime; naive datetimes are taken to be UTC."""
    if not isinstance(value, datetime):
        raise InvalidRecordError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError as exc:
        raise InvalidRecordError(f"{name} is out of range in UTC: {value!r}") from exc


def parse_timestamp(value: Any, name: str) -> datetime:
    """An aware UTC datetime from a datetime, an ISO 8601 string or epoch seconds.

    Strings may carry an offset (`+02:00`, `Z`) or none (then UTC); epoch seconds
    are accepted for data written by the original system.
    """
    if isinstance(value, datetime):
        return ensure_utc(value, name)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise InvalidRecordError(
                f"{name} must be an ISO 8601 datetime, got {value!r}"
            ) from exc
        return ensure_utc(parsed, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, timezone.utc)
        except (OverflowError, OSError, ValueError) as exc:
            raise InvalidRecordError(
                f"{name} is not a valid epoch time: {value!r}"
            ) from exc
    raise InvalidRecordError(
        f"{name} must be a datetime or ISO 8601 string, got {value!r}"
    )


def _utc(name: str, value: Any) -> datetime:
    return ensure_utc(value, name)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRecordError(f"{name} must be a string, got {value!r}")
    return value


def _nonempty(name: str, value: Any) -> str:
    if not _text(name, value):
        raise InvalidRecordError(f"{name} must be a non-empty string")
    return str(value)


def _optional_text(name: str, value: Any) -> str | None:
    return None if value is None else _text(name, value)


def _choice(choices: frozenset[str]) -> _Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise InvalidRecordError(
                f"{name} must be one of {sorted(choices)}, got {value!r}"
            )
        return value

    return check


def _optional_choice(choices: frozenset[str]) -> _Check:
    inner = _choice(choices)

    def check(name: str, value: Any) -> str | None:
        return None if value is None else inner(name, value)

    return check


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRecordError(
            f"{name} must be a non-negative integer, got {value!r}"
        )
    return value


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecordError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidRecordError(
            f"{name} must be finite and non-negative, got {value!r}"
        )
    return float(value)


def _metadata(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise InvalidRecordError(f"{name} must be a dict, got {value!r}")


def _field(data: Mapping[str, Any], key: str, model: str) -> Any:
    try:
        return data[key]
    except KeyError:
        raise InvalidRecordError(f"{model}.from_dict: missing field {key!r}") from None


def _mapping(data: Any, model: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidRecordError(f"{model}.from_dict needs a mapping, got {data!r}")
    return data


class _Checked:
    """Runs each field's check on every assignment, so a model is never invalid."""

    _CHECKS: ClassVar[Mapping[str, _Check]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        check = type(self)._CHECKS.get(name)
        object.__setattr__(self, name, value if check is None else check(name, value))


@dataclass
class SessionMetrics(_Checked):
    """A session's identity, status and counters (original fields plus metadata)."""

    session_id: str
    user_id: str
    created_at: datetime
    last_activity: datetime
    request_count: int = 0
    error_count: int = 0
    total_processing_time: float = 0.0
    status: str = "active"
    metadata: dict[str, Any] = field(default_factory=dict)

    _CHECKS: ClassVar[Mapping[str, _Check]] = {
        "session_id": _nonempty,
        "user_id": _text,
        "created_at": _utc,
        "last_activity": _utc,
        "request_count": _count,
        "error_count": _count,
        "total_processing_time": _seconds,
        "status": _choice(SESSION_STATUSES),
        "metadata": _metadata,
    }

    @classmethod
    def new(
        cls, session_id: str, user_id: str, metadata: Mapping[str, Any] | None = None
    ) -> SessionMetrics:
        """An active session created now, with zeroed counters."""
        now = utc_now()
        return cls(
            session_id=session_id,
            user_id=user_id,
            created_at=now,
            last_activity=now,
            metadata=dict(metadata or {}),
        )

    def touch(self, when: datetime | None = None) -> None:
        """Record activity now (or at `when`)."""
        self.last_activity = utc_now() if when is None else when

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict with ISO 8601 datetimes."""
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "created_at": self.created_at.isoformat(),
            "last_activity": self.last_activity.isoformat(),
            "request_count": self.request_count,
            "error_count": self.error_count,
            "total_processing_time": self.total_processing_time,
            "status": self.status,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionMetrics:
        """Inverse of `to_dict`; also reads the original's dicts (no metadata)."""
        d = _mapping(data, cls.__name__)
        return cls(
            session_id=_field(d, "session_id", cls.__name__),
            user_id=_field(d, "user_id", cls.__name__),
            created_at=parse_timestamp(
                _field(d, "created_at", cls.__name__), "created_at"
            ),
            last_activity=parse_timestamp(
                _field(d, "last_activity", cls.__name__), "last_activity"
            ),
            request_count=d.get("request_count", 0),
            error_count=d.get("error_count", 0),
            total_processing_time=d.get("total_processing_time", 0.0),
            status=d.get("status", "active"),
            metadata=_metadata("metadata", d.get("metadata")),
        )


@dataclass
class ConversationMessage(_Checked):
    """One message of a session's conversation history."""

    role: str
    content: str
    timestamp: datetime = field(default_factory=utc_now)
    metadata: dict[str, Any] = field(default_factory=dict)

    _CHECKS: ClassVar[Mapping[str, _Check]] = {
        "role": _choice(MESSAGE_ROLES),
        "content": _text,
        "timestamp": _utc,
        "metadata": _metadata,
    }

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict with an ISO 8601 timestamp."""
        return {
            "role": self.role,
            "content": self.content,
            "timestamp": self.timestamp.isoformat(),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConversationMessage:
        """Inverse of `to_dict`."""
        d = _mapping(data, cls.__name__)
        return cls(
            role=_field(d, "role", cls.__name__),
            content=_field(d, "content", cls.__name__),
            timestamp=parse_timestamp(
                _field(d, "timestamp", cls.__name__), "timestamp"
            ),
            metadata=_metadata("metadata", d.get("metadata")),
        )


@dataclass
class ConversationParticipant(_Checked):
    """A user, agent, system or master controller taking part in a session."""

    participant_id: str
    participant_type: str
    participant_role: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    _CHECKS: ClassVar[Mapping[str, _Check]] = {
        "participant_id": _nonempty,
        "participant_type": _choice(PARTICIPANT_TYPES),
        "participant_role": _optional_text,
        "metadata": _metadata,
    }

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        return {
            "participant_id": self.participant_id,
            "participant_type": self.participant_type,
            "participant_role": self.participant_role,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConversationParticipant:
        """Inverse of `to_dict`; also takes the short `id`/`type`/`role` keys."""
        d = _mapping(data, cls.__name__)
        pid = d["participant_id"] if "participant_id" in d else d.get("id")
        ptype = d["participant_type"] if "participant_type" in d else d.get("type")
        if pid is None:
            raise InvalidRecordError(
                f"{cls.__name__}.from_dict: missing field 'participant_id'"
            )
        if ptype is None:
            raise InvalidRecordError(
                f"{cls.__name__}.from_dict: missing field 'participant_type'"
            )
        role = d["participant_role"] if "participant_role" in d else d.get("role")
        return cls(
            participant_id=pid,
            participant_type=ptype,
            participant_role=role,
            metadata=_metadata("metadata", d.get("metadata")),
        )


def _participants(name: str, value: Any) -> list[ConversationParticipant]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise InvalidRecordError(
            f"{name} must be a list of participants, got {value!r}"
        )
    out: list[ConversationParticipant] = []
    for item in value:
        if isinstance(item, ConversationParticipant):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(ConversationParticipant.from_dict(item))
        else:
            raise InvalidRecordError(f"{name} must hold participants, got {item!r}")
    if not out:
        raise InvalidRecordError(f"{name} must not be empty")
    return out


@dataclass
class ConversationSession(_Checked):
    """An isolated conversation between participants, keyed by `session_key`."""

    session_id: str
    participants: list[ConversationParticipant]
    session_type: str
    created_at: datetime
    last_activity: datetime
    metadata: dict[str, Any] = field(default_factory=dict)

    _CHECKS: ClassVar[Mapping[str, _Check]] = {
        "session_id": _nonempty,
        "participants": _participants,
        "session_type": _choice(SESSION_TYPES),
        "created_at": _utc,
        "last_activity": _utc,
        "metadata": _metadata,
    }

    def __post_init__(self) -> None:
        counts: dict[str, int] = {}
        for p in self.participants:
            counts[p.participant_type] = counts.get(p.participant_type, 0) + 1
        needs = _SESSION_TYPE_NEEDS[self.session_type]
        missing = {t: n for t, n in needs.items() if counts.get(t, 0) < n}
        if missing:
            wanted = ", ".join(f"{n} {t}" for t, n in sorted(needs.items()))
            raise InvalidRecordError(
                f"participants of a {self.session_type} session must include "
                f"at least {wanted}, got types {sorted(counts)}"
            )

    @classmethod
    def new(
        cls,
        session_id: str,
        participants: Sequence[ConversationParticipant | Mapping[str, Any]],
        session_type: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> ConversationSession:
        """A session created now; participants may be given as dicts.

        Dicts take the long keys or the short `id`/`type`/`role` ones.
        """
        now = utc_now()
        return cls(
            session_id=session_id,
            participants=_participants("participants", participants),
            session_type=session_type,
            created_at=now,
            last_activity=now,
            metadata=dict(metadata or {}),
        )

    @property
    def session_key(self) -> str:
        """The key isolating this conversation: `f"{session_id}_{session_type}"`."""
        return f"{self.session_id}_{self.session_type}"

    def generate_session_key(self) -> str:
        """Same as `session_key` (the original's method name)."""
        return self.session_key

    def get_participant(
        self, participant_type: str, participant_role: str | None = None
    ) -> ConversationParticipant | None:
        """The first participant of that type (and role, if given), else None."""
        for p in self.participants:
            if p.participant_type == participant_type and (
                participant_role is None or p.participant_role == participant_role
            ):
                return p
        return None

    def touch(self, when: datetime | None = None) -> None:
        """Record activity now (or at `when`)."""
        self.last_activity = utc_now() if when is None else when

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict with ISO 8601 datetimes and participant dicts."""
        return {
            "session_id": self.session_id,
            "participants": [p.to_dict() for p in self.participants],
            "session_type": self.session_type,
            "created_at": self.created_at.isoformat(),
            "last_activity": self.last_activity.isoformat(),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConversationSession:
        """Inverse of `to_dict`."""
        d = _mapping(data, cls.__name__)
        name = cls.__name__
        return cls(
            session_id=_field(d, "session_id", name),
            participants=_field(d, "participants", name),
            session_type=_field(d, "session_type", name),
            created_at=parse_timestamp(_field(d, "created_at", name), "created_at"),
            last_activity=parse_timestamp(
                _field(d, "last_activity", name), "last_activity"
            ),
            metadata=_metadata("metadata", d.get("metadata")),
        )


@dataclass(kw_only=True)
class AgentCommunicationMessage(_Checked):
    """A message sent within a conversation session (agent, user or controller)."""

    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    session_key: str
    sender_id: str
    sender_type: str
    sender_role: str | None = None
    recipient_id: str | None = None
    recipient_type: str | None = None
    recipient_role: str | None = None
    content: str
    message_type: str = "communication"
    timestamp: datetime = field(default_factory=utc_now)
    metadata: dict[str, Any] = field(default_factory=dict)

    _CHECKS: ClassVar[Mapping[str, _Check]] = {
        "message_id": _nonempty,
        "session_key": _nonempty,
        "sender_id": _nonempty,
        "sender_type": _choice(PARTICIPANT_TYPES),
        "sender_role": _optional_text,
        "recipient_id": _optional_text,
        "recipient_type": _optional_choice(PARTICIPANT_TYPES),
        "recipient_role": _optional_text,
        "content": _text,
        "message_type": _nonempty,
        "timestamp": _utc,
        "metadata": _metadata,
    }

    def _envelope(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "session_key": self.session_key,
            "sender_id": self.sender_id,
            "sender_type": self.sender_type,
            "sender_role": self.sender_role,
            "recipient_id": self.recipient_id,
            "recipient_type": self.recipient_type,
            "recipient_role": self.recipient_role,
            "message_type": self.message_type,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict with an ISO 8601 timestamp."""
        return {
            **self._envelope(),
            "content": self.content,
            "timestamp": self.timestamp.isoformat(),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentCommunicationMessage:
        """Inverse of `to_dict`."""
        d = _mapping(data, cls.__name__)
        name = cls.__name__
        return cls(
            message_id=_field(d, "message_id", name),
            session_key=_field(d, "session_key", name),
            sender_id=_field(d, "sender_id", name),
            sender_type=_field(d, "sender_type", name),
            sender_role=d.get("sender_role"),
            recipient_id=d.get("recipient_id"),
            recipient_type=d.get("recipient_type"),
            recipient_role=d.get("recipient_role"),
            content=_field(d, "content", name),
            message_type=d.get("message_type", "communication"),
            timestamp=parse_timestamp(_field(d, "timestamp", name), "timestamp"),
            metadata=_metadata("metadata", d.get("metadata")),
        )

    def to_conversation_message(self) -> ConversationMessage:
        """This message as a conversation-history entry.

        The role follows the sender type (agent and master controller speak as
        "assistant"); the envelope (ids, types, roles, message type) is kept in
        metadata under `AGENT_MESSAGE_KEY`, so `from_conversation_message`
        rebuilds the message exactly.
        """
        return ConversationMessage(
            role=_ROLE_OF_SENDER[self.sender_type],
            content=self.content,
            timestamp=self.timestamp,
            metadata={**self.metadata, AGENT_MESSAGE_KEY: self._envelope()},
        )

    @classmethod
    def from_conversation_message(
        cls, message: ConversationMessage
    ) -> AgentCommunicationMessage:
        """Inverse of `to_conversation_message`."""
        metadata = dict(message.metadata)
        envelope = metadata.pop(AGENT_MESSAGE_KEY, None)
        if not isinstance(envelope, Mapping):
            raise InvalidRecordError(
                f"metadata has no {AGENT_MESSAGE_KEY!r} envelope: not an agent message"
            )
        return cls.from_dict(
            {
                **envelope,
                "content": message.content,
                "timestamp": message.timestamp,
                "metadata": metadata,
            }
        )


__all__ = [
    "AGENT_MESSAGE_KEY",
    "MESSAGE_ROLES",
    "PARTICIPANT_TYPES",
    "SESSION_STATUSES",
    "SESSION_TYPES",
    "AgentCommunicationMessage",
    "ConversationMessage",
    "ConversationParticipant",
    "ConversationSession",
    "SessionMetrics",
    "ensure_utc",
    "parse_timestamp",
    "utc_now",
]
