"""Pure translation between LangGraph objects and store records.

Everything here is shared by the sync and async APIs: a saver method validates
and encodes with these functions, runs one store call (sync or async), then
decodes with these functions. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from aiecs_checkpoint.errors import (
    InvalidConfigError,
    InvalidNamespaceError,
    InvalidPruneStrategyError,
    InvalidThreadIdError,
    SerializationError,
)
from aiecs_checkpoint.saver.cache import DecodeCache, ElementIndex, Known, ListKey
from aiecs_checkpoint.stores.records import (
    EMPTY_TYPE,
    RECORD_CHANNEL,
    CheckpointRow,
    DeltaHistory,
    ListItems,
    ListValue,
    ListWrite,
    ResolvedValue,
    StoredTuple,
    Typed,
    ValueWrite,
    Version,
    WriteRow,
    run_key,
    write_idx,
)

PRUNE_STRATEGIES = ("keep_latest", "delete")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a config points: a thread, a namespace and maybe a checkpoint."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str | None


def _is_text(value: str) -> bool:
    """True when `value` is valid Unicode text (encodable as UTF-8: no lone
    surrogates), as every store and the archive must be able to keep it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_thread_id(thread_id: object) -> str:
    """A valid thread id, or `InvalidThreadIdError` saying what is wrong with it."""
    if not isinstance(thread_id, str):
        raise InvalidThreadIdError(
            f"thread_id must be a str, got {type(thread_id).__name__} {thread_id!r}"
        )
    if not thread_id:
        raise InvalidThreadIdError("thread_id must not be empty")
    if not _is_text(thread_id):
        raise InvalidThreadIdError(
            f"thread_id must be valid Unicode text (no lone surrogates), "
            f"got {thread_id!r}"
        )
    return thread_id


def check_checkpoint_id(checkpoint_id: object, what: str) -> str:
    """A valid checkpoint id (non-empty text without NUL), or
    `InvalidConfigError` naming `what`."""
    if not isinstance(checkpoint_id, str) or not checkpoint_id:
        raise InvalidConfigError(
            f"{what} must be a non-empty str, got {checkpoint_id!r}"
        )
    if "\0" in checkpoint_id or not _is_text(checkpoint_id):
        raise InvalidConfigError(
            f"{what} must be valid Unicode text without NUL characters, "
            f"got {checkpoint_id!r}"
        )
    return checkpoint_id


def parse_config(config: RunnableConfig | None, *, need_id: bool = False) -> Target:
    """Validate a RunnableConfig's `configurable` and return its target."""
    if not isinstance(config, Mapping):
        raise InvalidConfigError(
            f"config must be a mapping with a 'configurable' key, got {config!r}"
        )
    conf = config.get("configurable")
    if not isinstance(conf, Mapping) or "thread_id" not in conf:
        raise InvalidThreadIdError(
            "config['configurable']['thread_id'] is required: pass "
            '{"configurable": {"thread_id": "..."}} to invoke/stream/get_state'
        )
    thread_id = check_thread_id(conf["thread_id"])
    ns = conf.get("checkpoint_ns", "")
    if not isinstance(ns, str):
        raise InvalidNamespaceError(
            f"checkpoint_ns must be a str, got {type(ns).__name__} {ns!r}"
        )
    if not _is_text(ns):
        raise InvalidNamespaceError(
            f"checkpoint_ns must be valid Unicode text (no lone surrogates), got {ns!r}"
        )
    cid = conf.get("checkpoint_id")
    if cid is not None and not isinstance(cid, str):
        raise InvalidConfigError(
            f"checkpoint_id must be a str, got {type(cid).__name__} {cid!r}"
        )
    if cid:
        check_checkpoint_id(cid, "checkpoint_id")
    if need_id and not cid:
        raise InvalidConfigError(
            "config['configurable']['checkpoint_id'] is required here "
            "(use the config returned by put)"
        )
    return Target(thread_id, ns, cid or None)


def list_scope(
    config: RunnableConfig | None,
) -> tuple[str | None, str | None, str | None]:
    """(thread id, namespace, checkpoint id) a `list` call is restricted to.

    `None` config lists every thread; a config without `checkpoint_ns` lists every
    namespace of the thread; `checkpoint_ns=""` lists the root namespace only.
    """
    if config is None:
        return None, None, None
    target = parse_config(config)
    conf = config["configurable"]
    ns = target.checkpoint_ns if "checkpoint_ns" in conf else None
    return target.thread_id, ns, target.checkpoint_id


def check_strategy(strategy: str) -> bool:
    """True for keep_latest, False for delete; anything else is an error."""
    if strategy not in PRUNE_STRATEGIES:
        raise InvalidPruneStrategyError(
            f"unknown prune strategy {strategy!r}; use one of {PRUNE_STRATEGIES}"
        )
    return strategy == "keep_latest"


def dumps(serde: SerializerProtocol, value: Any, what: str) -> Typed:
    """Serialize, turning any failure into `SerializationError` naming `what`."""
    try:
        return serde.dumps_typed(value)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {what} ({type(value).__name__}): {exc}"
        ) from exc


def config_for(
    thread_id: str, checkpoint_ns: str, checkpoint_id: str
) -> RunnableConfig:
    """The canonical config of a stored checkpoint."""
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


@dataclass(frozen=True, slots=True)
class PutPlan:
    """A checkpoint ready for the store, plus the list values to index afterwards."""

    row: CheckpointRow
    values: dict[str, tuple[Version, ValueWrite]]
    lists: dict[str, list[Any]]


def encode_put(
    serde: SerializerProtocol,
    index: ElementIndex | None,
    cache: DecodeCache,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
) -> PutPlan:
    """Serialize a checkpoint; list values reuse element positions `index` knows.

    Without an index every list element is serialized. Manual state updates
    (`update_state`, forks) never reuse positions: their values come from the
    caller, who may have edited objects it read.
    """
    target = parse_config(config)
    cid = check_checkpoint_id(checkpoint.get("id"), "checkpoint['id']")
    record = {k: v for k, v in checkpoint.items() if k != "channel_values"}
    md = get_serializable_checkpoint_metadata(config, metadata)
    manual = md.get("source") in ("update", "fork")
    dirty = (
        index.edited(target.thread_id, target.checkpoint_ns, cid) if index else set()
    )
    values_in = checkpoint.get("channel_values", {})
    values: dict[str, tuple[Version, ValueWrite]] = {}
    lists: dict[str, list[Any]] = {}
    for ch, version in new_versions.items():
        if ch not in values_in:
            values[ch] = (version, (EMPTY_TYPE, b""))
            continue
        value = values_in[ch]
        if type(value) is list:
            key = (target.thread_id, target.checkpoint_ns, ch)
            known = index.lookup(key) if index else None
            if known is not None:
                edited = set(map(id, value)) if manual else dirty
                cache.forget(key, known.epoch, known.positions_of(edited))
            if manual:
                known = None
            values[ch] = (version, plan_list(serde, known, dirty, ch, value))
            lists[ch] = value
        else:
            values[ch] = (version, dumps(serde, value, f"channel {ch!r}"))
    counters = md.get("counters_since_delta_snapshot") or {}
    row = CheckpointRow(
        thread_id=target.thread_id,
        checkpoint_ns=target.checkpoint_ns,
        checkpoint_id=cid,
        parent_id=target.checkpoint_id,
        checkpoint=dumps(serde, record, "checkpoint"),
        metadata=dumps(serde, md, "metadata"),
        versions=dict(checkpoint.get("channel_versions", {})),
        run_key=run_key(md.get("run_id")),
        delta_channels=tuple(sorted(counters)),
    )
    return PutPlan(row=row, values=values, lists=lists)


def plan_list(
    serde: SerializerProtocol,
    known: Known | None,
    dirty: set[int],
    channel: str,
    value: list[Any],
) -> ListWrite:
    """Serialize only the elements not already stored (per `known`)."""
    if known is not None and known.extended_by(value, dirty):
        n = len(known.elements)
        new_items = tuple(
            dumps(serde, value[i], f"channel {channel!r} item {i}")
            for i in range(n, len(value))
        )
        fresh = len(new_items)
        return ListWrite(
            epoch=known.epoch if n else None,
            slots=(*known.positions, *range(-1, -fresh - 1, -1)),
            new_items=new_items,
            runs=(*known.slot_runs, (-1, fresh)) if fresh else known.slot_runs,
        )
    reuse = known.reuse(value, dirty) if known is not None else [None] * len(value)
    slots: list[int] = []
    items: list[Typed] = []
    for i, position in enumerate(reuse):
        if position is not None:
            slots.append(position)
        else:
            items.append(dumps(serde, value[i], f"channel {channel!r} item {i}"))
            slots.append(-len(items))
    reused = len(items) < len(value)
    return ListWrite(
        epoch=known.epoch if reused and known is not None else None,
        slots=tuple(slots),
        new_items=tuple(items),
    )


def note_written(
    index: ElementIndex,
    cache: DecodeCache,
    target: Target,
    writes: Sequence[tuple[str, Any]],
) -> None:
    """A task wrote these objects: stored ones are treated as edited from now on.

    Later puts serialize them again, and their cached decodes are dropped at
    once, so a read made before the next checkpoint (an interrupt, a failed
    sibling, `get_state`) returns the stored value, not the object the task
    may have edited in place.
    """
    assert target.checkpoint_id is not None
    for channel, value in writes:
        items = value if type(value) is list else (value,)
        hit = index.mark_edited(
            target.thread_id, target.checkpoint_ns, target.checkpoint_id, channel, items
        )
        if hit is not None:
            key = (target.thread_id, target.checkpoint_ns, channel)
            cache.forget(key, hit[0], hit[1])


def record_lists(
    index: ElementIndex, plan: PutPlan, assigned: Mapping[str, ListValue]
) -> None:
    """After a put, remember where each list element now lives."""
    row = plan.row
    for ch, value in plan.lists.items():
        stored = assigned[ch]
        key = (row.thread_id, row.checkpoint_ns, ch)
        index.record(key, stored.epoch, value, stored.runs)
        index.settle(row.thread_id, row.checkpoint_ns, row.checkpoint_id, value)


def encode_writes(
    serde: SerializerProtocol,
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
) -> tuple[Target, list[WriteRow]]:
    """Serialize a task's writes, all of them before anything is stored."""
    target = parse_config(config, need_id=True)
    rows = [
        WriteRow(
            task_id=task_id,
            idx=write_idx(channel, i),
            channel=channel,
            value=dumps(serde, value, f"write to channel {channel!r}"),
            task_path=task_path,
        )
        for i, (channel, value) in enumerate(writes)
    ]
    return target, rows


class Decoder:
    """Turns stored tuples back into LangGraph objects, decoding list elements once."""

    def __init__(
        self, serde: SerializerProtocol, index: ElementIndex, cache: DecodeCache
    ) -> None:
        self.serde = serde
        self.index = index
        self.cache = cache

    def value(self, key: ListKey, resolved: ResolvedValue) -> Any:
        """A channel value; list elements come from the decode cache."""
        if not isinstance(resolved, ListItems):
            return self.serde.loads_typed(resolved)
        out = self.cache.decode(
            key,
            resolved.epoch,
            resolved.runs,
            resolved.items,
            resolved.held,
            self.serde.loads_typed,
        )
        self.index.record(key, resolved.epoch, out, resolved.runs)
        return out

    def metadata(self, stored: StoredTuple) -> CheckpointMetadata:
        """The checkpoint's metadata."""
        return cast(CheckpointMetadata, self.serde.loads_typed(stored.row.metadata))

    def tuple(
        self, stored: StoredTuple, metadata: CheckpointMetadata | None = None
    ) -> CheckpointTuple:
        """The full CheckpointTuple of a stored checkpoint."""
        row = stored.row
        checkpoint = cast(Checkpoint, self.serde.loads_typed(row.checkpoint))
        checkpoint["channel_values"] = {
            ch: self.value((row.thread_id, row.checkpoint_ns, ch), v)
            for ch, v in stored.values.items()
        }
        return CheckpointTuple(
            config=config_for(row.thread_id, row.checkpoint_ns, row.checkpoint_id),
            checkpoint=checkpoint,
            metadata=metadata if metadata is not None else self.metadata(stored),
            parent_config=(
                config_for(row.thread_id, row.checkpoint_ns, row.parent_id)
                if row.parent_id
                else None
            ),
            pending_writes=self.writes(
                [w for w in stored.writes if w.channel != RECORD_CHANNEL]
            ),
        )

    def writes(self, rows: Sequence[WriteRow]) -> list[PendingWrite]:
        """Pending writes, in the order the store returned them."""
        return [(w.task_id, w.channel, self.serde.loads_typed(w.value)) for w in rows]

    def delta_history(
        self, target: Target, history: DeltaHistory | None, channels: Sequence[str]
    ) -> dict[str, DeltaChannelHistory]:
        """The `get_delta_channel_history` result for every requested channel."""
        out: dict[str, DeltaChannelHistory] = {}
        for ch in channels:
            entry: DeltaChannelHistory = {
                "writes": self.writes(history.writes.get(ch, [])) if history else []
            }
            if history is not None and ch in history.seeds:
                key = (target.thread_id, target.checkpoint_ns, ch)
                entry["seed"] = self.value(key, history.seeds[ch])
            out[ch] = entry
        return out


def matches(metadata: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    """True when every filter key is present in metadata with an equal value."""
    if not filter:
        return True
    return all(k in metadata and metadata[k] == v for k, v in filter.items())
