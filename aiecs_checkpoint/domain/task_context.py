"""TaskContext: one task's identity, history, tracked files and models, and resources.

Compatible with the original `TaskContext` API (`add_context_update`,
`add_resource`, `track_file_operation`, `track_model_usage`, `optimize_context`,
`to_dict`, sync and async `with`, `task_context`, `build_context`), with its
defects fixed: `to_dict`/`from_dict` lose nothing, timestamps are aware UTC
datetimes, any data (bytes, objects) can be optimized and persisted, history
files are written atomically under names a chat id cannot steer out of
`task_dir`, and nothing touches the filesystem unless persistence is enabled.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, cast

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from aiecs_checkpoint.config import Settings
from aiecs_checkpoint.domain.models import parse_timestamp, utc_now
from aiecs_checkpoint.errors import InvalidRecordError, SerializationError

logger = logging.getLogger(__name__)

DEFAULT_USER_ID = "anonymous"
DEFAULT_CHAT_ID = "none"

HISTORY_MAGIC = b"aiecs-context-history/1 "
"""First bytes of a history file, followed by the serde type tag and a newline."""

_SAFE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_LEGACY_NAME_CHARS = _SAFE_NAME_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_MAX_ENCODED_ID = 150


class FileOperation(TypedDict):
    """A `file_tracker` entry: the last operation on a path."""

    operation: str
    source: str
    timestamp: datetime
    state: str


class RecordStamp(TypedDict):
    """Where and when a graph node recorded an entry (see `tracking.records`)."""

    thread_id: str
    checkpoint_ns: str
    node: str | None
    task_id: str
    step: int | None
    run_id: str | None
    time: datetime


class ModelUsage(TypedDict):
    """A `model_tracker` entry: one model call.

    Every entry has every key, whoever wrote it (`track_model_usage`,
    `ModelUsageTracker`, `TaskContext.track_model_usage`, `from_dict`); a figure
    that was not reported is None. `stamp` is None for entries not recorded by a
    graph node (`TaskContext.track_model_usage` called directly).
    """

    model_id: str
    provider_id: str
    mode: str
    timestamp: datetime
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    latency_ms: float | None
    error: str | None
    stamp: RecordStamp | None


MODEL_USAGE_FIGURES = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "latency_ms",
    "error",
    "stamp",
)
"""The `ModelUsage` keys that may be None (not reported)."""


@dataclass(frozen=True)
class ContextUpdate:
    """One entry of a context's history (message, metadata, resource, ...).

    `timestamp` is an aware UTC datetime (epoch seconds and ISO strings are
    converted); `data` may be any value and is kept as given.
    """

    timestamp: datetime
    update_type: str
    data: Any
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "timestamp", parse_timestamp(self.timestamp, "timestamp")
        )
        if not isinstance(self.update_type, str):
            raise InvalidRecordError(
                f"update_type must be a string, got {self.update_type!r}"
            )
        metadata: Any = self.metadata
        if metadata is None:
            object.__setattr__(self, "metadata", {})
        elif not isinstance(metadata, dict):
            if not isinstance(metadata, Mapping):
                raise InvalidRecordError(f"metadata must be a dict, got {metadata!r}")
            object.__setattr__(self, "metadata", dict(metadata))

    def to_dict(self) -> dict[str, Any]:
        """Dict with an ISO 8601 timestamp; `data` and `metadata` as they are."""
        return {
            "timestamp": self.timestamp.isoformat(),
            "update_type": self.update_type,
            "data": self.data,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContextUpdate:
        """Inverse of `to_dict`; also reads the original's float timestamps."""
        if not isinstance(data, Mapping):
            raise InvalidRecordError(
                f"ContextUpdate.from_dict needs a mapping, got {data!r}"
            )
        missing = [k for k in ("timestamp", "update_type", "data") if k not in data]
        if missing:
            raise InvalidRecordError(
                f"ContextUpdate.from_dict: missing field {missing[0]!r}"
            )
        return cls(
            timestamp=data["timestamp"],
            update_type=data["update_type"],
            data=data["data"],
            metadata=data.get("metadata") or {},
        )


def history_file_name(chat_id: str) -> str:
    """The history file name for a chat id: one plain path component, always.

    Bytes outside `[a-z0-9_-]` are percent-encoded (upper case too, so ids that
    differ only in case stay apart on case-insensitive filesystems); an encoding
    longer than 150 characters is replaced by `~` and its SHA-256. The mapping
    is injective, so two chats never share a file.
    """
    raw = chat_id.encode("utf-8", "surrogatepass")
    encoded = "".join(
        chr(b) if chr(b) in _SAFE_NAME_CHARS else f"%{b:02X}" for b in raw
    )
    if len(encoded) > _MAX_ENCODED_ID:
        encoded = "~" + hashlib.sha256(raw).hexdigest()
    return f"context_history_{encoded}.msgpack"


def _inside(base: Path, name: str) -> Path:
    """`base / name` resolved, refusing anything that is not directly in `base`."""
    root = base.resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise InvalidRecordError(f"history file {name!r} would resolve outside {root}")
    return path


def _canonical(value: Any, active: set[int]) -> Any:
    """A hashable, type-tagged form of `value` for duplicate detection.

    Works for any value: containers are walked (cycles cut), other objects are
    compared by type and repr, so distinct objects with identity reprs never merge.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return (
            type(value).__name__,
            value if not isinstance(value, float) else repr(value),
        )
    if isinstance(value, (bytes, bytearray)):
        return (type(value).__name__, bytes(value))
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        if id(value) in active:
            return ("<cycle>",)
        active.add(id(value))
        try:
            kind = type(value).__name__
            if isinstance(value, dict):
                pairs = [
                    (_canonical(k, active), _canonical(v, active))
                    for k, v in value.items()
                ]
                return (kind, tuple(sorted(pairs, key=repr)))
            items = [_canonical(v, active) for v in value]
            if isinstance(value, (set, frozenset)):
                return (kind, tuple(sorted(items, key=repr)))
            return (kind, tuple(items))
        finally:
            active.discard(id(value))
    cls = type(value)
    try:
        text = repr(value)
    except Exception:
        text = object.__repr__(value)
    return (f"{cls.__module__}.{cls.__qualname__}", text)


def _dedupe_key(value: Any) -> Any:
    """`_canonical(value)`, or the object's identity if it nests too deeply to walk."""
    try:
        return _canonical(value, set())
    except RecursionError:
        return ("<too deep>", id(value))


def _estimate_size(value: Any) -> int:
    """Characters `value` takes as text (the original's `len(str(data))`), any value."""
    if isinstance(value, str):
        return len(value)
    try:
        return len(str(value))
    except Exception:
        return len(object.__repr__(value))


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _stamp_out(stamp: Any) -> Any:
    """A model-usage stamp for `to_dict`: its time as ISO 8601."""
    if isinstance(stamp, Mapping) and "time" in stamp:
        return {**stamp, "time": _iso(stamp["time"])}
    return stamp


def _stamp_in(entry: Any, where: str) -> Any:
    """A model-usage stamp from `from_dict`: its time parsed (None if absent)."""
    stamp = entry.get("stamp") if isinstance(entry, Mapping) else None
    if stamp is None:
        return None
    if not isinstance(stamp, Mapping) or "time" not in stamp:
        raise InvalidRecordError(f"{where} must be a dict with a time, got {stamp!r}")
    return {**stamp, "time": parse_timestamp(stamp["time"], f"{where}.time")}


def _run_to_completion(awaitable: Awaitable[Any]) -> None:
    """Finish an awaitable from sync code; impossible on a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        raise RuntimeError(
            "this resource closes asynchronously; use `async with` on an event loop"
        )

    async def wait() -> None:
        await awaitable

    asyncio.run(wait())


def _close_sync(resource: Any) -> None:
    closer = getattr(resource, "close", None)
    if not callable(closer):
        closer = getattr(resource, "aclose", None)
    if callable(closer):
        result = closer()
        if inspect.isawaitable(result):
            _run_to_completion(result)


async def _close_async(resource: Any) -> None:
    closer = getattr(resource, "aclose", None)
    if not callable(closer):
        closer = getattr(resource, "close", None)
    if callable(closer):
        result = closer()
        if inspect.isawaitable(result):
            await result


class TaskContext:
    """Context of one task run: identity, metadata, history, trackers, resources.

    Defaults (task_dir, persistence, max context size) come from `Settings`
    (the AIECS_* environment variables) unless given; `AIECS_LOG_LEVEL` is
    not a task-context setting and is not read here. Creating a context reads
    its saved history when persistence is enabled and never writes anything;
    leaving a `with` / `async with` block closes every resource, then saves the
    history when persistence is enabled.
    """

    settings: Settings
    user_id: str
    chat_id: str
    metadata: dict[str, Any]
    metadata_toggles: dict[str, bool]
    task_dir: Path
    enable_persistence: bool
    max_context_size: int
    start_time: datetime | None
    resources: dict[str, Any]
    context_history: list[ContextUpdate]
    file_tracker: dict[str, FileOperation]
    model_tracker: list[ModelUsage]

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        task_dir: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        enable_persistence: bool | None = None,
        max_context_size: int | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        self._configure(
            data or {}, task_dir, settings, enable_persistence, max_context_size, serde
        )
        if self.enable_persistence:
            self.load_history()

    def _configure(
        self,
        data: Mapping[str, Any],
        task_dir: str | os.PathLike[str] | None,
        settings: Settings | None,
        enable_persistence: bool | None,
        max_context_size: int | None,
        serde: SerializerProtocol | None,
    ) -> None:
        if not isinstance(data, Mapping):
            raise InvalidRecordError(f"data must be a mapping, got {data!r}")
        self.settings = (
            Settings.from_env(log_level=False) if settings is None else settings
        )
        self.user_id = _text_or_default(data, "user_id", DEFAULT_USER_ID)
        self.chat_id = _text_or_default(data, "chat_id", DEFAULT_CHAT_ID)
        raw_metadata = data.get("metadata")
        if raw_metadata is not None and not isinstance(raw_metadata, Mapping):
            raise InvalidRecordError(f"metadata must be a dict, got {raw_metadata!r}")
        self.metadata = dict(raw_metadata or {})
        if "aiPreference" in data:
            self.metadata["aiPreference"] = data["aiPreference"]
        raw_toggles = data.get("metadata_toggles")
        if raw_toggles is not None and not isinstance(raw_toggles, Mapping):
            raise InvalidRecordError(
                f"metadata_toggles must be a dict, got {raw_toggles!r}"
            )
        toggles = dict(raw_toggles or {})
        for key, flag in toggles.items():
            if not isinstance(flag, bool):
                raise InvalidRecordError(
                    f"metadata_toggles[{key!r}] must be a bool, got {flag!r}"
                )
        self.metadata_toggles = toggles
        self.task_dir = (
            Path(task_dir) if task_dir is not None else self.settings.task_dir
        )
        self.enable_persistence = (
            self.settings.enable_persistence
            if enable_persistence is None
            else bool(enable_persistence)
        )
        self.max_context_size = _limit(
            self.settings.max_context_size
            if max_context_size is None
            else max_context_size,
            "max_context_size",
        )
        self._serde: SerializerProtocol = serde or JsonPlusSerializer()
        self.start_time = None
        self._started = 0.0
        self.resources = {}
        self._to_close: list[tuple[str, Any]] = []
        self.context_history = []
        self.file_tracker = {}
        self.model_tracker = []

    def __repr__(self) -> str:
        return (
            f"TaskContext(user_id={self.user_id!r}, chat_id={self.chat_id!r}, "
            f"history={len(self.context_history)}, resources={len(self.resources)})"
        )

    def add_context_update(
        self, update_type: str, data: Any, metadata: Mapping[str, Any] | None = None
    ) -> ContextUpdate:
        """Append a history entry stamped now, and return it."""
        update = ContextUpdate(
            timestamp=utc_now(),
            update_type=update_type,
            data=data,
            metadata=dict(metadata or {}),
        )
        self.context_history.append(update)
        return update

    def add_resource(self, name: str, resource: Any) -> None:
        """Register a resource to close when the context exits.

        Registering another object under a used name still closes both.
        """
        self.resources[name] = resource
        self._to_close.append((name, resource))
        self.add_context_update(
            "resource", {"name": name}, {"type": type(resource).__name__}
        )

    def track_file_operation(
        self, file_path: str | os.PathLike[str], operation: str, source: str = "task"
    ) -> None:
        """Record the latest operation on a file, and a history entry for it."""
        path = os.fspath(file_path)
        self.file_tracker[path] = FileOperation(
            operation=operation, source=source, timestamp=utc_now(), state="active"
        )
        self.add_context_update(
            "file_operation", {"path": path, "operation": operation}, {"source": source}
        )

    def track_model_usage(self, model_id: str, provider_id: str, mode: str) -> bool:
        """Record a model use unless it repeats the last one; True if recorded.

        Repeats are judged on model, provider and mode (the original compared
        timestamps too, so it never skipped anything).
        """
        if self.model_tracker:
            last = self.model_tracker[-1]
            if (last["model_id"], last["provider_id"], last["mode"]) == (
                model_id,
                provider_id,
                mode,
            ):
                return False
        entry = ModelUsage(
            model_id=model_id,
            provider_id=provider_id,
            mode=mode,
            timestamp=utc_now(),
            input_tokens=None,
            output_tokens=None,
            total_tokens=None,
            latency_ms=None,
            error=None,
            stamp=None,
        )
        self.model_tracker.append(entry)
        self.add_context_update(
            "model_usage",
            {"model_id": model_id, "provider_id": provider_id, "mode": mode},
        )
        return True

    def optimize_context(self, max_size: int | None = None) -> bool:
        """Drop duplicate and old history entries; True if anything was removed.

        Walks from the newest entry: an entry whose type and data repeat a newer
        one is dropped, and entries are kept while their text size fits in
        `max_size` characters (default `max_context_size`). Order is preserved.
        Any data works, JSON or not.
        """
        limit = (
            self.max_context_size if max_size is None else _limit(max_size, "max_size")
        )
        seen: set[Any] = set()
        kept: list[ContextUpdate] = []
        total = 0
        for update in reversed(self.context_history):
            key = (update.update_type, _dedupe_key(update.data))
            if key in seen:
                continue
            seen.add(key)
            size = _estimate_size(update.data)
            if total + size <= limit:
                kept.append(update)
                total += size
        kept.reverse()
        removed = len(self.context_history) - len(kept)
        self.context_history = kept
        return removed > 0

    def truncate_history(self, after: datetime | float) -> int:
        """Drop entries newer than `after`; return how many were dropped."""
        cutoff = parse_timestamp(after, "after")
        before = len(self.context_history)
        self.context_history = [
            u for u in self.context_history if u.timestamp <= cutoff
        ]
        return before - len(self.context_history)

    async def truncate_context_history(self, timestamp: datetime | float) -> int:
        """`truncate_history`, then save if anything was dropped (original API)."""
        removed = self.truncate_history(timestamp)
        if removed:
            await self.asave_history()
        return removed

    def get_active_metadata(self) -> dict[str, Any]:
        """Metadata without the keys whose toggle is False."""
        return {
            k: v
            for k, v in self.metadata.items()
            if self.metadata_toggles.get(k) is not False
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything but live resources and local settings; see `from_dict`.

        Datetimes become ISO 8601 strings; history `data` and all metadata are
        kept as they are (they may hold non-JSON values).
        """
        return {
            "user_id": self.user_id,
            "chat_id": self.chat_id,
            "metadata": dict(self.metadata),
            "metadata_toggles": dict(self.metadata_toggles),
            "start_time": _iso(self.start_time),
            "context_history": [u.to_dict() for u in self.context_history],
            "file_tracker": {
                path: {**entry, "timestamp": _iso(entry["timestamp"])}
                for path, entry in self.file_tracker.items()
            },
            "model_tracker": [
                {
                    **entry,
                    "timestamp": _iso(entry["timestamp"]),
                    "stamp": _stamp_out(entry.get("stamp")),
                }
                for entry in self.model_tracker
            ],
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        task_dir: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        enable_persistence: bool | None = None,
        max_context_size: int | None = None,
        serde: SerializerProtocol | None = None,
    ) -> TaskContext:
        """Rebuild a context from `to_dict` output (or the original's dicts).

        The dict is authoritative: no history file is read. `task_dir` and the
        other settings are local choices and are never taken from the data.
        """
        if not isinstance(data, Mapping):
            raise InvalidRecordError(
                f"TaskContext.from_dict needs a mapping, got {data!r}"
            )
        ctx = cls.__new__(cls)
        ctx._configure(
            data, task_dir, settings, enable_persistence, max_context_size, serde
        )
        start = data.get("start_time")
        ctx.start_time = None if start is None else parse_timestamp(start, "start_time")
        ctx.context_history = [
            ContextUpdate.from_dict(u) for u in _sequence(data, "context_history")
        ]
        files = data.get("file_tracker") or {}
        if not isinstance(files, Mapping):
            raise InvalidRecordError(f"file_tracker must be a dict, got {files!r}")
        ctx.file_tracker = {
            str(path): cast(
                FileOperation,
                _tracker_entry(
                    entry, ("operation", "source", "state"), f"file_tracker[{path!r}]"
                ),
            )
            for path, entry in files.items()
        }
        ctx.model_tracker = [
            cast(
                ModelUsage,
                {
                    **dict.fromkeys(MODEL_USAGE_FIGURES),
                    **_tracker_entry(
                        entry,
                        ("model_id", "provider_id", "mode"),
                        f"model_tracker[{i}]",
                    ),
                    "stamp": _stamp_in(entry, f"model_tracker[{i}].stamp"),
                },
            )
            for i, entry in enumerate(_sequence(data, "model_tracker"))
        ]
        return ctx

    @property
    def history_path(self) -> Path:
        """Where this context's history is saved (a file directly in `task_dir`)."""
        return _inside(self.task_dir, history_file_name(self.chat_id))

    def _legacy_history_path(self) -> Path | None:
        """The original system's JSON history file, if its name would be safe."""
        chat = self.chat_id
        if (
            not chat
            or len(chat) > _MAX_ENCODED_ID
            or not set(chat) <= _LEGACY_NAME_CHARS
        ):
            return None
        return _inside(self.task_dir, f"context_history_{chat}.json")

    def load_history(self) -> bool:
        """Replace the history with the saved one, if any; True if loaded.

        Falls back to the original system's JSON file for the same chat. A
        missing file leaves the history as it is; an unreadable one is logged.
        """
        try:
            path = self.history_path
            if path.is_file():
                self.context_history = self._decode_history(path.read_bytes())
                return True
            legacy = self._legacy_history_path()
            if legacy is not None and legacy.is_file():
                raw = json.loads(legacy.read_text(encoding="utf-8"))
                self.context_history = _updates(raw)
                return True
        except Exception:
            logger.error(
                "Could not load the context history of chat %r from %s",
                self.chat_id,
                self.task_dir,
                exc_info=True,
            )
        return False

    def _decode_history(self, blob: bytes) -> list[ContextUpdate]:
        if not blob.startswith(HISTORY_MAGIC) or b"\n" not in blob:
            raise InvalidRecordError("not a context history file")
        header, payload = blob[len(HISTORY_MAGIC) :].split(b"\n", 1)
        return _updates(self._serde.loads_typed((header.decode("ascii"), payload)))

    def save_history(self) -> Path | None:
        """Write the history atomically when persistence is on; return the file.

        Returns None (and writes nothing) when persistence is off. Raises
        `SerializationError` if the history cannot be serialized (the old file
        is then left intact) and `OSError` if it cannot be written.
        """
        if not self.enable_persistence:
            return None
        try:
            tag, payload = self._serde.dumps_typed(
                [u.to_dict() for u in self.context_history]
            )
        except Exception as exc:
            raise SerializationError(
                f"context history of chat {self.chat_id!r} cannot be serialized: {exc}"
            ) from exc
        self.task_dir.mkdir(parents=True, exist_ok=True)
        path = self.history_path
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-context-history-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(HISTORY_MAGIC + tag.encode("ascii") + b"\n" + payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path

    async def asave_history(self) -> Path | None:
        """`save_history` in a worker thread, so the event loop never blocks."""
        return await asyncio.to_thread(self.save_history)

    async def _save_context_history(self) -> None:
        """The original's name for `asave_history`."""
        await self.asave_history()

    def _pop_resources(self) -> list[tuple[str, Any]]:
        """Every registered resource once, newest first; the registry is emptied."""
        pending = [*self._to_close, *self.resources.items()]
        self._to_close = []
        self.resources = {}
        seen: set[int] = set()
        out: list[tuple[str, Any]] = []
        for name, resource in reversed(pending):
            if id(resource) not in seen:
                seen.add(id(resource))
                out.append((name, resource))
        return out

    def close_resources(self) -> list[str]:
        """Close every resource (newest first); return the names that failed.

        A failure is logged and does not stop the others. A resource that only
        closes asynchronously is run to completion when no event loop is
        running in this thread, and fails otherwise (use `aclose_resources`).
        """
        failed: list[str] = []
        for name, resource in self._pop_resources():
            try:
                _close_sync(resource)
            except Exception:
                logger.error("Error closing resource %r", name, exc_info=True)
                failed.append(name)
        return failed

    async def aclose_resources(self) -> list[str]:
        """Close every resource (newest first), awaiting `aclose` / async `close`."""
        failed: list[str] = []
        for name, resource in self._pop_resources():
            try:
                await _close_async(resource)
            except Exception:
                logger.error("Error closing resource %r", name, exc_info=True)
                failed.append(name)
        return failed

    def _begin(self) -> None:
        self.start_time = utc_now()
        self._started = time.monotonic()
        logger.debug(
            "Task context started for user %r, chat %r", self.user_id, self.chat_id
        )

    def _finished(self, exc: BaseException | None) -> None:
        duration = time.monotonic() - self._started
        if exc is not None:
            logger.error(
                "Task context of chat %r exited with error: %r", self.chat_id, exc
            )
        logger.debug(
            "Task context of chat %r completed in %.2fs", self.chat_id, duration
        )

    def __enter__(self) -> TaskContext:
        self._begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_resources()
        try:
            self.save_history()
        except Exception:
            logger.error("Could not save the context history", exc_info=True)
        self._finished(exc)

    async def __aenter__(self) -> TaskContext:
        self._begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose_resources()
        try:
            await self.asave_history()
        except Exception:
            logger.error("Could not save the context history", exc_info=True)
        self._finished(exc)


def _text_or_default(data: Mapping[str, Any], key: str, default: str) -> str:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidRecordError(f"{key} must be a string, got {value!r}")
    return value


def _limit(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRecordError(
            f"{name} must be a non-negative integer, got {value!r}"
        )
    return value


def _sequence(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise InvalidRecordError(f"{key} must be a list, got {value!r}")
    return list(value)


def _updates(raw: Any) -> list[ContextUpdate]:
    if not isinstance(raw, list):
        raise InvalidRecordError(
            f"context history must be a list, got {type(raw).__name__}"
        )
    return [ContextUpdate.from_dict(entry) for entry in raw]


def _tracker_entry(entry: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    """A tracker entry from a dict: named string fields checked, timestamp parsed."""
    if not isinstance(entry, Mapping):
        raise InvalidRecordError(f"{where} must be a dict, got {entry!r}")
    for key in keys:
        if not isinstance(entry.get(key), str):
            raise InvalidRecordError(
                f"{where}[{key!r}] must be a string, got {entry.get(key)!r}"
            )
    if "timestamp" not in entry:
        raise InvalidRecordError(f"{where}: missing field 'timestamp'")
    return {
        **entry,
        "timestamp": parse_timestamp(entry["timestamp"], f"{where}.timestamp"),
    }


def build_context(
    data: Mapping[str, Any], task_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """`TaskContext(data, task_dir).to_dict()`: the original's compatibility helper."""
    return TaskContext(data, task_dir).to_dict()


@asynccontextmanager
async def task_context(
    data: Mapping[str, Any],
    task_dir: str | os.PathLike[str] | None = None,
    *,
    settings: Settings | None = None,
    enable_persistence: bool | None = None,
    max_context_size: int | None = None,
    serde: SerializerProtocol | None = None,
) -> AsyncIterator[TaskContext]:
    """`async with task_context(data) as ctx:` -- resources closed, history saved."""
    ctx = TaskContext(
        data,
        task_dir,
        settings=settings,
        enable_persistence=enable_persistence,
        max_context_size=max_context_size,
        serde=serde,
    )
    async with ctx:
        yield ctx


__all__ = [
    "DEFAULT_CHAT_ID",
    "DEFAULT_USER_ID",
    "MODEL_USAGE_FIGURES",
    "ContextUpdate",
    "FileOperation",
    "ModelUsage",
    "RecordStamp",
    "TaskContext",
    "build_context",
    "history_file_name",
    "task_context",
]
