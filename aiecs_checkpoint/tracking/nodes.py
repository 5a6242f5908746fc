"""Node-side helpers: record model usage, file operations and context updates.

Call them inside any node (sync or async, in subgraphs, in `Send` tasks) of a
graph compiled with `ContextEngineSaver`; no wiring beyond `checkpointer=`. The
running task is found through LangGraph's run config (`get_config()`), and each
record is stored with that task's writes (see `tracking.records`). Outside a
graph node, or under another checkpointer, they raise `TrackingError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config

from aiecs_checkpoint.domain.task_context import TaskContext
from aiecs_checkpoint.errors import (
    InvalidArgumentError,
    InvalidConfigError,
    TrackingError,
)
from aiecs_checkpoint.tracking.records import Stamp, TaskRecorder

CONFIG_KEY_CHECKPOINTER = "__pregel_checkpointer"
CONFIG_KEY_TASK_ID = "__pregel_task_id"


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
            "checkpointer=ContextEngineSaver(...)"
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


def track_model_usage(model_id: str, provider_id: str, mode: str) -> None:
    """Record that the running task used a model (in the thread's TaskContext)."""
    _check_text(model_id=model_id, provider_id=provider_id, mode=mode)
    saver, stamp = running_task("track_model_usage()")
    data = {"model_id": model_id, "provider_id": provider_id, "mode": mode}
    saver.record("model_usage", data, stamp)


def track_file_operation(
    file_path: str | os.PathLike[str], operation: str, source: str = "task"
) -> None:
    """Record an operation on a file by the running task."""
    path = os.fspath(file_path)
    _check_text(file_path=path, operation=operation, source=source)
    saver, stamp = running_task("track_file_operation()")
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
        raise InvalidConfigError(
            'metadata key "stamp" is reserved for the record stamp'
        )
    saver, stamp = running_task("add_context_update()")
    record = {
        "update_type": update_type,
        "data": data,
        "metadata": dict(metadata or {}),
    }
    saver.record("context_update", record, stamp)


def get_task_context() -> TaskContext:
    """The running thread's TaskContext: what is stored, plus what this process
    recorded and has not saved yet. Blocking; in async nodes on Redis use
    `aget_task_context`."""
    saver, stamp = running_task("get_task_context()")
    return saver.get_task_context(stamp.thread_id, include_unsaved=True)


async def aget_task_context() -> TaskContext:
    """Async `get_task_context`."""
    saver, stamp = running_task("aget_task_context()")
    return await saver.aget_task_context(stamp.thread_id, include_unsaved=True)


def _check_text(**fields: str) -> None:
    for name, value in fields.items():
        if not isinstance(value, str) or not value:
            raise InvalidConfigError(
                f"{name} must be a non-empty string, got {value!r}"
            )


__all__ = [
    "add_context_update",
    "aget_task_context",
    "get_task_context",
    "running_task",
    "track_file_operation",
    "track_model_usage",
]
