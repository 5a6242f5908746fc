"""Pure translation between LangGraph objects and store records.

Everything here is shared by the sync and async APIs: a saver method validates
and encodes with these functions, runs one store call (sync or async), then
decodes with these functions. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
from langgraph.types import Send

from aiecs_checkpoint.errors import (
    InvalidConfigError,
    InvalidNamespaceError,
    InvalidPruneStrategyError,
    InvalidThreadIdError,
    SerializationError,
)
from aiecs_checkpoint.saver import sends
from aiecs_checkpoint.saver.cache import Known, ListKey, SaverCache
from aiecs_checkpoint.saver.checks import check_run_text
from aiecs_checkpoint.saver.index import IndexKey, metadata_index
from aiecs_checkpoint.stores import refs
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

RUNTIME_KEY = "__pregel_runtime"
"""Set in the config of every put LangGraph makes while running a graph."""

DURABILITY_KEY = "__pregel_durability"
"""A run's durability mode in the config LangGraph passes to put (absent when
the default, "async")."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a config points: a thread, a namespace and maybe a checkpoint."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str | None


def _is_text(value: str) -> bool:
    """True when `value` is valid Unicode text (encodable as UTF-8: no lone
    surrogates), as every store and the archive must be able to keep it.
    ASCII (the usual id) is checked without encoding."""
    if value.isascii():
        return True
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


def check_name(value: object, what: str) -> str:
    """A task id, task path or channel name every store can keep (any str of
    valid Unicode text), or `InvalidConfigError` naming `what`."""
    if not isinstance(value, str):
        raise InvalidConfigError(
            f"{what} must be a str, got {type(value).__name__} {value!r}"
        )
    if not _is_text(value):
        raise InvalidConfigError(
            f"{what} must be valid Unicode text (no lone surrogates), got {value!r}"
        )
    return value


def parse_config(config: RunnableConfig | None, *, need_id: bool = False) -> Target:
    """Validate a RunnableConfig's `configurable` and return its target."""
    conf = config.get("configurable") if type(config) is dict else None
    if type(conf) is dict:
        # the usual shape (plain dicts of ASCII strs), checked without the
        # general path's calls; anything else falls through to it
        thread_id = conf.get("thread_id")
        ns = conf.get("checkpoint_ns", "")
        cid = conf.get("checkpoint_id")
        if (
            type(thread_id) is str
            and thread_id
            and thread_id.isascii()
            and type(ns) is str
            and ns.isascii()
            and (
                cid is None or (type(cid) is str and cid.isascii() and "\0" not in cid)
            )
            and (cid or not need_id)
        ):
            return Target(thread_id, ns, cid or None)
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
    bases: dict[str, Known | None]
    """Per list: the generation it extends (its objects are the list's head)."""


def encode_put(
    serde: SerializerProtocol,
    cache: SaverCache | None,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
    *,
    index: IndexKey,
) -> PutPlan:
    """Serialize a checkpoint; list values reuse element positions `cache` knows.

    Without a cache every list element is serialized. `index`: the key of the
    thread-index digests of the metadata (`saver.index`).
    """
    target = parse_config(config)
    cid = check_checkpoint_id(checkpoint.get("id"), "checkpoint['id']")
    for names in (checkpoint.get("channel_versions", {}), new_versions):
        for ch in names:
            check_name(ch, "a channel name")
    record = dict(checkpoint)
    record.pop("channel_values", None)
    md = get_serializable_checkpoint_metadata(config, metadata)
    manual = md.get("source") in ("update", "fork")
    conf = config.get("configurable") or {}
    # A run with LangGraph's default durability saves checkpoints in the
    # background: see `SaverCache.candidates`.
    background = RUNTIME_KEY in conf and conf.get(DURABILITY_KEY) in (None, "async")
    in_run = RUNTIME_KEY in conf
    match = (
        cache.match(target.thread_id, target.checkpoint_ns, in_run) if cache else None
    )
    dirty, predating = (
        cache.edited(target.thread_id, target.checkpoint_ns, cid)
        if cache
        else (set(), set())
    )
    values_in = checkpoint.get("channel_values", {})
    values: dict[str, tuple[Version, ValueWrite]] = {}
    lists: dict[str, list[Any]] = {}
    bases: dict[str, Known | None] = {}
    for ch, version in new_versions.items():
        if ch not in values_in:
            values[ch] = (version, (EMPTY_TYPE, b""))
            continue
        value = values_in[ch]
        if type(value) is list:
            key = (target.thread_id, target.checkpoint_ns, ch)
            gens = cache.candidates(key, manual, background) if cache else []
            write, bases[ch] = plan_list(
                serde, cache, key, gens, (dirty, predating), value, match
            )
            values[ch] = (version, write)
            lists[ch] = value
        else:
            values[ch] = (version, dumps(serde, value, f"channel {ch!r}"))
    counters = md.get("counters_since_delta_snapshot") or {}
    run_id = md.get("run_id")
    if isinstance(run_id, str):
        check_run_text(run_id)
    row = CheckpointRow(
        thread_id=target.thread_id,
        checkpoint_ns=target.checkpoint_ns,
        checkpoint_id=cid,
        parent_id=target.checkpoint_id,
        checkpoint=dumps(serde, record, "checkpoint"),
        metadata=dumps(serde, md, "metadata"),
        versions=dict(checkpoint.get("channel_versions", {})),
        run_key=run_key(run_id),
        delta_channels=tuple(sorted(counters)),
        index=metadata_index(index, md),
    )
    return PutPlan(row=row, values=values, lists=lists, bases=bases)


def _items(
    serde: SerializerProtocol,
    channel: str,
    value: list[Any],
    indexes: Iterable[int],
    match: sends.Match | None,
) -> tuple[Typed, ...]:
    dump = serde.dumps_typed
    out: list[Typed] = []
    for i in indexes:
        element = value[i]
        if type(element) is Send:
            out.append(
                dump_shared(serde, element, f"channel {channel!r} item {i}", match)
            )
            continue
        try:
            out.append(dump(element))
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize channel {channel!r} item {i} "
                f"({type(element).__name__}): {exc}"
            ) from exc
    return tuple(out)


def dump_shared(
    serde: SerializerProtocol, value: Any, what: str, match: sends.Match | None
) -> Typed:
    """`dumps`, as a ref value when `value` is a `Send` repeating stored lists."""
    cut, found = sends.split(value, match) if match is not None else (value, [])
    typed = dumps(serde, cut, what)
    return refs.wrap(typed, found) if found else typed


def plan_list(
    serde: SerializerProtocol,
    cache: SaverCache | None,
    key: ListKey,
    gens: list[tuple[Known, bool]],
    edited: tuple[set[int], set[int]],
    value: list[Any],
    match: sends.Match | None = None,
) -> tuple[ListWrite, Known | None]:
    """Serialize only the elements not already stored; also returns the
    generation whose objects are the list's head, if one is.

    Fast path: `value` starts with exactly the objects of a generation (a list
    that only grew), checked at C speed; a read generation's objects must also
    still equal what is stored. Otherwise each element reuses the position of
    the same object in the generation with the most of them, if unchanged.
    `edited`: ids to serialize again, and ids to keep as stored (see
    `SaverCache.edited`).
    """
    channel = key[2]
    dirty, predating = edited
    for known, verify in gens:
        n = len(known.elements)
        stale = known.dirty_at(value, dirty)
        if stale is None:
            continue
        if stale and not (
            cache is not None
            and not verify
            and all(_still_stored(cache, key, known, stale, value))
        ):
            continue
        if verify and n and cache is not None:
            head = value[:n]
            same = cache.unchanged(key, known.epoch, known.positions, head)
            if not all(
                s or id(v) in predating for s, v in zip(same, head, strict=True)
            ):
                break
        new_items = _items(serde, channel, value, range(n, len(value)), match)
        fresh = len(new_items)
        runs = known.slot_runs
        write = ListWrite(
            epoch=known.epoch if n else None,
            runs=(*runs, (-1, fresh)) if fresh else runs,
            new_items=new_items,
        )
        return write, known
    reuse = _reusable(cache, key, gens, edited, value)
    slots: list[int] = []
    items: list[Typed] = []
    for i, position in enumerate(reuse):
        if position is not None:
            slots.append(position)
        else:
            items += _items(serde, channel, value, (i,), match)
            slots.append(-len(items))
    reused = len(items) < len(value)
    epoch = _best(gens, value)[0].epoch if reused else None
    return ListWrite.of_slots(epoch, slots, tuple(items)), None


def _still_stored(
    cache: SaverCache,
    key: ListKey,
    known: Known,
    indexes: list[int],
    value: list[Any],
) -> list[bool]:
    """Per index: True when the element, edited since stored (a task wrote it
    again), still equals what is stored at its position, so the position is
    reused instead of storing it again (an element written back unchanged, as
    a caller writing its own list's newest element). False when this process
    no longer keeps the stored element to compare with."""
    return cache.unchanged(
        key, known.epoch, known.positions_at(indexes), [value[i] for i in indexes]
    )


def _best(gens: list[tuple[Known, bool]], value: list[Any]) -> tuple[Known, bool]:
    """The generation holding the most of `value`'s objects."""
    ids = set(map(id, value))
    return max(gens, key=lambda g: g[0].hits(ids))


def _reusable(
    cache: SaverCache | None,
    key: ListKey,
    gens: list[tuple[Known, bool]],
    edited: tuple[set[int], set[int]],
    value: list[Any],
) -> list[int | None]:
    """Per element of `value`, the stored position it can reuse, or None."""
    if not gens:
        return [None] * len(value)
    dirty, predating = edited
    known, verify = _best(gens, value)
    by_id = known.by_id()
    reuse: list[int | None] = []
    for element in value:
        hit = by_id.get(id(element))
        ok = hit is not None and hit[0] is element and id(element) not in dirty
        reuse.append(hit[1] if ok and hit is not None else None)
    if verify and cache is not None:
        matched = [i for i, p in enumerate(reuse) if p is not None]
        same = cache.unchanged(
            key,
            known.epoch,
            [reuse[i] for i in matched],  # type: ignore[misc]
            [value[i] for i in matched],
        )
        for i, ok in zip(matched, same, strict=True):
            if not ok and id(value[i]) not in predating:
                reuse[i] = None
    return reuse


def note_written(
    cache: SaverCache, target: Target, writes: Sequence[tuple[str, Any]]
) -> None:
    """A task wrote these objects: stored ones are treated as edited from now on,
    so later puts serialize them again."""
    assert target.checkpoint_id is not None
    for channel, value in writes:
        items = value if type(value) is list else (value,)
        cache.mark_edited(
            target.thread_id, target.checkpoint_ns, target.checkpoint_id, channel, items
        )


def record_lists(
    cache: SaverCache, plan: PutPlan, assigned: Mapping[str, ListValue]
) -> None:
    """After a put, remember where each list element now lives."""
    row = plan.row
    for ch, value in plan.lists.items():
        stored = assigned[ch]
        write = plan.values[ch][1]
        assert isinstance(write, ListWrite)
        key = (row.thread_id, row.checkpoint_ns, ch)
        cache.record_written(key, stored, value, write, plan.bases.get(ch))
        cache.settle(row.thread_id, row.checkpoint_ns, row.checkpoint_id, value)


def encode_writes(
    serde: SerializerProtocol,
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
    cache: SaverCache | None = None,
) -> tuple[Target, list[WriteRow]]:
    """Serialize a task's writes, all of them before anything is stored; a
    `Send` repeating a stored list refers to it (`saver.sends`)."""
    target = parse_config(config, need_id=True)
    check_name(task_id, "task_id")
    check_name(task_path, "task_path")
    for channel, _ in writes:
        check_name(channel, "a write's channel name")
    in_run = RUNTIME_KEY in (config.get("configurable") or {})
    match = (
        cache.match(target.thread_id, target.checkpoint_ns, in_run) if cache else None
    )
    rows = [
        WriteRow(
            task_id=task_id,
            idx=write_idx(channel, i),
            channel=channel,
            value=dump_shared(serde, value, f"write to channel {channel!r}", match),
            task_path=task_path,
        )
        for i, (channel, value) in enumerate(writes)
    ]
    return target, rows


class Decoder:
    """Turns stored tuples back into LangGraph objects the caller owns; list
    elements are decoded once per process and copied for each read."""

    def __init__(self, serde: SerializerProtocol, cache: SaverCache) -> None:
        self.serde = serde
        self.cache = cache

    def load(self, thread_id: str, checkpoint_ns: str, value: Typed) -> Any:
        """A stored value, its shared lists put back (`saver.sends`); raises
        `MissingElements` when the elements they point at are not kept here."""
        if not refs.is_ref(value):
            return self.serde.loads_typed(value)
        inner, found = refs.unwrap(value)
        decoded = self.serde.loads_typed(inner)
        parts = [
            (
                r,
                self.cache.shared(
                    (thread_id, checkpoint_ns, r.channel), r.epoch, r.runs
                ),
            )
            for r in found
        ]
        return sends.join(decoded, parts)

    def value(self, key: ListKey, resolved: ResolvedValue) -> Any:
        """A channel value; list elements come from the cache, copied."""
        if not isinstance(resolved, ListItems):
            return self.serde.loads_typed(resolved)
        return self.cache.read_list(
            key,
            resolved.epoch,
            resolved.runs,
            resolved.items,
            resolved.held,
            lambda item: self.load(key[0], key[1], item),
        )

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
                row.thread_id,
                row.checkpoint_ns,
                [w for w in stored.writes if w.channel != RECORD_CHANNEL],
            ),
        )

    def writes(
        self, thread_id: str, checkpoint_ns: str, rows: Sequence[WriteRow]
    ) -> list[PendingWrite]:
        """Pending writes, in the order the store returned them."""
        return [
            (w.task_id, w.channel, self.load(thread_id, checkpoint_ns, w.value))
            for w in rows
        ]

    def delta_history(
        self, target: Target, history: DeltaHistory | None, channels: Sequence[str]
    ) -> dict[str, DeltaChannelHistory]:
        """The `get_delta_channel_history` result for every requested channel."""
        out: dict[str, DeltaChannelHistory] = {}
        for ch in channels:
            rows = history.writes.get(ch, []) if history else []
            entry: DeltaChannelHistory = {
                "writes": self.writes(target.thread_id, target.checkpoint_ns, rows)
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
