"""ContextEngineSaver: a LangGraph checkpointer backed by a ContextEngine.

A facade: every method, sync or async, runs one operation of a part (`reads`,
`writes`, `rewrites`, `recording`, `threads`) with the engine's sync runner
(`engine.run`, `engine.iterate`) or its async runner (`engine.arun`,
`engine.aiterate`). The operation is written once, so the sync and async
twins cannot behave differently; sync methods never touch the event loop.
"""

from __future__ import annotations

import builtins
import copy
import random
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from aiecs_checkpoint.domain.serde import checked
from aiecs_checkpoint.domain.task_context import TaskContext
from aiecs_checkpoint.engine import ContextEngine
from aiecs_checkpoint.errors import InvalidConfigError
from aiecs_checkpoint.saver.cache import DEFAULT_CACHE_BYTES
from aiecs_checkpoint.saver.context import SaverContext
from aiecs_checkpoint.saver.reads import Reads
from aiecs_checkpoint.saver.recording import Recording
from aiecs_checkpoint.saver.rewrites import Rewrites
from aiecs_checkpoint.saver.threads import ThreadInfo, ThreadListing
from aiecs_checkpoint.saver.writes import Writes
from aiecs_checkpoint.tracking import records
from aiecs_checkpoint.tracking.sessions import SessionTracker


class ContextEngineSaver(BaseCheckpointSaver[str], records.TaskRecorder):
    """LangGraph checkpointer storing threads in a `ContextEngine`.

    `ContextEngineSaver()` uses the embedded in-process memory store: no server and
    no configuration. One instance serves the sync and the async graph APIs.

    Args:
        engine: The engine to store into; a new memory-backed engine by default.
        serde: Serializer for everything stored, metadata included (for example an
            `EncryptedSerializer`, so nothing is kept in plaintext). It governs
            the engine's data too (sessions, mirrored messages): an engine
            built without a serde adopts it; an engine with another one is
            refused with `InvalidConfigError`. Wrapped in a `CheckedSerializer`
            (`self.serde`): only allowlisted types are revived, and a value
            that cannot be decoded raises `CorruptDataError`.
        track_sessions: Keep the engine session whose id is the thread id in
            step with each run (requests, processing time, errors, user id).
        mirror_messages: With `track_sessions`, also append the messages of a
            `messages` channel to the thread's conversation history, once each.
        cache_bytes: Byte budget of what this saver keeps decoded and indexed
            per process (default 64 MiB); past it the least recently used
            threads are dropped, which makes their next read or put slower,
            never different.
    """

    def __init__(
        self,
        engine: ContextEngine | None = None,
        *,
        serde: SerializerProtocol | None = None,
        track_sessions: bool = False,
        mirror_messages: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if engine is not None and not isinstance(engine, ContextEngine):
            raise _engine_error(engine)
        if (
            isinstance(cache_bytes, bool)
            or not isinstance(cache_bytes, int)
            or cache_bytes < 0
        ):
            raise InvalidConfigError(
                f"cache_bytes must be an int >= 0, got {cache_bytes!r}"
            )
        self._cache_bytes = cache_bytes
        if mirror_messages and not track_sessions:
            raise InvalidConfigError("mirror_messages=True needs track_sessions=True")
        if engine is None:
            engine = ContextEngine(serde=serde)
        super().__init__(serde=engine.use_serde(serde))
        self.engine = engine
        self._sessions = (
            SessionTracker(self.engine, mirror_messages=mirror_messages)
            if track_sessions
            else None
        )
        self._records = records.RecordBuffer()
        self._build_parts()

    def _build_parts(self) -> None:
        """Parts over a context with fresh caches for the current serializer."""
        ctx = SaverContext.new(
            self.engine, self.serde, self._records, self._sessions, self._cache_bytes
        )
        self._ctx = ctx
        self._reads = Reads(ctx)
        self._writes = Writes(ctx)
        self._rewrites = Rewrites(ctx)
        self._recording = Recording(ctx)
        self._threads = ThreadListing(ctx)

    def _reset_caches(self) -> None:
        """Drop what this saver holds decoded or indexed (tests, memory pressure)."""
        self._ctx.cache.clear()

    def with_allowlist(
        self, extra_allowlist: Collection[tuple[str, ...]]
    ) -> ContextEngineSaver:
        """A clone sharing the storage that also revives `extra_allowlist`'s
        types ((module, name) tuples): LangGraph calls it with the state
        schema's types when `LANGGRAPH_STRICT_MSGPACK=true`.

        The clone gets its own caches, so nothing decoded under one allowlist
        is handed out under the other.
        """
        serde = checked(self.serde).with_msgpack_allowlist(extra_allowlist)
        if serde is self.serde:
            return self
        clone = copy.copy(self)
        clone.serde = serde
        clone._build_parts()
        return clone

    # -- construction and context management ---------------------------------------

    @classmethod
    def from_conn_string(
        cls,
        conn_string: str,
        *,
        serde: SerializerProtocol | None = None,
        track_sessions: bool = False,
        mirror_messages: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        **engine_options: Any,
    ) -> ContextEngineSaver:
        """A saver on Redis at `conn_string`; use it as `with` or `async with`.

        `engine_options` are `ContextEngine`'s (key_prefix, ttl, cluster, fallback,
        replica_acks, replica_acks_timeout, ...); `serde` serializes the engine's
        data and the checkpoints alike.
        Entering connects (and detects a cluster); leaving closes the connections.
        """
        engine = ContextEngine(redis_url=conn_string, serde=serde, **engine_options)
        return cls(
            engine,
            serde=serde,
            track_sessions=track_sessions,
            mirror_messages=mirror_messages,
            cache_bytes=cache_bytes,
        )

    @classmethod
    def from_env(
        cls,
        *,
        serde: SerializerProtocol | None = None,
        track_sessions: bool = False,
        mirror_messages: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        **engine_options: Any,
    ) -> ContextEngineSaver:
        """A saver configured from `REDIS_URL` / `REDIS_HOST`... (memory if unset);
        `serde` serializes the engine's data and the checkpoints alike."""
        engine = ContextEngine.from_env(serde=serde, **engine_options)
        return cls(
            engine,
            serde=serde,
            track_sessions=track_sessions,
            mirror_messages=mirror_messages,
            cache_bytes=cache_bytes,
        )

    def setup(self) -> None:
        """Nothing to create: every store makes what it needs as it writes (no
        tables, indexes or migrations). Kept so code written for other savers
        (`saver.setup()`) runs unchanged."""

    async def asetup(self) -> None:
        """Nothing to create (see `setup`)."""

    def __enter__(self) -> ContextEngineSaver:
        self.engine.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.engine.close_sync()

    async def __aenter__(self) -> ContextEngineSaver:
        await self.engine.initialize()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.engine.close()

    # -- versions --------------------------------------------------------------------

    def get_next_version(self, current: str | None, channel: None) -> str:
        """`<counter>.<random>`: increasing, and distinct across forks of a thread.

        Values are stored once per (channel, version), so two branches that both
        reach counter n must not share a version string.
        """
        if current is None:
            counter = 0
        elif isinstance(current, int):
            counter = current
        else:
            counter = int(str(current).split(".")[0])
        return f"{counter + 1:032}.{random.random():016}"

    # -- writes ----------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint; unchanged list elements are not serialized again."""
        op = self._writes.put(config, checkpoint, metadata, new_versions)
        return self.engine.run(op)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async `put`."""
        op = self._writes.put(config, checkpoint, metadata, new_versions)
        return await self.engine.arun(op)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes (special writes overwrite, regular are first-wins)."""
        self.engine.run(self._writes.put_writes(config, writes, task_id, task_path))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async `put_writes`."""
        op = self._writes.put_writes(config, writes, task_id, task_path)
        await self.engine.arun(op)

    # -- reads -----------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by the config, or the latest: O(1) either way."""
        return self.engine.run(self._reads.get_tuple(config))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async `get_tuple`."""
        return await self.engine.arun(self._reads.get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first.

        `config=None` lists every thread; a config without `checkpoint_ns` every
        namespace of its thread; `checkpoint_ns=""` the root namespace only.
        `filter` matches any metadata key; `before` is exclusive.
        """
        return self.engine.iterate(self._reads.list(config, filter, before, limit))

    def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async `list`."""
        return self.engine.aiterate(self._reads.list(config, filter, before, limit))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Seed and on-path writes per channel, from one walk inside the store."""
        return self.engine.run(self._reads.delta_history(config, channels))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Async `get_delta_channel_history`."""
        return await self.engine.arun(self._reads.delta_history(config, channels))

    # -- threads ---------------------------------------------------------------------

    def list_threads(
        self,
        filter: Mapping[str, Any] | None = None,
        limit: int = 50,
        before: ThreadInfo | str | None = None,
    ) -> builtins.list[ThreadInfo]:
        """A page of threads, newest activity first (see `saver.threads`).

        `filter` keeps threads whose latest checkpoint's metadata has every
        key with an equal value (as `list(filter=...)`); a page holds up to
        `limit` matches. `before`: the last `ThreadInfo` of the previous page
        (or its `cursor`). Raises `InvalidConfigError` for a bad filter or
        limit, `InvalidCursorError` for a bad cursor.
        """
        return self.engine.run(self._threads.page(filter, limit, before))

    async def alist_threads(
        self,
        filter: Mapping[str, Any] | None = None,
        limit: int = 50,
        before: ThreadInfo | str | None = None,
    ) -> builtins.list[ThreadInfo]:
        """Async `list_threads`."""
        return await self.engine.arun(self._threads.page(filter, limit, before))

    # -- deleting, copying, pruning --------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of a thread."""
        self.engine.run(self._rewrites.delete_thread(thread_id))

    async def adelete_thread(self, thread_id: str) -> None:
        """Async `delete_thread`."""
        await self.engine.arun(self._rewrites.delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints and writes of the given runs.

        Surviving checkpoints that used DeltaChannel history from the deleted
        ones keep a frozen copy of it, so they still rebuild the same state.
        """
        self.engine.run(self._rewrites.delete_for_runs(run_ids))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async `delete_for_runs`."""
        await self.engine.arun(self._rewrites.delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every namespace of a thread, with full parent chains and writes."""
        op = self._rewrites.copy_thread(source_thread_id, target_thread_id)
        self.engine.run(op)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async `copy_thread`."""
        op = self._rewrites.copy_thread(source_thread_id, target_thread_id)
        await self.engine.arun(op)

    def prune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest"
    ) -> None:
        """Keep the latest checkpoint per namespace (`keep_latest`) or delete all.

        `keep_latest` freezes the DeltaChannel history the kept checkpoint needs
        before dropping its ancestors, so its state is rebuilt unchanged.
        """
        self.engine.run(self._rewrites.prune(thread_ids, strategy))

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest"
    ) -> None:
        """Async `prune`."""
        await self.engine.arun(self._rewrites.prune(thread_ids, strategy))

    # -- task records (tracking) -----------------------------------------------------

    def record(
        self, kind: str, data: Mapping[str, Any], stamp: records.Stamp
    ) -> dict[str, Any]:
        """Buffer a record of the running task until its writes are saved.

        Serialized now, so a value the serializer rejects fails in the node
        (`SerializationError`) instead of failing the task's save later.
        """
        return self._recording.record(kind, data, stamp)

    def get_task_context(
        self, thread_id: str, *, include_unsaved: bool = False
    ) -> TaskContext:
        """The thread's TaskContext, rebuilt from what its graph nodes recorded
        (model usage, file operations, context updates), oldest first.

        `include_unsaved` adds records this process buffered for tasks whose
        writes are not saved yet (what `current_task_context()` shows a node
        while it runs). Not `await engine.get_task_context(session_id)`, which
        returns a TaskContext stored with `engine.store_task_context`.
        """
        return self.engine.run(self._recording.task_context(thread_id, include_unsaved))

    async def aget_task_context(
        self, thread_id: str, *, include_unsaved: bool = False
    ) -> TaskContext:
        """Async `get_task_context`."""
        op = self._recording.task_context(thread_id, include_unsaved)
        return await self.engine.arun(op)


def _engine_error(engine: object) -> InvalidConfigError:
    """The error for a first argument that is not a ContextEngine (a connection
    string is the usual mistake; it is not echoed, as it may hold a password)."""
    if isinstance(engine, str):
        return InvalidConfigError(
            "ContextEngineSaver(...) takes a ContextEngine, not a connection "
            "string; for Redis use "
            'ContextEngineSaver.from_conn_string("redis://host:6379/0") '
            "(as `with` or `async with`), or ContextEngineSaver() for the "
            "embedded memory store"
        )
    return InvalidConfigError(
        "ContextEngineSaver(engine) needs a ContextEngine or None, got "
        f"{type(engine).__name__}; for Redis use "
        'ContextEngineSaver.from_conn_string("redis://host:6379/0")'
    )


__all__ = ["ContextEngineSaver"]
