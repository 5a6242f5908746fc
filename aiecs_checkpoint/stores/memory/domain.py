"""Sessions, conversations and task contexts in process memory.

The in-process twin of `stores.redis.domain`, with the same semantics: one
group per session id (expired and deleted together), the newest messages kept
past the cap, atomic counter updates (one lock), and a TTL deadline per group
checked on every access, so an expired group is invisible at once and purged
on the next write. Run tracking (`track_run`) is one step under the lock:
session, run mark and mirrored messages change together. Operations need no
I/O (`yield from NO_IO`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from aiecs_checkpoint.stores.domain_records import (
    RUNS_KEPT,
    DomainStats,
    MetadataConflict,
    RunMark,
    RunUpdate,
    SessionChange,
    SessionRecord,
    Tracked,
    apply_change,
    apply_run,
    newest,
)
from aiecs_checkpoint.stores.ops import NO_IO, Op
from aiecs_checkpoint.stores.records import Typed

T = TypeVar("T")


@dataclass(slots=True)
class _Group:
    """Everything stored under one session id."""

    session: SessionRecord | None = None
    conversation: deque[Typed] = field(default_factory=deque)
    task_context: Typed | None = None
    conversation_sessions: dict[str, Typed] = field(default_factory=dict)
    agent_messages: dict[str, deque[Typed]] = field(default_factory=dict)
    runs: dict[str, RunMark] = field(default_factory=dict)
    """Run marks in the order the runs were first seen (oldest dropped first)."""
    message_ids: set[str] = field(default_factory=set)
    """Keys of every message `track_run` appended (kept past the cap)."""
    helper_checkpoints: dict[str, Typed] = field(default_factory=dict)
    """`store_checkpoint` records by id, in the order stored (newest last)."""
    deadline: float = float("inf")

    def empty(self) -> bool:
        return (
            self.session is None
            and not self.conversation
            and self.task_context is None
            and not self.conversation_sessions
            and not self.runs
            and not self.message_ids
            and not self.helper_checkpoints
        )


class MemoryDomainStore:
    """Domain storage in process memory; safe to share between threads."""

    backend = "memory"

    def __init__(self, ttl_s: float | None = None) -> None:
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}

    def _live(self, session_id: str) -> _Group | None:
        group = self._groups.get(session_id)
        if group is not None and group.deadline <= time.monotonic():
            del self._groups[session_id]
            return None
        return group

    def _write(self, session_id: str, fn: Callable[[_Group], T]) -> T:
        """Run `fn` on the (new or live) group and refresh its deadline."""
        with self._lock:
            group = self._live(session_id)
            if group is None:
                group = self._groups[session_id] = _Group()
            result = fn(group)
            if group.empty():
                self._groups.pop(session_id, None)
            elif self._ttl is not None:
                group.deadline = time.monotonic() + self._ttl
            return result

    def _read(self, session_id: str, fn: Callable[[_Group], T], default: T) -> T:
        with self._lock:
            group = self._live(session_id)
            return default if group is None else fn(group)

    # -- sessions ----------------------------------------------------------------

    def create_session(self, record: SessionRecord) -> Op[tuple[SessionRecord, bool]]:
        yield from NO_IO

        def create(group: _Group) -> tuple[SessionRecord, bool]:
            if group.session is not None:
                return group.session, False
            group.session = record
            return record, True

        return self._write(record.session_id, create)

    def get_session(self, session_id: str) -> Op[SessionRecord | None]:
        yield from NO_IO
        return self._read(session_id, lambda g: g.session, None)

    def update_session(
        self, session_id: str, change: SessionChange, expect_metadata: Typed | None
    ) -> Op[SessionRecord | None]:
        yield from NO_IO
        with self._lock:
            group = self._live(session_id)
            if group is None or group.session is None:
                return None
        return self._write(session_id, lambda g: _update(g, change, expect_metadata))

    def list_sessions(
        self, user_id: str | None, status: str | None, offset: int, limit: int
    ) -> Op[list[SessionRecord]]:
        yield from NO_IO
        with self._lock:
            now = time.monotonic()
            found = [
                g.session
                for g in self._groups.values()
                if g.session is not None
                and g.deadline > now
                and (user_id is None or g.session.user_id == user_id)
                and (status is None or g.session.status == status)
            ]
        found.sort(key=lambda s: (s.activity_us, s.session_id), reverse=True)
        return found[offset : offset + limit]

    def idle_sessions(self, cutoff_us: int, limit: int) -> Op[list[str]]:
        yield from NO_IO
        with self._lock:
            now = time.monotonic()
            return [
                sid
                for sid, g in self._groups.items()
                if g.session is not None
                and g.deadline > now
                and g.session.activity_us < cutoff_us
            ][:limit]

    def delete_session(self, session_id: str) -> Op[bool]:
        yield from NO_IO
        with self._lock:
            return self._groups.pop(session_id, None) is not None

    # -- conversations ---------------------------------------------------------------

    def append_message(self, session_id: str, message: Typed, cap: int) -> Op[int]:
        yield from NO_IO

        def append(group: _Group) -> int:
            group.conversation.append(message)
            while len(group.conversation) > cap:
                group.conversation.popleft()
            return len(group.conversation)

        return self._write(session_id, append)

    def messages(self, session_id: str, limit: int) -> Op[list[Typed]]:
        yield from NO_IO
        return self._read(session_id, lambda g: newest(list(g.conversation), limit), [])

    def track_run(
        self,
        session_id: str,
        new: SessionRecord,
        update: RunUpdate,
        messages: Sequence[tuple[str, Typed]],
        cap: int,
    ) -> Op[Tracked]:
        yield from NO_IO
        return self._write(session_id, lambda g: _track(g, new, update, messages, cap))

    def known_message_ids(self, session_id: str, ids: Sequence[str]) -> Op[set[str]]:
        yield from NO_IO
        return self._read(session_id, lambda g: g.message_ids.intersection(ids), set())

    def put_task_context(self, session_id: str, context: Typed) -> Op[None]:
        yield from NO_IO

        def put(group: _Group) -> None:
            group.task_context = context

        self._write(session_id, put)

    def get_task_context(self, session_id: str) -> Op[Typed | None]:
        yield from NO_IO
        return self._read(session_id, lambda g: g.task_context, None)

    def put_helper_checkpoint(
        self, session_id: str, checkpoint_id: str, data: Typed
    ) -> Op[None]:
        yield from NO_IO

        def put(group: _Group) -> None:
            group.helper_checkpoints.pop(checkpoint_id, None)
            group.helper_checkpoints[checkpoint_id] = data

        self._write(session_id, put)

    def helper_checkpoints(
        self, session_id: str, checkpoint_id: str | None, limit: int
    ) -> Op[list[tuple[str, Typed]]]:
        yield from NO_IO

        def read(group: _Group) -> list[tuple[str, Typed]]:
            found = group.helper_checkpoints
            if checkpoint_id is not None:
                data = found.get(checkpoint_id)
                return [] if data is None else [(checkpoint_id, data)]
            return list(reversed(found.items()))[: max(limit, 0)]

        return self._read(session_id, read, [])

    def put_conversation_session(
        self, session_id: str, session_type: str, data: Typed
    ) -> Op[None]:
        yield from NO_IO

        def put(group: _Group) -> None:
            group.conversation_sessions[session_type] = data
            group.agent_messages.setdefault(session_type, deque())

        self._write(session_id, put)

    def get_conversation_session(
        self, session_id: str, session_type: str
    ) -> Op[Typed | None]:
        yield from NO_IO
        return self._read(
            session_id, lambda g: g.conversation_sessions.get(session_type), None
        )

    def append_agent_message(
        self, session_id: str, session_type: str, message: Typed, cap: int
    ) -> Op[bool]:
        yield from NO_IO
        with self._lock:
            group = self._live(session_id)
            if group is None or session_type not in group.conversation_sessions:
                return False

        def append(group: _Group) -> bool:
            log = group.agent_messages.setdefault(session_type, deque())
            log.append(message)
            while len(log) > cap:
                log.popleft()
            return True

        return self._write(session_id, append)

    def agent_messages(
        self, session_id: str, session_type: str, limit: int
    ) -> Op[list[Typed]]:
        yield from NO_IO
        return self._read(
            session_id,
            lambda g: newest(list(g.agent_messages.get(session_type, ())), limit),
            [],
        )

    # -- observability ----------------------------------------------------------------

    def stats(self, now_us: int) -> Op[DomainStats]:
        yield from NO_IO
        del now_us
        with self._lock:
            now = time.monotonic()
            live = [g for g in self._groups.values() if g.deadline > now]
        by_status: dict[str, int] = {}
        for g in live:
            if g.session is not None:
                by_status[g.session.status] = by_status.get(g.session.status, 0) + 1
        return DomainStats(
            total_sessions=sum(by_status.values()),
            active_sessions=by_status.get("active", 0),
            total_messages=sum(
                len(g.conversation) + sum(len(m) for m in g.agent_messages.values())
                for g in live
            ),
            conversation_sessions=sum(len(g.conversation_sessions) for g in live),
            by_status=by_status,
            helper_checkpoints=sum(len(g.helper_checkpoints) for g in live),
        )

    def ping(self) -> Op[None]:
        """The memory store is always reachable."""
        yield from NO_IO


def _update(
    group: _Group, change: SessionChange, expect: Typed | None
) -> SessionRecord | None:
    if group.session is None:
        return None
    if expect is not None and group.session.metadata != expect:
        raise MetadataConflict(group.session.session_id)
    group.session = apply_change(group.session, change)
    return group.session


def _track(
    group: _Group,
    new: SessionRecord,
    update: RunUpdate,
    messages: Sequence[tuple[str, Typed]],
    cap: int,
) -> Tracked:
    created = group.session is None
    key = update.run_key
    mark = group.runs.get(key) if key is not None else None
    record, mark = apply_run(group.session or new, mark, update)
    group.session = record
    if key is not None and mark is not None:
        group.runs[key] = mark
        while len(group.runs) > RUNS_KEPT:
            del group.runs[next(iter(group.runs))]
    appended: list[str] = []
    for message_id, message in messages:
        if message_id not in group.message_ids:
            group.message_ids.add(message_id)
            group.conversation.append(message)
            appended.append(message_id)
    while appended and len(group.conversation) > cap:
        group.conversation.popleft()
    return Tracked(record, created, tuple(appended))
