"""ContextEngineSaver: a LangGraph checkpointer backed by a ContextEngine.

Each public method, sync or async, is the same three steps: validate and encode
with the pure functions of `codec`, make one store call, decode with `codec`.
Only the store call differs between the sync and async twins, so their behaviour
cannot drift apart.
"""

from __future__ import annotations

import builtins
import random
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
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
    get_checkpoint_id,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from aiecs_checkpoint.domain.task_context import TaskContext
from aiecs_checkpoint.engine import ContextEngine
from aiecs_checkpoint.errors import InvalidConfigError
from aiecs_checkpoint.saver.cache import DecodeCache, ElementIndex, OmittedElement
from aiecs_checkpoint.saver.codec import (
    Decoder,
    PutPlan,
    check_strategy,
    check_thread_id,
    config_for,
    dumps,
    encode_put,
    encode_writes,
    list_scope,
    matches,
    note_written,
    parse_config,
    record_lists,
)
from aiecs_checkpoint.saver.threads import ThreadListing
from aiecs_checkpoint.stores.base import (
    AsyncHeldReads,
    Held,
    HeldReads,
    StaleListBase,
    StoredTuple,
    WriteRow,
    run_key,
)
from aiecs_checkpoint.tracking import records
from aiecs_checkpoint.tracking.sessions import SessionTracker

DURABILITY_KEY = "__pregel_durability"
"""Where LangGraph keeps a run's durability mode in the config it passes to put."""


class ContextEngineSaver(ThreadListing, BaseCheckpointSaver[str]):
    """LangGraph checkpointer storing threads in a `ContextEngine`.

    `ContextEngineSaver()` uses the embedded in-process memory store: no server and
    no configuration. One instance serves the sync and the async graph APIs.

    Args:
        engine: The engine to store into; a new memory-backed engine by default.
        serde: Serializer for everything stored, metadata included (for example an
            `EncryptedSerializer`, so nothing is kept in plaintext).
        track_sessions: Keep the engine session whose id is the thread id in
            step with each run (requests, processing time, errors, user id).
        mirror_messages: With `track_sessions`, also append the messages of a
            `messages` channel to the thread's conversation history, once each.
    """

    def __init__(
        self,
        engine: ContextEngine | None = None,
        *,
        serde: SerializerProtocol | None = None,
        track_sessions: bool = False,
        mirror_messages: bool = False,
    ) -> None:
        super().__init__(serde=serde)
        self.engine = engine if engine is not None else ContextEngine(serde=self.serde)
        if mirror_messages and not track_sessions:
            raise InvalidConfigError("mirror_messages=True needs track_sessions=True")
        self._sessions = (
            SessionTracker(self.engine, mirror_messages=mirror_messages)
            if track_sessions
            else None
        )
        self._records = records.RecordBuffer()
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._index = ElementIndex()
        self._cache = DecodeCache()
        self._decoder = Decoder(self.serde, self._index, self._cache)

    def with_allowlist(
        self, extra_allowlist: Collection[tuple[str, ...]]
    ) -> ContextEngineSaver:
        """A clone sharing the storage, with a stricter msgpack allowlist.

        The clone gets its own caches, so nothing decoded under the looser
        allowlist is handed out by it.
        """
        clone = super().with_allowlist(extra_allowlist)
        if clone is not self:
            assert isinstance(clone, ContextEngineSaver)
            clone._reset_caches()
        return clone

    # -- context management ----------------------------------------------------

    @classmethod
    def from_conn_string(
        cls,
        conn_string: str,
        *,
        serde: SerializerProtocol | None = None,
        **engine_options: Any,
    ) -> ContextEngineSaver:
        """A saver on Redis at `conn_string`; use it as `with` or `async with`.

        `engine_options` are `ContextEngine`'s (key_prefix, ttl, cluster, fallback).
        Entering connects (and detects a cluster); leaving closes the connections.
        """
        engine = ContextEngine(redis_url=conn_string, **engine_options)
        return cls(engine, serde=serde)

    @classmethod
    def from_env(
        cls, *, serde: SerializerProtocol | None = None, **engine_options: Any
    ) -> ContextEngineSaver:
        """A saver configured from `REDIS_URL` / `REDIS_HOST`... (memory if unset)."""
        return cls(ContextEngine.from_env(**engine_options), serde=serde)

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

    # -- versions --------------------------------------------------------------

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

    # -- put -------------------------------------------------------------------

    def _plan(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
        reuse: bool = True,
    ) -> PutPlan:
        return encode_put(
            self.serde,
            self._index if reuse else None,
            self._cache,
            config,
            checkpoint,
            metadata,
            new_versions,
        )

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint; unchanged list elements are not serialized again."""
        plan = self._plan(config, checkpoint, metadata, new_versions)
        store = self.engine.checkpoints
        try:
            assigned = store.put_checkpoint(plan.row, plan.values)
        except StaleListBase:
            plan = self._plan(config, checkpoint, metadata, new_versions, reuse=False)
            assigned = store.put_checkpoint(plan.row, plan.values)
        row, leftovers = plan.row, self._leftover_records(config, plan, metadata)
        if leftovers:
            with self._records_kept(row.thread_id, leftovers):
                store.put_writes(
                    row.thread_id,
                    row.checkpoint_ns,
                    row.checkpoint_id,
                    [w.row for w in leftovers],
                )
        if self._sessions is not None:
            self._sessions.on_put(config, checkpoint, metadata)
        return self._after_put(plan, assigned)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async `put`."""
        plan = self._plan(config, checkpoint, metadata, new_versions)
        store = self.engine.acheckpoints
        try:
            assigned = await store.put_checkpoint(plan.row, plan.values)
        except StaleListBase:
            plan = self._plan(config, checkpoint, metadata, new_versions, reuse=False)
            assigned = await store.put_checkpoint(plan.row, plan.values)
        row, leftovers = plan.row, self._leftover_records(config, plan, metadata)
        if leftovers:
            with self._records_kept(row.thread_id, leftovers):
                await store.put_writes(
                    row.thread_id,
                    row.checkpoint_ns,
                    row.checkpoint_id,
                    [w.row for w in leftovers],
                )
        if self._sessions is not None:
            await self._sessions.aon_put(config, checkpoint, metadata)
        return self._after_put(plan, assigned)

    def _leftover_records(
        self, config: RunnableConfig, plan: PutPlan, metadata: CheckpointMetadata
    ) -> builtins.list[records.Waiting]:
        """Records of this graph's finished steps whose tasks' writes were never
        saved on their own (cancelled tasks); with `durability="exit"` (this is
        the one checkpoint saved), those of its subgraphs too."""
        step = metadata.get("step")
        if not isinstance(step, int):
            return []
        row = plan.row
        at_exit = (config.get("configurable") or {}).get(DURABILITY_KEY) == "exit"
        return self._records.take_finished(
            row.thread_id, row.checkpoint_ns, step, at_exit
        )

    @contextmanager
    def _records_kept(
        self, thread_id: str, taken: builtins.list[records.Waiting]
    ) -> Iterator[None]:
        """Put taken records back in the buffer when their store call fails, so
        they are saved with the retried call instead of lost."""
        try:
            yield
        except BaseException:
            self._records.put_back(thread_id, taken)
            raise

    def _after_put(self, plan: PutPlan, assigned: Mapping[str, Any]) -> RunnableConfig:
        record_lists(self._index, plan, assigned)
        row = plan.row
        return config_for(row.thread_id, row.checkpoint_ns, row.checkpoint_id)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes (special writes overwrite, regular are first-wins)."""
        t, rows = encode_writes(self.serde, config, writes, task_id, task_path)
        note_written(self._index, self._cache, t, writes)
        assert t.checkpoint_id is not None
        taken = self._records.take(t.thread_id, task_id)
        with self._records_kept(t.thread_id, taken):
            self.engine.checkpoints.put_writes(
                t.thread_id,
                t.checkpoint_ns,
                t.checkpoint_id,
                rows + records.rows(taken),
            )
        if self._sessions is not None:
            self._sessions.on_writes(config, writes, task_id)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async `put_writes`."""
        t, rows = encode_writes(self.serde, config, writes, task_id, task_path)
        note_written(self._index, self._cache, t, writes)
        assert t.checkpoint_id is not None
        taken = self._records.take(t.thread_id, task_id)
        with self._records_kept(t.thread_id, taken):
            await self.engine.acheckpoints.put_writes(
                t.thread_id,
                t.checkpoint_ns,
                t.checkpoint_id,
                rows + records.rows(taken),
            )
        if self._sessions is not None:
            await self._sessions.aon_writes(config, writes, task_id)

    # -- task records (tracking) -----------------------------------------------

    def record(
        self, kind: str, data: Mapping[str, Any], stamp: records.Stamp
    ) -> dict[str, Any]:
        """Buffer a record of the running task until its writes are saved.

        Serialized now, so a value the serializer rejects fails in the node
        (`SerializationError`) instead of failing the task's save later.
        """
        record = records.new_record(kind, data, stamp)
        value = dumps(self.serde, record, f"{kind} record")
        self._records.add(stamp, records.record_row(record, value, stamp.run_id))
        return record

    def _task_context(
        self, thread_id: str, rows: builtins.list[WriteRow], include_unsaved: bool
    ) -> TaskContext:
        if include_unsaved:
            rows += self._records.waiting(thread_id)
        found = [self.serde.loads_typed(w.value) for w in rows]
        return records.task_context(thread_id, found)

    def get_task_context(
        self, thread_id: str, *, include_unsaved: bool = False
    ) -> TaskContext:
        """The thread's TaskContext, rebuilt from what its graph nodes recorded
        (model usage, file operations, context updates), oldest first.

        `include_unsaved` adds records this process buffered for tasks whose
        writes are not saved yet (what a node sees while it runs).
        """
        thread_id = check_thread_id(thread_id)
        rows = self.engine.checkpoints.thread_records(thread_id)
        return self._task_context(thread_id, rows, include_unsaved)

    async def aget_task_context(
        self, thread_id: str, *, include_unsaved: bool = False
    ) -> TaskContext:
        """Async `get_task_context`."""
        thread_id = check_thread_id(thread_id)
        rows = await self.engine.acheckpoints.thread_records(thread_id)
        return self._task_context(thread_id, rows, include_unsaved)

    # -- get and list ----------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by the config, or the latest: O(1) either way.

        List elements already decoded here are not fetched again (`DecodeCache`);
        if the cache dropped some meanwhile, the checkpoint is fetched whole.
        """
        t = parse_config(config)
        store = self.engine.checkpoints
        if isinstance(store, HeldReads):
            held = self._cache.held(t.thread_id, t.checkpoint_ns)
            if held:
                stored = store.get_held(
                    t.thread_id, t.checkpoint_ns, t.checkpoint_id, held
                )
                if stored is None:
                    return None
                try:
                    return self._decoder.tuple(stored)
                except OmittedElement:
                    pass
        stored = store.get(t.thread_id, t.checkpoint_ns, t.checkpoint_id)
        return self._decoder.tuple(stored) if stored is not None else None

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async `get_tuple`."""
        t = parse_config(config)
        store = self.engine.acheckpoints
        if isinstance(store, AsyncHeldReads):
            held = self._cache.held(t.thread_id, t.checkpoint_ns)
            if held:
                stored = await store.get_held(
                    t.thread_id, t.checkpoint_ns, t.checkpoint_id, held
                )
                if stored is None:
                    return None
                try:
                    return self._decoder.tuple(stored)
                except OmittedElement:
                    pass
        stored = await store.get(t.thread_id, t.checkpoint_ns, t.checkpoint_id)
        return self._decoder.tuple(stored) if stored is not None else None

    def _accept(
        self, stored: StoredTuple, only_id: str | None, filter: Mapping[str, Any] | None
    ) -> CheckpointTuple | None:
        """The listed checkpoint as a tuple, None when filtered out.

        Raises `OmittedElement` when the store left out elements the cache has
        dropped since: the caller fetches that checkpoint whole (`_refetch`).
        """
        if only_id is not None and stored.row.checkpoint_id != only_id:
            return None
        metadata = self._decoder.metadata(stored)
        if not matches(metadata, filter):
            return None
        return self._decoder.tuple(stored, metadata)

    def _held_for(self, checkpoint_ns: str | None) -> Callable[[str], Held]:
        return lambda thread_id: self._cache.held(thread_id, checkpoint_ns)

    @staticmethod
    def _before_id(before: RunnableConfig | None) -> str | None:
        return get_checkpoint_id(before) if before else None

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
        thread_id, ns, only_id = list_scope(config)
        remaining = limit
        if remaining is not None and remaining <= 0:
            return
        store = self.engine.checkpoints
        before_id = self._before_id(before)
        stream = (
            store.list_held(thread_id, ns, before_id, self._held_for(ns))
            if isinstance(store, HeldReads)
            else store.list(thread_id, ns, before_id)
        )
        for stored in stream:
            try:
                tup = self._accept(stored, only_id, filter)
            except OmittedElement:
                tup = self._refetch(stored)
            if tup is None:
                continue
            yield tup
            if remaining is not None:
                remaining -= 1
                if remaining <= 0:
                    return

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async `list`."""
        thread_id, ns, only_id = list_scope(config)
        remaining = limit
        if remaining is not None and remaining <= 0:
            return
        store = self.engine.acheckpoints
        before_id = self._before_id(before)
        stream = (
            store.list_held(thread_id, ns, before_id, self._held_for(ns))
            if isinstance(store, AsyncHeldReads)
            else store.list(thread_id, ns, before_id)
        )
        async for stored in stream:
            try:
                tup = self._accept(stored, only_id, filter)
            except OmittedElement:
                tup = await self._arefetch(stored)
            if tup is None:
                continue
            yield tup
            if remaining is not None:
                remaining -= 1
                if remaining <= 0:
                    return

    def _refetch(self, stored: StoredTuple) -> CheckpointTuple | None:
        """A listed checkpoint fetched again with every list element (None when
        it was deleted meanwhile)."""
        row = stored.row
        store = self.engine.checkpoints
        whole = store.get(row.thread_id, row.checkpoint_ns, row.checkpoint_id)
        return self._decoder.tuple(whole) if whole is not None else None

    async def _arefetch(self, stored: StoredTuple) -> CheckpointTuple | None:
        """Async `_refetch`."""
        row = stored.row
        store = self.engine.acheckpoints
        whole = await store.get(row.thread_id, row.checkpoint_ns, row.checkpoint_id)
        return self._decoder.tuple(whole) if whole is not None else None

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Seed and on-path writes per channel, from one walk inside the store."""
        if not channels:
            return {}
        t = parse_config(config)
        history = self.engine.checkpoints.delta_history(
            t.thread_id, t.checkpoint_ns, t.checkpoint_id, channels
        )
        return self._decoder.delta_history(t, history, channels)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Async `get_delta_channel_history`."""
        if not channels:
            return {}
        t = parse_config(config)
        history = await self.engine.acheckpoints.delta_history(
            t.thread_id, t.checkpoint_ns, t.checkpoint_id, channels
        )
        return self._decoder.delta_history(t, history, channels)

    # -- deleting, copying, pruning --------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of a thread."""
        self.engine.checkpoints.delete_thread(check_thread_id(thread_id))
        self._index.forget_thread(thread_id)
        self._records.forget(thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async `delete_thread`."""
        await self.engine.acheckpoints.delete_thread(check_thread_id(thread_id))
        self._index.forget_thread(thread_id)
        self._records.forget(thread_id)

    @staticmethod
    def _run_keys(run_ids: Sequence[str]) -> builtins.list[str]:
        return [k for k in map(run_key, run_ids) if k is not None]

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints and writes of the given runs.

        Surviving checkpoints that used DeltaChannel history from the deleted
        ones keep a frozen copy of it, so they still rebuild the same state.
        """
        keys = self._run_keys(run_ids)
        self.engine.checkpoints.delete_runs(keys)
        self._forget_run_records(keys)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async `delete_for_runs`."""
        keys = self._run_keys(run_ids)
        await self.engine.acheckpoints.delete_runs(keys)
        self._forget_run_records(keys)

    def _forget_run_records(self, keys: builtins.list[str]) -> None:
        """Buffered records of deleted runs are deleted with them."""
        for thread_id in self._records.threads():
            self._records.forget(thread_id, set(keys))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every namespace of a thread, with full parent chains and writes."""
        src, dst = check_thread_id(source_thread_id), check_thread_id(target_thread_id)
        if src != dst:
            self.engine.checkpoints.copy_thread(src, dst)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async `copy_thread`."""
        src, dst = check_thread_id(source_thread_id), check_thread_id(target_thread_id)
        if src != dst:
            await self.engine.acheckpoints.copy_thread(src, dst)

    @staticmethod
    def _prune_args(
        thread_ids: Sequence[str], strategy: str
    ) -> tuple[builtins.list[str], bool]:
        keep_latest = check_strategy(strategy)
        return [check_thread_id(t) for t in thread_ids], keep_latest

    def prune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest"
    ) -> None:
        """Keep the latest checkpoint per namespace (`keep_latest`) or delete all.

        `keep_latest` freezes the DeltaChannel history the kept checkpoint needs
        before dropping its ancestors, so its state is rebuilt unchanged.
        """
        threads, keep_latest = self._prune_args(thread_ids, strategy)
        self.engine.checkpoints.prune(threads, keep_latest)
        for t in threads:
            self._index.forget_thread(t)
            if not keep_latest:
                self._records.forget(t)

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest"
    ) -> None:
        """Async `prune`."""
        threads, keep_latest = self._prune_args(thread_ids, strategy)
        await self.engine.acheckpoints.prune(threads, keep_latest)
        for t in threads:
            self._index.forget_thread(t)
            if not keep_latest:
                self._records.forget(t)


__all__ = ["ContextEngineSaver"]
