"""Node-side helpers: record model usage, file operations and context updates.

Call them inside any node (sync or async, in subgraphs, in `Send` tasks) of a
graph compiled with `ContextEngineSaver`; no wiring beyond `checkpointer=`. The
running task is found through LangGraph's run config (`get_config()`), and each
record is stored with that task's writes (see `tracking.records`).

Outside a graph node, or under another checkpointer, they raise `TrackingError`
by default. With `AIECS_TRACKING=optional` in the environment, or inside
`with optional_tracking():` (graph runs started in the block included), they
do nothing there instead, so node code also runs under a checkpointer provided
by a server.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config

from aiecs_checkpoint.domain.task_context import TaskContext
from aiecs_checkpoint.errors import (
    InvalidArgumentError,
    InvalidConfigError,
    InvalidRecordError,
    TrackingError,
)
from aiecs_checkpoint.tracking.records import Stamp, TaskRecorder

CONFIG_KEY_CHECKPOINTER = "__pregel_checkpointer"
CONFIG_KEY_TASK_ID = "__pregel_task_id"

ENV_TRACKING = "AIECS_TRACKING"
"""`required` (default): helpers raise `TrackingError` where they cannot record;
`optional`: they do nothing there."""

TrackingMode = Literal["required", "optional"]
TRACKING_MODES: tuple[TrackingMode, ...] = ("required", "optional")

_scoped_mode: ContextVar[TrackingMode | None] = ContextVar(
    "aiecs_tracking_mode", default=None
)


def tracking_mode() -> TrackingMode:
    """The mode in force: `optional_tracking()`'s, else `AIECS_TRACKING`'s.

    Raises `InvalidConfigError` for an unknown `AIECS_TRACKING` value.
    """
    scoped = _scoped_mode.get()
    if scoped is not None:
        return scoped
    raw = os.environ.get(ENV_TRACKING, "").strip().lower() or "required"
    for mode in TRACKING_MODES:
        if raw == mode:
            return mode
    raise InvalidConfigError(
        f"{ENV_TRACKING} must be one of {TRACKING_MODES}, got {raw!r}"
    )


@contextmanager
def optional_tracking() -> Iterator[None]:
    """Within the block (and graph runs started in it), tracking helpers do
    nothing where no `ContextEngineSaver` task is running, instead of raising
    `TrackingError`; under `ContextEngineSaver` they record as usual."""
    token = _scoped_mode.set("optional")
    try:
        yield
    finally:
        _scoped_mode.reset(token)


def running_task(
    what: str, config: RunnableConfig | None = None
) -> tuple[TaskRecorder, Stamp]:
    """The saver and the stamp of the task running now (`TrackingError` if none)."""
    if config is None:
        try:
            config = get_config()
        except RuntimeError:
            raise TrackingError(
                f"{what} must be called inside a graph node (it records into the "
                "running task); no graph run is active here"
            ) from None
    conf = config.get("configurable") or {}
    saver = conf.get(CONFIG_KEY_CHECKPOINTER)
    task_id = conf.get(CONFIG_KEY_TASK_ID)
    thread_id = conf.get("thread_id")
    if not isinstance(saver, TaskRecorder):
        found = "no checkpointer" if saver is None else type(saver).__name__
        raise TrackingError(
            f"{what} records into the thread through ContextEngineSaver, but this "
            f"graph runs with {found}; compile it with "
            "checkpointer=ContextEngineSaver(...), or set AIECS_TRACKING=optional "
            "to make tracking do nothing under other checkpointers"
        )
    if task_id is None or thread_id is None:
        raise TrackingError(
            f"{what} must be called inside a graph node of a run with a thread_id "
            "(configurable.thread_id); this call is not inside such a task"
        )
    metadata = config.get("metadata") or {}
    step = metadata.get("langgraph_step")
    run_id = metadata.get("run_id") or conf.get("run_id") or config.get("run_id")
    stamp = Stamp(
        thread_id=str(thread_id),
        checkpoint_ns=str(conf.get("checkpoint_ns") or ""),
        node=metadata.get("langgraph_node"),
        task_id=str(task_id),
        step=step if isinstance(step, int) else None,
        run_id=None if run_id is None else str(run_id),
    )
    return saver, stamp


def _task_or_skip(what: str) -> tuple[TaskRecorder, Stamp] | None:
    """`running_task`, or None in optional mode where nothing can be recorded."""
    try:
        return running_task(what)
    except TrackingError:
        if tracking_mode() == "optional":
            return None
        raise


def model_usage_data(
    model_id: str,
    provider_id: str,
    mode: str,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    total_tokens: int | None = None,
    latency_ms: float | None = None,
    error: str | BaseException | None = None,
) -> dict[str, Any]:
    """A model-usage record's data, checked, with every key (None = not known).

    `total_tokens` defaults to input + output when both are given; an exception
    given as `error` is kept as "TypeName: message".
    """
    _check_text(model_id=model_id, provider_id=provider_id, mode=mode)
    for name, count in (
        ("input_tokens", input_tokens),
        ("output_tokens", output_tokens),
        ("total_tokens", total_tokens),
    ):
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            raise InvalidRecordError(
                f"{name} must be an int >= 0 or None, got {count!r}"
            )
    if total_tokens is None and input_tokens is not None and output_tokens is not None:
        total_tokens = input_tokens + output_tokens
    if latency_ms is not None:
        if (
            isinstance(latency_ms, bool)
            or not isinstance(latency_ms, (int, float))
            or not latency_ms >= 0
        ):
            raise InvalidRecordError(
                f"latency_ms must be a number >= 0 or None, got {latency_ms!r}"
            )
        latency_ms = float(latency_ms)
    if isinstance(error, BaseException):
        error = describe_error(error)
    elif error is not None and not isinstance(error, str):
        raise InvalidRecordError(
            f"error must be a string, an exception or None, got {error!r}"
        )
    return {
        "model_id": model_id,
        "provider_id": provider_id,
        "mode": mode,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total_tokens,
        "latency_ms": latency_ms,
        "error": error,
    }


def describe_error(error: BaseException) -> str:
    """How a failed call's error is recorded: "TypeName: message"."""
    return f"{type(error).__name__}: {error}"


def track_model_usage(
    model_id: str,
    provider_id: str,
    mode: str,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    total_tokens: int | None = None,
    latency_ms: float | None = None,
    error: str | BaseException | None = None,
) -> None:
    """Record a model call by the running task (in the thread's TaskContext).

    Token counts, latency (milliseconds) and the call's error are optional; the
    entry has every `ModelUsage` key, None for what was not given. Raises
    `InvalidRecordError` for a malformed field, `TrackingError` outside a
    `ContextEngineSaver` task (unless tracking is optional).
    """
    data = model_usage_data(
        model_id,
        provider_id,
        mode,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total_tokens,
        latency_ms=latency_ms,
        error=error,
    )
    task = _task_or_skip("track_model_usage()")
    if task is not None:
        saver, stamp = task
        saver.record("model_usage", data, stamp)


def track_file_operation(
    file_path: str | os.PathLike[str], operation: str, source: str = "task"
) -> None:
    """Record an operation on a file by the running task."""
    path = os.fspath(file_path)
    _check_text(file_path=path, operation=operation, source=source)
    task = _task_or_skip("track_file_operation()")
    if task is not None:
        saver, stamp = task
        data = {"path": path, "operation": operation, "source": source}
        saver.record("file_operation", data, stamp)


def add_context_update(
    update_type: str, data: Any, metadata: Mapping[str, Any] | None = None
) -> None:
    """Record a context update (any serializable `data`) by the running task."""
    _check_text(update_type=update_type)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"metadata must be a mapping, got {type(metadata).__name__}"
        )
    if metadata and "stamp" in metadata:
        raise InvalidRecordError(
            'metadata key "stamp" is reserved for the record stamp'
        )
    task = _task_or_skip("add_context_update()")
    if task is not None:
        saver, stamp = task
        record = {
            "update_type": update_type,
            "data": data,
            "metadata": dict(metadata or {}),
        }
        saver.record("context_update", record, stamp)


def current_task_context() -> TaskContext:
    """Inside a node: the running thread's TaskContext, what is stored plus what
    this process recorded and has not saved yet. Blocking; in async nodes on
    Redis use `acurrent_task_context`.

    Not `saver.get_task_context(thread_id)` (any thread, from anywhere: only what
    is saved) nor `await engine.get_task_context(session_id)` (a TaskContext you
    stored yourself with `engine.store_task_context`). In optional tracking
    mode, where nothing is recorded, it returns an empty TaskContext.
    """
    task = _task_or_skip("current_task_context()")
    if task is None:
        return TaskContext(enable_persistence=False)
    saver, stamp = task
    return saver.get_task_context(stamp.thread_id, include_unsaved=True)


async def acurrent_task_context() -> TaskContext:
    """Async `current_task_context`."""
    task = _task_or_skip("acurrent_task_context()")
    if task is None:
        return TaskContext(enable_persistence=False)
    saver, stamp = task
    return await saver.aget_task_context(stamp.thread_id, include_unsaved=True)


def get_task_context() -> TaskContext:
    """Deprecated alias of `current_task_context` (the name was easy to confuse
    with `saver.get_task_context` and `engine.get_task_context`)."""
    warnings.warn(
        "aiecs_checkpoint.get_task_context() is deprecated; use "
        "current_task_context() inside a node",
        DeprecationWarning,
        stacklevel=2,
    )
    return current_task_context()


async def aget_task_context() -> TaskContext:
    """Deprecated alias of `acurrent_task_context`."""
    warnings.warn(
        "aiecs_checkpoint.aget_task_context() is deprecated; use "
        "acurrent_task_context() inside a node",
        DeprecationWarning,
        stacklevel=2,
    )
    return await acurrent_task_context()


def _check_text(**fields: str) -> None:
    for name, value in fields.items():
        if not isinstance(value, str) or not value:
            raise InvalidRecordError(
                f"{name} must be a non-empty string, got {value!r}"
            )


__all__ = [
    "ENV_TRACKING",
    "TRACKING_MODES",
    "TrackingMode",
    "acurrent_task_context",
    "add_context_update",
    "aget_task_context",
    "current_task_context",
    "describe_error",
    "get_task_context",
    "model_usage_data",
    "optional_tracking",
    "running_task",
    "track_file_operation",
    "track_model_usage",
    "tracking_mode",
]
