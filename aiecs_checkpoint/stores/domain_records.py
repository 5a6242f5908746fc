"""Records of the domain stores (sessions, conversations, task contexts).

Like checkpoint stores, domain stores never see Python values beyond plain
fields they must index or count: messages, metadata, task contexts and
conversation sessions arrive as the engine serializer's `(type, bytes)` pairs,
so `EncryptedSerializer` covers them too.

Everything that belongs to one session id S (its metrics, conversation, task
context and multi-agent conversation sessions) is one *group*: written
together, expired together (a TTL deadline refreshed by every write to the
group), and removed together by `delete_session`. On Redis a group shares the
hash tag of the thread with the same id, so one script touches all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from aiecs_checkpoint.stores.records import Typed

EMPTY: Typed = ("null", b"")
"""Serialized "nothing" (metadata of a session created without any)."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as stored: indexed fields in the clear, metadata serialized.

    Times are integer microseconds since the epoch (UTC): exact, and small
    enough for Redis' Lua numbers (doubles).
    """

    session_id: str
    user_id: str
    status: str
    created_us: int
    activity_us: int
    request_count: int = 0
    error_count: int = 0
    processing_time: float = 0.0
    metadata: Typed = EMPTY


@dataclass(frozen=True, slots=True)
class SessionChange:
    """An atomic update of a session; counters are increments, not new values."""

    activity_us: int
    requests: int = 0
    errors: int = 0
    processing_time: float = 0.0
    status: str | None = None
    metadata: Typed | None = None


@dataclass(frozen=True, slots=True)
class DomainStats:
    """Counts read from the store (valid across processes)."""

    total_sessions: int
    active_sessions: int
    total_messages: int
    conversation_sessions: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    helper_checkpoints: int = 0


def apply_change(record: SessionRecord, change: SessionChange) -> SessionRecord:
    """The record after `change` (the memory store's twin of the Redis script)."""
    return replace(
        record,
        activity_us=change.activity_us,
        request_count=record.request_count + change.requests,
        error_count=record.error_count + change.errors,
        processing_time=record.processing_time + change.processing_time,
        status=change.status if change.status is not None else record.status,
        metadata=change.metadata if change.metadata is not None else record.metadata,
    )


RUNS_KEPT = 1000
"""Run marks kept per session, the newest: a run reported again after this many
newer runs of the same session would be counted again."""


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """What one saver hook reports about a run of the session's thread.

    `run_key` None: not part of a run (a manual put such as `update_state`),
    so only the activity time moves. Otherwise the first report of a key
    counts one request (status "active"); `elapsed` is the run's processing
    seconds so far as the reporter measured them, and only the part above what
    the run already reported is added (the largest report wins, so repeats add
    nothing); `failed` counts one error per key and sets status "failed".
    """

    activity_us: int
    run_key: str | None = None
    elapsed: float = 0.0
    failed: bool = False


@dataclass(frozen=True, slots=True)
class RunMark:
    """What the store remembers of a run key."""

    elapsed: float = 0.0
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Tracked:
    """Result of `DomainStore.track_run`."""

    session: SessionRecord
    created: bool
    appended: tuple[str, ...] = ()
    """Keys of the messages this call appended (the others were there already)."""


def apply_run(
    record: SessionRecord, mark: RunMark | None, update: RunUpdate
) -> tuple[SessionRecord, RunMark | None]:
    """The session and run mark after `update` (the memory store's twin of the
    Redis `d_track` script); the mark is None when the update names no run."""
    if update.run_key is None:
        return replace(record, activity_us=update.activity_us), None
    requests = errors = 0
    status: str | None = None
    seconds = 0.0
    if mark is None:
        mark = RunMark()
        requests, status = 1, "active"
    if update.elapsed > mark.elapsed:
        seconds = update.elapsed - mark.elapsed
        mark = replace(mark, elapsed=update.elapsed)
    if update.failed and not mark.failed:
        errors, status = 1, "failed"
        mark = replace(mark, failed=True)
    change = SessionChange(
        activity_us=update.activity_us,
        requests=requests,
        errors=errors,
        processing_time=seconds,
        status=status,
    )
    return apply_change(record, change), mark


def newest(items: Sequence[Typed], limit: int) -> list[Typed]:
    """The newest `limit` items in chronological order (all when limit <= 0)."""
    return list(items[-limit:]) if limit > 0 else list(items)


class MetadataConflict(Exception):
    """The session's metadata changed between read and write; retry the merge."""
