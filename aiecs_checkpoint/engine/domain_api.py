"""The ContextEngine's domain API: sessions, conversations, task contexts.

The async methods the original ContextEngine documented, over the engine's
domain store (memory or Redis, same semantics). Models are converted to store
records here: indexed fields stay plain, everything else goes through the
engine's serializer, so round trips are lossless and encryption covers it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, TypeVar

from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

from aiecs_checkpoint.domain.models import (
    SESSION_STATUSES,
    SESSION_TYPES,
    AgentCommunicationMessage,
    ConversationMessage,
    ConversationParticipant,
    ConversationSession,
    SessionMetrics,
)
from aiecs_checkpoint.domain.serde import unwrap
from aiecs_checkpoint.domain.task_context import TaskContext
from aiecs_checkpoint.engine.core import EngineCore
from aiecs_checkpoint.errors import InvalidConfigError, SerializationError
from aiecs_checkpoint.stores.clickhouse import layout as C
from aiecs_checkpoint.stores.domain_records import (
    EMPTY,
    MetadataConflict,
    SessionChange,
    SessionRecord,
    Tracked,
)
from aiecs_checkpoint.stores.ops import Op
from aiecs_checkpoint.stores.records import Typed, random_id

T = TypeVar("T")

UPDATABLE = frozenset({"status", "metadata"})
"""Session fields `update_session(updates=...)` may change."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_us(when: datetime) -> int:
    """Integer microseconds since the epoch (exact for datetimes)."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def now_us() -> int:
    return to_us(datetime.now(timezone.utc))


def split_session_key(session_key: str) -> tuple[str, str]:
    """(session id, session type) of a conversation-session key.

    Keys are `f"{session_id}_{session_type}"` with a known type, so the longest
    known type suffix identifies both parts whatever the session id contains.
    """
    if not isinstance(session_key, str):
        raise InvalidConfigError(f"session_key must be a str, got {session_key!r}")
    check_text("session_key", session_key)
    for kind in sorted(SESSION_TYPES, key=len, reverse=True):
        suffix = "_" + kind
        if session_key.endswith(suffix) and len(session_key) > len(suffix):
            return session_key[: -len(suffix)], kind
    raise InvalidConfigError(
        f"session_key {session_key!r} does not end with _<session type> "
        f"(one of {sorted(SESSION_TYPES)})"
    )


def _check_id(name: str, value: object) -> str:
    """A non-empty id that every store can keep, else `InvalidConfigError`."""
    if not isinstance(value, str) or not value:
        raise InvalidConfigError(f"{name} must be a non-empty str, got {value!r}")
    return check_text(name, value)


def check_text(name: str, value: str) -> str:
    """`value` when it is valid Unicode text, else `InvalidConfigError`: Redis
    keys and the archive take UTF-8 only, so a lone surrogate could be kept by
    the memory store and not by the others."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidConfigError(
            f"{name} must be valid Unicode text (no lone surrogates), got {value!r}"
        ) from None
    return value


def _check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidConfigError(f"limit must be an int, got {limit!r}")
    return limit


class DomainAPI(EngineCore):
    """The engine's domain methods (the seed's async API) over its domain store."""

    def _archive(self, key: str, build: Callable[[C.Rows], None]) -> None:
        """Queue rows for the ClickHouse archive (when on); never blocks or raises."""
        if self.archive is not None:
            rows = C.Rows.empty()
            build(rows)
            self.archive.enqueue(rows, key)

    # -- serialization ---------------------------------------------------------------

    def _dump(self, what: str, value: Any) -> Typed:
        try:
            return self.serde.dumps_typed(value)
        except Exception as exc:
            raise SerializationError(f"cannot serialize {what}: {exc}") from exc

    def _seal(self) -> Callable[[str], Typed] | None:
        """How the archive seals user ids: with the serializer when it
        encrypts (ClickHouse then never holds a user id in clear), else None."""
        encrypts = isinstance(unwrap(self.serde), EncryptedSerializer)
        return self.serde.dumps_typed if encrypts else None

    def _load(self, value: Typed) -> Any:
        return None if value == EMPTY else self.serde.loads_typed(value)

    def _record(self, s: SessionMetrics) -> SessionRecord:
        return SessionRecord(
            session_id=s.session_id,
            user_id=s.user_id,
            status=s.status,
            created_us=to_us(s.created_at),
            activity_us=to_us(s.last_activity),
            request_count=s.request_count,
            error_count=s.error_count,
            processing_time=s.total_processing_time,
            metadata=self._dump("session metadata", dict(s.metadata)),
        )

    def _session(self, r: SessionRecord) -> SessionMetrics:
        return SessionMetrics(
            session_id=r.session_id,
            user_id=r.user_id,
            created_at=from_us(r.created_us),
            last_activity=from_us(r.activity_us),
            request_count=r.request_count,
            error_count=r.error_count,
            total_processing_time=r.processing_time,
            status=r.status,
            metadata=self._load(r.metadata) or {},
        )

    async def _timed(self, op: Op[T]) -> T:
        """Run a domain-store operation, adding its time to the latency stats."""
        start = time.perf_counter()
        try:
            return await self.arun(op)
        finally:
            self._latency.add(time.perf_counter() - start)

    # -- sessions ---------------------------------------------------------------------

    async def create_session(
        self,
        session_id: str,
        user_id: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> SessionMetrics:
        """Create a session (status "active"); an existing one is returned as is."""
        _check_id("session_id", session_id)
        if isinstance(user_id, str):
            check_text("user_id", user_id)
        now = datetime.now(timezone.utc)
        session = SessionMetrics(
            session_id=session_id,
            user_id=user_id,
            created_at=now,
            last_activity=now,
            metadata=dict(metadata or {}),
        )
        stored, created = await self._timed(
            self.domain.create_session(self._record(session))
        )
        if created:
            self._archive(
                session_id, lambda rows: C.session_row(stored, rows, self._seal())
            )
        return self._session(stored)

    async def get_session(self, session_id: str) -> SessionMetrics | None:
        """The session, or None when unknown (or expired)."""
        _check_id("session_id", session_id)
        record = await self._timed(self.domain.get_session(session_id))
        return None if record is None else self._session(record)

    async def update_session(
        self,
        session_id: str,
        updates: Mapping[str, Any] | None = None,
        increment_requests: bool = False,
        add_processing_time: float = 0.0,
        mark_error: bool = False,
    ) -> bool:
        """Update a session atomically; False when it does not exist.

        Counters are incremented in the store, so concurrent calls (from any
        process) never lose an increment. `updates` may set `status` and merge
        keys into `metadata`.
        """
        _check_id("session_id", session_id)
        updates = dict(updates or {})
        unknown = set(updates) - UPDATABLE
        if unknown:
            raise InvalidConfigError(
                f"update_session cannot change {sorted(unknown)}; "
                f"updatable fields: {sorted(UPDATABLE)}"
            )
        status = updates.get("status")
        if status is not None and status not in SESSION_STATUSES:
            raise InvalidConfigError(
                f"status must be one of {sorted(SESSION_STATUSES)}, got {status!r}"
            )
        seconds = float(add_processing_time)
        if not seconds >= 0.0 or seconds == float("inf"):
            raise InvalidConfigError(
                "add_processing_time must be finite and >= 0, "
                f"got {add_processing_time!r}"
            )
        extra = updates.get("metadata")
        if extra is not None and not isinstance(extra, Mapping):
            raise InvalidConfigError(f"metadata must be a mapping, got {extra!r}")
        while True:
            expect: Typed | None = None
            merged: Typed | None = None
            if extra:
                current = await self._timed(self.domain.get_session(session_id))
                if current is None:
                    return False
                expect = current.metadata
                base = self._load(current.metadata) or {}
                merged = self._dump("session metadata", {**base, **extra})
            change = SessionChange(
                activity_us=now_us(),
                requests=int(bool(increment_requests)),
                errors=int(bool(mark_error)),
                processing_time=seconds,
                status=status,
                metadata=merged,
            )
            try:
                stored = await self._timed(
                    self.domain.update_session(session_id, change, expect)
                )
            except MetadataConflict:
                continue
            if stored is None:
                return False
            self._archive(session_id, partial(C.session_row, stored, seal=self._seal()))
            return True

    async def end_session(self, session_id: str, status: str = "completed") -> bool:
        """Mark a session finished ("completed", "failed" or "expired")."""
        return await self.update_session(session_id, updates={"status": status})

    async def list_sessions(
        self,
        user_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[SessionMetrics]:
        """Sessions, most recently active first, optionally of a user / status."""
        if isinstance(user_id, str):
            check_text("user_id", user_id)
        if status is not None and status not in SESSION_STATUSES:
            raise InvalidConfigError(
                f"status must be one of {sorted(SESSION_STATUSES)}, got {status!r}"
            )
        if _check_limit(limit) < 0 or _check_limit(offset) < 0:
            raise InvalidConfigError(
                f"limit and offset must be >= 0, got {limit}, {offset}"
            )
        records = await self._timed(
            self.domain.list_sessions(user_id, status, offset, limit)
        )
        return [self._session(r) for r in records]

    async def list_all_sessions(self) -> list[SessionMetrics]:
        """Every session (pages through the store; for migrations and tooling)."""
        out: list[SessionMetrics] = []
        while True:
            page = await self.list_sessions(limit=500, offset=len(out))
            out += page
            if len(page) < 500:
                return out

    async def cleanup_expired_sessions(self, max_idle_hours: float = 24) -> int:
        """Remove sessions idle for longer than `max_idle_hours` and all they own.

        Removes each session's conversation, conversation sessions, task context
        and the checkpoints and writes of the thread with the session's id.
        Returns how many sessions were removed.
        """
        if isinstance(max_idle_hours, bool) or not isinstance(
            max_idle_hours, (int, float)
        ):
            raise InvalidConfigError(
                f"max_idle_hours must be a number, got {max_idle_hours!r}"
            )
        if max_idle_hours < 0:
            raise InvalidConfigError(
                f"max_idle_hours must be >= 0, got {max_idle_hours!r}"
            )
        cutoff = now_us() - int(max_idle_hours * 3_600_000_000)
        removed = 0
        while True:
            ids = await self._timed(self.domain.idle_sessions(cutoff, 200))
            if not ids:
                return removed
            for session_id in ids:
                removed += await self.delete_session(session_id)

    async def delete_session(self, session_id: str) -> bool:
        """Remove a session and everything it owns (see `cleanup_expired_sessions`)."""
        _check_id("session_id", session_id)
        await self.arun(self.checkpoints.delete_thread(session_id))
        removed = bool(await self._timed(self.domain.delete_session(session_id)))
        if self.archive is not None:
            self.archive.enqueue_delete(C.SESSION_TABLES, "session_id", session_id)
        return removed

    # -- conversations ----------------------------------------------------------------

    async def add_conversation_message(
        self,
        session_id: str,
        role: str,
        content: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Append a message; past the cap the oldest messages are dropped."""
        _check_id("session_id", session_id)
        message = ConversationMessage(
            role=role,
            content=content,
            timestamp=datetime.now(timezone.utc),
            metadata=dict(metadata or {}),
        )
        blob = self._dump("conversation message", message.to_dict())
        cap = self.max_conversation_messages
        await self._timed(self.domain.append_message(session_id, blob, cap))
        message_id = random_id()
        self._archive(
            session_id,
            lambda rows: C.message_row(session_id, "", message_id, blob, rows),
        )
        return True

    def _conversation_blob(self, message: ConversationMessage) -> Typed:
        """A conversation message as stored (what `add_conversation_message` stores)."""
        return self._dump("conversation message", message.to_dict())

    def _archive_tracked(
        self, session_id: str, tracked: Tracked, blobs: Mapping[str, Typed]
    ) -> None:
        """Archive what one run-tracking step changed: the session, and the
        messages it appended (`blobs` by message key), once each."""

        def build(rows: C.Rows) -> None:
            C.session_row(tracked.session, rows, self._seal())
            for message_id in tracked.appended:
                C.message_row(session_id, "", message_id, blobs[message_id], rows)

        self._archive(session_id, build)

    async def get_conversation_history(
        self, session_id: str, limit: int = 50
    ) -> list[ConversationMessage]:
        """The newest `limit` messages, oldest first (all when limit <= 0)."""
        _check_id("session_id", session_id)
        blobs = await self._timed(self.domain.messages(session_id, _check_limit(limit)))
        return [ConversationMessage.from_dict(self._load(b)) for b in blobs]

    # -- multi-agent conversation sessions --------------------------------------------

    async def create_conversation_session(
        self,
        session_id: str,
        participants: Sequence[ConversationParticipant | Mapping[str, Any]],
        session_type: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Create (or replace) a conversation session; returns its session key."""
        _check_id("session_id", session_id)
        now = datetime.now(timezone.utc)
        session = ConversationSession(
            session_id=session_id,
            participants=[
                p
                if isinstance(p, ConversationParticipant)
                else ConversationParticipant.from_dict(p)
                for p in participants
            ],
            session_type=session_type,
            created_at=now,
            last_activity=now,
            metadata=dict(metadata or {}),
        )
        blob = self._dump("conversation session", session.to_dict())
        await self._timed(
            self.domain.put_conversation_session(session_id, session_type, blob)
        )
        self._archive(
            session_id,
            lambda rows: C.conversation_session_row(
                session_id, session_type, blob, rows
            ),
        )
        return session.session_key

    async def get_conversation_session(
        self, session_key: str
    ) -> ConversationSession | None:
        """The conversation session with that key, or None."""
        session_id, kind = split_session_key(session_key)
        blob = await self._timed(self.domain.get_conversation_session(session_id, kind))
        return None if blob is None else ConversationSession.from_dict(self._load(blob))

    async def add_agent_communication_message(
        self,
        session_key: str,
        sender_id: str,
        sender_type: str,
        sender_role: str | None,
        content: str,
        message_type: str = "communication",
        recipient_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        recipient_type: str | None = None,
        recipient_role: str | None = None,
    ) -> bool:
        """Append a message to a conversation session; False if it does not exist."""
        session_id, kind = split_session_key(session_key)
        message = AgentCommunicationMessage(
            session_key=session_key,
            sender_id=sender_id,
            sender_type=sender_type,
            sender_role=sender_role,
            recipient_id=recipient_id,
            recipient_type=recipient_type,
            recipient_role=recipient_role,
            content=content,
            message_type=message_type,
            metadata=dict(metadata or {}),
        )
        blob = self._dump("agent message", message.to_dict())
        cap = self.max_conversation_messages
        stored = bool(
            await self._timed(
                self.domain.append_agent_message(session_id, kind, blob, cap)
            )
        )
        if stored:
            self._archive(
                session_id,
                lambda rows: C.message_row(
                    session_id, kind, message.message_id, blob, rows
                ),
            )
        return stored

    async def get_agent_conversation_history(
        self,
        session_key: str,
        limit: int = 50,
        message_types: Iterable[str] | None = None,
    ) -> list[AgentCommunicationMessage]:
        """The newest `limit` messages (of `message_types`, if given), oldest first."""
        session_id, kind = split_session_key(session_key)
        limit = _check_limit(limit)
        types = None if message_types is None else set(message_types)
        fetch = limit if types is None else 0
        blobs = await self._timed(self.domain.agent_messages(session_id, kind, fetch))
        messages = [AgentCommunicationMessage.from_dict(self._load(b)) for b in blobs]
        if types is not None:
            messages = [m for m in messages if m.message_type in types]
        return messages[-limit:] if limit > 0 else messages

    # -- task context -----------------------------------------------------------------

    async def store_task_context(self, session_id: str, context: TaskContext) -> bool:
        """Store a task context (everything `TaskContext.to_dict` holds); True."""
        _check_id("session_id", session_id)
        if not isinstance(context, TaskContext):
            raise TypeError(
                f"store_task_context needs a TaskContext, got {type(context).__name__}"
            )
        blob = self._dump("task context", context.to_dict())
        await self._timed(self.domain.put_task_context(session_id, blob))
        self._archive(
            session_id, lambda rows: C.task_context_row(session_id, blob, rows)
        )
        return True

    async def get_task_context(self, session_id: str) -> TaskContext | None:
        """The TaskContext stored for the session with `store_task_context`, or
        None. Not what graph nodes recorded: for that, read
        `saver.get_task_context(thread_id)` (or `current_task_context()` inside
        a node)."""
        _check_id("session_id", session_id)
        blob = await self._timed(self.domain.get_task_context(session_id))
        return None if blob is None else TaskContext.from_dict(self._load(blob))

    # -- checkpoint helpers (the seed's, in a namespace of their own) -----------------

    async def store_checkpoint(
        self,
        thread_id: str,
        checkpoint_id: str,
        checkpoint_data: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Store `checkpoint_data` as the thread's newest helper checkpoint (an
        existing id is replaced and becomes the newest); True when stored."""
        _check_id("thread_id", thread_id)
        _check_id("checkpoint_id", checkpoint_id)
        if not isinstance(checkpoint_data, Mapping):
            raise InvalidConfigError(
                "checkpoint_data must be a mapping, "
                f"got {type(checkpoint_data).__name__}"
            )
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidConfigError(
                f"metadata must be a mapping, got {type(metadata).__name__}"
            )
        newest = await self._timed(self.domain.helper_checkpoints(thread_id, None, 1))
        parent = next((cid for cid, _ in newest if cid != checkpoint_id), None)
        record = {
            "checkpoint_id": checkpoint_id,
            "thread_id": thread_id,
            "data": dict(checkpoint_data),
            "metadata": dict(metadata or {}),
            "created_at": datetime.now(timezone.utc).isoformat(),
            "parent_checkpoint_id": parent,
        }
        blob = self._dump("checkpoint", record)
        await self._timed(
            self.domain.put_helper_checkpoint(thread_id, checkpoint_id, blob)
        )
        self._archive(
            thread_id,
            lambda rows: C.helper_checkpoint_row(thread_id, checkpoint_id, blob, rows),
        )
        return True

    async def get_checkpoint(
        self, thread_id: str, checkpoint_id: str | None = None
    ) -> dict[str, Any] | None:
        """A helper checkpoint (the most recently stored when `checkpoint_id` is
        None), or None."""
        _check_id("thread_id", thread_id)
        if checkpoint_id is not None:
            _check_id("checkpoint_id", checkpoint_id)
        found = await self._timed(
            self.domain.helper_checkpoints(thread_id, checkpoint_id, 1)
        )
        return self._load(found[0][1]) if found else None

    async def list_checkpoints(
        self, thread_id: str, limit: int = 10
    ) -> list[dict[str, Any]]:
        """The thread's `limit` most recently stored helper checkpoints, newest
        first."""
        _check_id("thread_id", thread_id)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidConfigError(f"limit must be an int, got {limit!r}")
        found = await self._timed(
            self.domain.helper_checkpoints(thread_id, None, limit)
        )
        return [self._load(blob) for _, blob in found]
