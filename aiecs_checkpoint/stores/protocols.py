"""What the engine needs from a store: one protocol per kind of data.

Every method returns an operation (`stores.ops.Op`, or a `Stream` for a
listing) instead of doing I/O, so each backend writes each operation once and
the engine runs it with its sync or its async runner. The three backends
(`stores.memory`, `stores.redis`, and `stores.clickhouse.tiered` wrapping
either) implement both protocols with the same semantics; the shared test
suite runs every saver-level test on each.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from aiecs_checkpoint.stores.domain_records import (
    DomainStats,
    RunUpdate,
    SessionChange,
    SessionRecord,
    Tracked,
)
from aiecs_checkpoint.stores.ops import Op, Stream
from aiecs_checkpoint.stores.records import (
    CheckpointRow,
    DeltaHistory,
    Held,
    IndexQuery,
    ListValue,
    Runs,
    StoredTuple,
    Typed,
    ValueWrite,
    Version,
    WriteRow,
)
from aiecs_checkpoint.stores.thread_model import Thread

Head = tuple[int, CheckpointRow]
"""A listed thread: ms of its last checkpoint write, and its latest row."""

ThreadKey = tuple[int, str]
"""A thread's place in the listing: (activity ms, thread id)."""


class CheckpointStore(Protocol):
    """Checkpoints, channel values and pending writes of threads."""

    backend: str
    """"memory" or "redis" (a tiered store reports its hot store's)."""

    skips_held: bool
    """True when `get` and `list` leave out list elements the reader holds
    (`Held`); a store that never does ignores `held`."""

    def put_checkpoint(
        self, row: CheckpointRow, values: dict[str, tuple[Version, ValueWrite]]
    ) -> Op[dict[str, ListValue]]:
        """Store a checkpoint and its new values atomically; the list manifests.

        Raises `StaleListBase`, storing nothing, when a list write reuses
        positions of an element log that no longer exists.
        """
        ...

    def put_writes(
        self, thread_id: str, ns: str, cid: str, rows: Sequence[WriteRow]
    ) -> Op[None]:
        """Store a task's writes: special ones overwrite, regular are first-wins."""
        ...

    def get(
        self, thread_id: str, ns: str, cid: str | None, held: Held | None = None
    ) -> Op[StoredTuple | None]:
        """The checkpoint by id, or the namespace's latest when id is None."""
        ...

    def list(
        self,
        thread_id: str | None,
        ns: str | None,
        before: str | None,
        held: Callable[[str], Held] | None = None,
    ) -> Stream:
        """Emit `StoredTuple`s newest first: of one thread (every namespace when
        `ns` is None) or of every thread; `before` is exclusive.
        `held(thread_id)` is asked before each page."""
        ...

    def delta_history(
        self, thread_id: str, ns: str, cid: str | None, channels: Sequence[str]
    ) -> Op[DeltaHistory | None]:
        """Walk the checkpoint's parent chain once for all `channels`."""
        ...

    def log_items(
        self, thread_id: str, ns: str, channel: str, epoch: str, runs: Runs
    ) -> Op[builtins.list[Typed]]:
        """The serialized elements at `runs` of an element log (what a ref
        value points at, `stores.refs`); positions no longer stored are left
        out."""
        ...

    def delete_thread(self, thread_id: str) -> Op[None]:
        """Remove every namespace, checkpoint, value and write of a thread."""
        ...

    def delete_runs(self, run_keys: Iterable[str]) -> Op[None]:
        """Remove the checkpoints of these runs (and their writes and records),
        freezing the delta history surviving checkpoints need."""
        ...

    def prune(self, thread_ids: Iterable[str], keep_latest: bool) -> Op[None]:
        """Keep only each namespace's latest checkpoint, or delete the threads."""
        ...

    def copy_thread(self, source: str, target: str) -> Op[None]:
        """Copy a whole thread (every namespace, full parent chains, writes)."""
        ...

    def thread_heads(
        self, before: ThreadKey | None, limit: int, query: IndexQuery | None = None
    ) -> Op[tuple[Sequence[Head], ThreadKey | None]]:
        """Visit up to `limit` threads, newest activity first, strictly after
        `before`, from the store's activity index (never a checkpoint scan).

        Threads are ordered by (ms of the last checkpoint written, thread id),
        both descending. Returns (activity ms, latest row) per thread that still
        has a checkpoint (the root namespace's latest, else any namespace's), and
        the key of the last thread visited to continue from (None: no more).
        With `query`, only the thread index's candidates for it are visited
        (a superset of the threads whose latest row matches; `IndexQuery`).
        """
        ...

    def index_secret(self, fresh: Typed) -> Op[Typed]:
        """The thread index's secret as stored (serialized, so encrypted
        under encryption); `fresh` is stored first when there is none."""
        ...

    def latest_rows(
        self, thread_ids: Sequence[str]
    ) -> Op[Sequence[tuple[CheckpointRow | None, int | None]]]:
        """Per thread, in one batched read: its latest row (as `thread_heads`)
        and when its history was last deleted (µs, as `deleted_at`)."""
        ...

    def count_checkpoints(self) -> Op[int]:
        """Checkpoints stored, every thread and namespace."""
        ...

    def export_thread(self, thread_id: str) -> Op[Thread]:
        """The whole thread ({} when absent)."""
        ...

    def import_thread(self, thread_id: str, thread: Thread) -> Op[None]:
        """Replace the thread with `thread` (archive restore)."""
        ...

    def thread_records(self, thread_id: str) -> Op[builtins.list[WriteRow]]:
        """Every tracking record write (`RECORD_CHANNEL`) of the thread: its
        writes only, never its values."""
        ...

    def mark_deleted(self, thread_id: str, at_us: int, ttl_s: int) -> Op[None]:
        """Remember for `ttl_s` that the thread's history up to `at_us` is deleted."""
        ...

    def deleted_at(self, thread_id: str) -> Op[int | None]:
        """When the thread's history was last deleted (µs), if remembered."""
        ...

    def ping(self) -> Op[None]:
        """Raise `StoreError` when the backend cannot be reached."""
        ...


class DomainStore(Protocol):
    """Sessions, conversations, conversation sessions and task contexts."""

    backend: str

    def create_session(self, record: SessionRecord) -> Op[tuple[SessionRecord, bool]]:
        """Store a new session; (the stored session, whether it was created)."""
        ...

    def get_session(self, session_id: str) -> Op[SessionRecord | None]:
        """The session, or None (unknown or expired)."""
        ...

    def update_session(
        self, session_id: str, change: SessionChange, expect_metadata: Typed | None
    ) -> Op[SessionRecord | None]:
        """Apply `change` atomically; None when the session does not exist.

        With `expect_metadata`, the change applies only if the stored metadata
        is still that value (else `MetadataConflict`): metadata merges are
        read-modify-write and must not lose a concurrent merge.
        """
        ...

    def list_sessions(
        self, user_id: str | None, status: str | None, offset: int, limit: int
    ) -> Op[list[SessionRecord]]:
        """Sessions newest activity first, optionally of one user / status."""
        ...

    def idle_sessions(self, cutoff_us: int, limit: int) -> Op[list[str]]:
        """Ids of sessions whose last activity is older than `cutoff_us`."""
        ...

    def delete_session(self, session_id: str) -> Op[bool]:
        """Remove the session's whole group; True when anything was removed."""
        ...

    def append_message(self, session_id: str, message: Typed, cap: int) -> Op[int]:
        """Append to the conversation, keeping the newest `cap`; the new length."""
        ...

    def messages(self, session_id: str, limit: int) -> Op[list[Typed]]:
        """The newest `limit` messages, oldest first (all when limit <= 0)."""
        ...

    def track_run(
        self,
        session_id: str,
        new: SessionRecord,
        update: RunUpdate,
        messages: Sequence[tuple[str, Typed]],
        cap: int,
    ) -> Op[Tracked]:
        """One atomic step of run tracking (see `RunUpdate`).

        Creates the session as `new` when missing, applies `update` once per
        run key, and appends each `(message key, message)` whose key the
        conversation has not had yet (keeping the newest `cap`; the keys are
        remembered past the cap, so a dropped message never comes back).
        """
        ...

    def known_message_ids(self, session_id: str, ids: Sequence[str]) -> Op[set[str]]:
        """Which of these message keys `track_run` has appended already."""
        ...

    def put_task_context(self, session_id: str, context: Typed) -> Op[None]:
        """Store the session's task context (replacing it)."""
        ...

    def get_task_context(self, session_id: str) -> Op[Typed | None]:
        """The session's task context, or None."""
        ...

    def put_conversation_session(
        self, session_id: str, session_type: str, data: Typed
    ) -> Op[None]:
        """Store (or replace) a multi-agent conversation session."""
        ...

    def get_conversation_session(
        self, session_id: str, session_type: str
    ) -> Op[Typed | None]:
        """A conversation session, or None."""
        ...

    def append_agent_message(
        self, session_id: str, session_type: str, message: Typed, cap: int
    ) -> Op[bool]:
        """Append to a conversation session's log; False if the session is unknown."""
        ...

    def agent_messages(
        self, session_id: str, session_type: str, limit: int
    ) -> Op[list[Typed]]:
        """The newest `limit` messages of a conversation session, oldest first."""
        ...

    def put_helper_checkpoint(
        self, session_id: str, checkpoint_id: str, data: Typed
    ) -> Op[None]:
        """Store (or replace) a `store_checkpoint` record; it becomes the newest."""
        ...

    def helper_checkpoints(
        self, session_id: str, checkpoint_id: str | None, limit: int
    ) -> Op[list[tuple[str, Typed]]]:
        """(id, record) newest stored first: the one named, else the newest
        `limit` (none when limit <= 0)."""
        ...

    def stats(self, now_us: int) -> Op[DomainStats]:
        """Session, message and conversation-session counts."""
        ...


__all__ = ["CheckpointStore", "DomainStore", "Head", "ThreadKey"]
