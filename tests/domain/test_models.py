"""Session and conversation models: validation, UTC datetimes, lossless round trips."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiecs_checkpoint.domain import (
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
)

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)

# -- strategies ------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
metadata = st.dictionaries(st.text(max_size=8), json_value, max_size=4)
ids = st.text(min_size=1, max_size=20)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
datetimes = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)
).flatmap(lambda d: st.one_of(st.just(d), offsets.map(lambda tz: d.replace(tzinfo=tz))))
"""Naive and aware (any offset) datetimes."""

session_metrics = st.builds(
    SessionMetrics,
    session_id=ids,
    user_id=st.text(max_size=20),
    created_at=datetimes,
    last_activity=datetimes,
    request_count=st.integers(0, 10**9),
    error_count=st.integers(0, 10**9),
    total_processing_time=st.floats(0, 1e9, allow_nan=False),
    status=st.sampled_from(sorted(SESSION_STATUSES)),
    metadata=metadata,
)
messages = st.builds(
    ConversationMessage,
    role=st.sampled_from(sorted(MESSAGE_ROLES)),
    content=st.text(),
    timestamp=datetimes,
    metadata=metadata,
)
participants = st.builds(
    ConversationParticipant,
    participant_id=ids,
    participant_type=st.sampled_from(sorted(PARTICIPANT_TYPES)),
    participant_role=st.none() | st.text(max_size=10),
    metadata=metadata,
)


def _participant(ptype: str) -> st.SearchStrategy[ConversationParticipant]:
    return st.builds(
        ConversationParticipant,
        participant_id=ids,
        participant_type=st.just(ptype),
        participant_role=st.none() | st.text(max_size=10),
        metadata=metadata,
    )


_REQUIRED = {
    "user_to_agent": ["user", "agent"],
    "agent_to_agent": ["agent", "agent"],
    "user_to_mc": ["user", "master_controller"],
    "mc_to_agent": ["master_controller", "agent"],
}


@st.composite
def sessions(draw: st.DrawFn) -> ConversationSession:
    kind = draw(st.sampled_from(sorted(SESSION_TYPES)))
    members = [draw(_participant(t)) for t in _REQUIRED[kind]]
    members += draw(st.lists(participants, max_size=3))
    order = draw(st.permutations(members))
    return ConversationSession(
        session_id=draw(ids),
        participants=list(order),
        session_type=kind,
        created_at=draw(datetimes),
        last_activity=draw(datetimes),
        metadata=draw(metadata),
    )


agent_messages = st.builds(
    AgentCommunicationMessage,
    message_id=ids,
    session_key=ids,
    sender_id=ids,
    sender_type=st.sampled_from(sorted(PARTICIPANT_TYPES)),
    sender_role=st.none() | st.text(max_size=10),
    recipient_id=st.none() | ids,
    recipient_type=st.none() | st.sampled_from(sorted(PARTICIPANT_TYPES)),
    recipient_role=st.none() | st.text(max_size=10),
    content=st.text(),
    message_type=ids,
    timestamp=datetimes,
    metadata=metadata,
)

ALL_MODELS = st.one_of(
    session_metrics, messages, participants, sessions(), agent_messages
)


# -- round trips -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(ALL_MODELS)
def test_from_dict_of_to_dict_equals_the_original(model: Any) -> None:
    assert type(model).from_dict(model.to_dict()) == model


@settings(max_examples=200, deadline=None)
@given(ALL_MODELS)
def test_to_dict_survives_json_and_reads_back_equal(model: Any) -> None:
    text = json.dumps(model.to_dict())
    assert type(model).from_dict(json.loads(text)) == model


@settings(max_examples=100, deadline=None)
@given(st.one_of(session_metrics, messages, sessions(), agent_messages))
def test_every_datetime_of_a_model_is_aware_utc(model: Any) -> None:
    stamps = [v for v in vars(model).values() if isinstance(v, datetime)]
    assert stamps
    assert all(s.tzinfo is UTC for s in stamps)


def test_to_dict_datetimes_are_isoformat_strings_with_utc_offset() -> None:
    s = SessionMetrics("s", "u", T0, T0 + timedelta(seconds=1))
    d = s.to_dict()
    assert d["created_at"] == "2024-05-01T12:30:15.123456+00:00"
    assert d["last_activity"] == "2024-05-01T12:30:16.123456+00:00"


def test_session_metrics_to_dict_keys() -> None:
    d = SessionMetrics.new("s", "u", {"source": "web"}).to_dict()
    assert set(d) == {
        "session_id",
        "user_id",
        "created_at",
        "last_activity",
        "request_count",
        "error_count",
        "total_processing_time",
        "status",
        "metadata",
    }
    assert d["metadata"] == {"source": "web"}


def test_metadata_is_passed_through_as_is_even_when_not_json() -> None:
    payload = {"raw": b"\x00\xff", "when": T0, "nested": {"set": {1, 2}}}
    m = ConversationMessage("user", "hi", T0, payload)
    d = m.to_dict()
    assert d["metadata"] == payload
    assert d["metadata"]["raw"] is payload["raw"]
    assert ConversationMessage.from_dict(d) == m


# -- datetimes -------------------------------------------------------------------------


def test_naive_datetime_is_taken_as_utc() -> None:
    naive = datetime(2024, 1, 2, 3, 4, 5)
    m = ConversationMessage("user", "x", naive)
    assert m.timestamp == naive.replace(tzinfo=UTC)
    assert m.timestamp.tzinfo is UTC


def test_aware_datetime_is_converted_to_utc_keeping_the_instant() -> None:
    paris = timezone(timedelta(hours=2))
    local = datetime(2024, 1, 2, 14, 0, tzinfo=paris)
    m = ConversationMessage("user", "x", local)
    assert m.timestamp.tzinfo is UTC
    assert m.timestamp.hour == 12
    assert m.timestamp == local


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01T12:30:15.123456",
        "2024-05-01T12:30:15.123456+00:00",
        "2024-05-01T12:30:15.123456Z",
        "2024-05-01T14:30:15.123456+02:00",
        "2024-05-01T07:30:15.123456-05:00",
    ],
)
def test_from_dict_accepts_isoformat_with_or_without_offset(text: str) -> None:
    m = ConversationMessage.from_dict(
        {"role": "user", "content": "x", "timestamp": text}
    )
    assert m.timestamp == T0
    assert m.timestamp.tzinfo is UTC


def test_from_dict_rejects_a_malformed_timestamp_naming_the_field() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        ConversationMessage.from_dict(
            {"role": "user", "content": "x", "timestamp": "yesterday"}
        )


def test_original_session_dict_without_metadata_reads_with_naive_times_as_utc() -> None:
    original = {
        "session_id": "user_123_session_001",
        "user_id": "user_123",
        "created_at": "2024-05-01T12:30:15.123456",
        "last_activity": "2024-05-01T12:30:15.123456",
        "request_count": 3,
        "error_count": 1,
        "total_processing_time": 1.5,
        "status": "active",
    }
    s = SessionMetrics.from_dict(original)
    assert s.created_at == T0
    assert s.metadata == {}
    assert s.request_count == 3


def test_assigning_a_naive_datetime_later_still_stores_utc() -> None:
    s = SessionMetrics.new("s", "u")
    s.last_activity = datetime(2030, 1, 1)
    assert s.last_activity == datetime(2030, 1, 1, tzinfo=UTC)


def test_touch_moves_last_activity_forward() -> None:
    s = SessionMetrics("s", "u", T0, T0)
    s.touch()
    assert s.last_activity > T0
    assert s.last_activity.tzinfo is UTC


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ConversationMessage("robot", "x", T0), "role"),
        (
            lambda: ConversationMessage("user", 42, T0),  # type: ignore[arg-type]
            "content",
        ),
        (
            lambda: ConversationMessage("user", "x", "2024-01-01"),  # type: ignore[arg-type]
            "timestamp",
        ),
        (lambda: ConversationParticipant("p", "alien"), "participant_type"),
        (lambda: ConversationParticipant("", "user"), "participant_id"),
        (lambda: SessionMetrics("s", "u", T0, T0, status="paused"), "status"),
        (lambda: SessionMetrics("s", "u", T0, T0, request_count=-1), "request_count"),
        (lambda: SessionMetrics("s", "u", T0, T0, error_count=True), "error_count"),
        (
            lambda: SessionMetrics(
                "s", "u", T0, T0, total_processing_time=float("nan")
            ),
            "total_processing_time",
        ),
        (lambda: SessionMetrics("", "u", T0, T0), "session_id"),
        (
            lambda: SessionMetrics("s", "u", T0, T0, metadata=[1]),  # type: ignore[arg-type]
            "metadata",
        ),
        (
            lambda: AgentCommunicationMessage(
                session_key="k", sender_id="a", sender_type="bot", content="x"
            ),
            "sender_type",
        ),
        (
            lambda: AgentCommunicationMessage(
                session_key="k",
                sender_id="a",
                sender_type="agent",
                recipient_type="bot",
                content="x",
            ),
            "recipient_type",
        ),
        (
            lambda: AgentCommunicationMessage(
                session_key="", sender_id="a", sender_type="agent", content="x"
            ),
            "session_key",
        ),
    ],
)
def test_invalid_field_raises_value_error_naming_the_field(
    build: Any, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        build()


def test_assignment_is_validated_like_construction() -> None:
    s = SessionMetrics.new("s", "u")
    with pytest.raises(ValueError, match="status"):
        s.status = "paused"
    assert s.status == "active"
    s.status = "completed"
    assert s.status == "completed"


def test_from_dict_names_a_missing_field() -> None:
    with pytest.raises(ValueError, match="user_id"):
        SessionMetrics.from_dict(
            {
                "session_id": "s",
                "created_at": T0.isoformat(),
                "last_activity": T0.isoformat(),
            }
        )


def test_from_dict_rejects_a_non_mapping() -> None:
    with pytest.raises(ValueError, match="mapping"):
        ConversationMessage.from_dict(["user", "x"])  # type: ignore[arg-type]


def test_processing_time_given_as_int_is_stored_as_float() -> None:
    s = SessionMetrics("s", "u", T0, T0, total_processing_time=3)
    assert isinstance(s.total_processing_time, float)


# -- conversation sessions -------------------------------------------------------------


SEED_PARTICIPANTS: list[dict[str, Any]] = [
    {"id": "user_123", "type": "user", "role": "user"},
    {"id": "agent_001", "type": "agent", "role": "assistant", "metadata": {}},
]


def test_participants_given_as_seed_style_short_dicts_are_accepted() -> None:
    session = ConversationSession.new(
        "session_001", SEED_PARTICIPANTS, "user_to_agent", {"priority": "high"}
    )
    assert session.participants == [
        ConversationParticipant("user_123", "user", "user"),
        ConversationParticipant("agent_001", "agent", "assistant"),
    ]
    assert session.created_at == session.last_activity
    assert session.metadata == {"priority": "high"}


def test_session_key_is_session_id_and_type() -> None:
    session = ConversationSession.new("session_001", SEED_PARTICIPANTS, "user_to_agent")
    assert session.session_key == "session_001_user_to_agent"
    assert session.generate_session_key() == session.session_key


def _session_of(session_id: str, kind: str) -> ConversationSession:
    members = [
        ConversationParticipant(f"p{i}", t) for i, t in enumerate(_REQUIRED[kind])
    ]
    return ConversationSession.new(session_id, members, kind)


@settings(max_examples=200, deadline=None)
@given(
    ids,
    st.sampled_from(sorted(SESSION_TYPES)),
    ids,
    st.sampled_from(sorted(SESSION_TYPES)),
)
def test_distinct_session_id_and_type_pairs_get_distinct_keys(
    id_a: str, type_a: str, id_b: str, type_b: str
) -> None:
    a = _session_of(id_a, type_a).session_key
    b = _session_of(id_b, type_b).session_key
    assert (a == b) == ((id_a, type_a) == (id_b, type_b))


def test_session_key_of_an_id_ending_like_a_type_does_not_collide() -> None:
    tricky = _session_of("s_user", "mc_to_agent").session_key
    assert tricky != _session_of("s", "user_to_agent").session_key


def test_unknown_session_type_raises_naming_session_type() -> None:
    with pytest.raises(ValueError, match="session_type"):
        ConversationSession.new("s", SEED_PARTICIPANTS, "user_to_user")


@pytest.mark.parametrize(
    ("kind", "types"),
    [
        ("user_to_agent", ["user", "user"]),
        ("agent_to_agent", ["agent", "user"]),
        ("user_to_mc", ["user", "agent"]),
        ("mc_to_agent", ["master_controller", "user"]),
    ],
)
def test_participants_must_fit_the_session_type(kind: str, types: list[str]) -> None:
    members = [ConversationParticipant(f"p{i}", t) for i, t in enumerate(types)]
    with pytest.raises(ValueError, match=kind):
        ConversationSession.new("s", members, kind)


def test_empty_participant_list_is_rejected() -> None:
    with pytest.raises(ValueError, match="participants"):
        ConversationSession("s", [], "user_to_agent", T0, T0)


def test_get_participant_by_type_and_role() -> None:
    members: list[dict[str, Any]] = [
        {"id": "u", "type": "user"},
        {"id": "a1", "type": "agent", "role": "writer"},
        {"id": "a2", "type": "agent", "role": "researcher"},
    ]
    session = ConversationSession.new("s", members, "agent_to_agent")
    found = session.get_participant("agent", "researcher")
    assert found is not None and found.participant_id == "a2"
    first = session.get_participant("agent")
    assert first is not None and first.participant_id == "a1"
    assert session.get_participant("system") is None


# -- agent communication messages ------------------------------------------------------


def test_agent_message_defaults_a_fresh_uuid4_id_and_aware_timestamp() -> None:
    a = AgentCommunicationMessage(
        session_key="k", sender_id="a", sender_type="agent", content="x"
    )
    b = AgentCommunicationMessage(
        session_key="k", sender_id="a", sender_type="agent", content="x"
    )
    assert a.message_id != b.message_id
    assert uuid.UUID(a.message_id).version == 4
    assert a.timestamp.tzinfo is UTC
    assert a.recipient_id is None
    assert a.message_type == "communication"


def test_seed_usage_message_type_analysis_result_is_accepted() -> None:
    m = AgentCommunicationMessage(
        session_key="session_001_user_to_agent",
        sender_id="agent_001",
        sender_type="agent",
        sender_role="data_analyst",
        content="I've analyzed your sales data.",
        message_type="analysis_result",
        metadata={"analysis_id": "analysis_001", "confidence": 0.92},
    )
    assert AgentCommunicationMessage.from_dict(m.to_dict()) == m


@pytest.mark.parametrize(
    ("sender_type", "role"),
    [
        ("agent", "assistant"),
        ("master_controller", "assistant"),
        ("user", "user"),
        ("system", "system"),
    ],
)
def test_to_conversation_message_maps_sender_type_to_a_valid_role(
    sender_type: str, role: str
) -> None:
    m = AgentCommunicationMessage(
        session_key="k",
        sender_id="x",
        sender_type=sender_type,
        content="hello",
        timestamp=T0,
        metadata={"k": 1},
    )
    c = m.to_conversation_message()
    assert c.role == role
    assert (c.content, c.timestamp) == ("hello", T0)
    assert c.metadata["k"] == 1
    assert c.metadata[AGENT_MESSAGE_KEY]["sender_id"] == "x"
    assert c.metadata[AGENT_MESSAGE_KEY]["message_id"] == m.message_id


@settings(max_examples=200, deadline=None)
@given(agent_messages)
def test_agent_message_survives_conversion_to_a_conversation_message(
    m: AgentCommunicationMessage,
) -> None:
    m.metadata.pop(AGENT_MESSAGE_KEY, None)
    converted = m.to_conversation_message()
    assert ConversationMessage.from_dict(converted.to_dict()) == converted
    assert AgentCommunicationMessage.from_conversation_message(converted) == m


def test_plain_conversation_message_is_not_an_agent_message() -> None:
    with pytest.raises(ValueError, match=AGENT_MESSAGE_KEY):
        AgentCommunicationMessage.from_conversation_message(
            ConversationMessage("user", "hi", T0)
        )


def test_agent_message_to_dict_keys() -> None:
    m = AgentCommunicationMessage(
        session_key="k", sender_id="a", sender_type="agent", content=""
    )
    assert set(m.to_dict()) == {
        "message_id",
        "session_key",
        "sender_id",
        "sender_type",
        "sender_role",
        "recipient_id",
        "recipient_type",
        "recipient_role",
        "content",
        "message_type",
        "timestamp",
        "metadata",
    }
