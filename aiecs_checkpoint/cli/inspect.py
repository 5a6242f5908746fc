"""What the CLI reads out of checkpoints, as plain data (no I/O, no output).

Values become JSON-able (`jsonable`), so every command prints the same data as
a table or as `--json`. Without the graph, a checkpoint still tells which
nodes wrote it (the `versions_seen` entries its step changed), which nodes run
next (the trigger channels LangGraph 1.x writes, `branch:to:<node>` and
`join:<sources>:<node>`, plus the pending `Send`s of `__pregel_tasks`, less
for the thread's current state, the tasks whose results are already saved,
as LangGraph's `get_state` does) and its interrupts (the pending writes on
`__interrupt__`).
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

from langgraph.checkpoint.base import CheckpointTuple

from aiecs_checkpoint.domain.task_context import TaskContext
from aiecs_checkpoint.stores.records import RECORD_CHANNEL, WriteRow

TASKS = "__pregel_tasks"
INTERRUPT = "__interrupt__"
START = "__start__"
NULL_TASK_ID = "00000000-0000-0000-0000-000000000000"
"""The task id of writes that are input to a step, not a task's output."""
CONTROL_WRITES = frozenset(
    ("__error__", "__error_source_node__", "__interrupt__", "__resume__")
)
"""Writes that tell what happened to a task rather than what it produced (as
LangGraph's `read_task_statuses` reads them); tracking records are not
output either."""

_MAX_DEPTH = 50


def jsonable(value: Any, depth: int = 0) -> Any:
    """`value` as JSON-able data: models and dataclasses as their fields,
    containers recursively, anything else unknown as its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > _MAX_DEPTH:
        return repr(value)
    d = depth + 1
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, d) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, d) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [jsonable(v, d) for v in value]
        return sorted(items, key=lambda x: json.dumps(x, sort_keys=True, default=str))
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (UUID, Decimal, PurePath)):
        return str(value)
    if isinstance(value, Enum):
        return jsonable(value.value, d)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return jsonable(dump(), d)
        except Exception:
            return repr(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return jsonable(fields, d)
    if type(value).__name__ == "Send" and hasattr(value, "node"):
        return {"send": value.node, "arg": jsonable(getattr(value, "arg", None), d)}
    return repr(value)


def compact(value: Any, limit: int | None) -> str:
    """One-line JSON of a JSON-able value, cut to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if limit is not None and len(text) > limit:
        return text[: max(limit - 1, 1)] + "…"
    return text


# -- checkpoints -----------------------------------------------------------------


def _newer(version: Any, seen: Any) -> bool:
    if seen is None:
        return True
    try:
        return bool(version > seen)
    except TypeError:
        return str(version) > str(seen)


def wrote(checkpoint: Mapping[str, Any], parent: Mapping[str, Any] | None) -> list[str]:
    """The nodes whose run produced `checkpoint`: those whose `versions_seen`
    its step changed (the input for an input checkpoint)."""
    seen = checkpoint.get("versions_seen") or {}
    before = (parent or {}).get("versions_seen") or {}
    return sorted(
        node
        for node, versions in seen.items()
        if node != INTERRUPT and versions != before.get(node) and versions
    )


def _triggered(checkpoint: Mapping[str, Any]) -> list[str]:
    """Nodes a trigger channel of `checkpoint` schedules (pull tasks)."""
    values = checkpoint.get("channel_values") or {}
    versions = checkpoint.get("channel_versions") or {}
    seen = checkpoint.get("versions_seen") or {}
    nodes: set[str] = set()
    for channel, version in versions.items():
        if channel not in values:
            continue
        if channel == START:
            node = START
        elif channel.startswith("branch:to:"):
            node = channel[len("branch:to:") :]
        elif channel.startswith("join:") and channel.count(":") >= 2:
            sources, node = channel[len("join:") :].rsplit(":", 1)
            value = values[channel]
            if not isinstance(value, (set, frozenset)):
                continue
            if set(sources.split("+")) != set(value):
                continue
        else:
            continue
        if _newer(version, (seen.get(node) or {}).get(channel)):
            nodes.add(node)
    return sorted(nodes)


def _finished(writes: Iterable[WriteRow]) -> set[tuple[str, str]]:
    """(kind, pull node or push index) of the tasks whose results are saved."""
    done: set[tuple[str, str]] = set()
    for w in writes:
        if w.channel in CONTROL_WRITES or w.channel == RECORD_CHANNEL:
            continue
        if w.task_id == NULL_TASK_ID or not w.task_path.startswith("~"):
            continue
        parts = [p.strip() for p in w.task_path[1:].split(",")]
        if len(parts) >= 2 and parts[0] == "__pregel_pull":
            done.add(("pull", parts[1]))
        elif len(parts) >= 2 and parts[0] == "__pregel_push" and parts[1].isdigit():
            done.add(("push", str(int(parts[1]))))
    return done


def next_nodes(
    checkpoint: Mapping[str, Any], writes: Sequence[WriteRow], live: bool
) -> list[str]:
    """The nodes the graph runs next from `checkpoint`: pending `Send`s and
    triggered nodes; `live` (the thread's current state, as `get_state` without
    a checkpoint id) leaves out the tasks whose results are saved."""
    done = _finished(writes) if live else set()
    sends = (checkpoint.get("channel_values") or {}).get(TASKS) or []
    out = [
        getattr(s, "node", str(s))
        for i, s in enumerate(sends)
        if ("push", str(i)) not in done
    ]
    return out + [n for n in _triggered(checkpoint) if ("pull", n) not in done]


def interrupts(tup: CheckpointTuple) -> list[dict[str, Any]]:
    """The interrupts pending on a checkpoint: task id, interrupt id, value."""
    out: list[dict[str, Any]] = []
    for task_id, channel, value in tup.pending_writes or ():
        if channel != INTERRUPT:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            out.append(
                {
                    "task_id": task_id,
                    "id": getattr(item, "id", None),
                    "value": jsonable(getattr(item, "value", item)),
                }
            )
    return out


def pending_writes(tup: CheckpointTuple) -> list[dict[str, Any]]:
    """The checkpoint's pending writes (not its interrupts) as data."""
    return [
        {"task_id": task_id, "channel": channel, "value": jsonable(value)}
        for task_id, channel, value in tup.pending_writes or ()
        if channel != INTERRUPT
    ]


def summary(tup: CheckpointTuple, parent: CheckpointTuple | None) -> dict[str, Any]:
    """A checkpoint's line in `history`."""
    md = tup.metadata or {}
    conf = tup.config["configurable"]
    parent_conf = (tup.parent_config or {}).get("configurable") or {}
    return {
        "checkpoint_id": conf["checkpoint_id"],
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
        "parent_id": parent_conf.get("checkpoint_id"),
        "step": md.get("step"),
        "source": md.get("source"),
        "wrote": wrote(tup.checkpoint, parent.checkpoint if parent else None),
        "created_at": tup.checkpoint.get("ts"),
    }


def channel_values(tup: CheckpointTuple) -> dict[str, Any]:
    """The checkpoint's state channels (not LangGraph's own) as data."""
    return {
        ch: jsonable(v)
        for ch, v in (tup.checkpoint.get("channel_values") or {}).items()
        if not _internal(ch)
    }


def _internal(channel: str) -> bool:
    return (
        channel.startswith(("branch:to:", "join:", "__"))
        and channel not in ("__root__",)
    ) or channel == START


# -- task context ----------------------------------------------------------------


def task_context(ctx: TaskContext) -> dict[str, Any]:
    """Model usage summed by model, the last operation per file, and counts."""
    models: dict[tuple[str, str], dict[str, Any]] = {}
    for call in ctx.model_tracker:
        entry: Mapping[str, Any] = call
        key = (str(entry.get("model_id")), str(entry.get("provider_id")))
        row = models.setdefault(
            key,
            {
                "model_id": key[0],
                "provider_id": key[1],
                "calls": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "latency_ms": 0.0,
                "errors": 0,
            },
        )
        row["calls"] += 1
        for field in ("input_tokens", "output_tokens", "latency_ms"):
            amount = entry.get(field)
            if isinstance(amount, (int, float)) and not isinstance(amount, bool):
                row[field] += amount
        if entry.get("error"):
            row["errors"] += 1
    files = [
        {
            "path": path,
            "operation": op["operation"],
            "source": op["source"],
            "at": jsonable(op["timestamp"]),
        }
        for path, op in ctx.file_tracker.items()
    ]
    return {
        "model_usage": list(models.values()),
        "file_operations": files,
        "context_updates": len(ctx.context_history),
    }


# -- diff ------------------------------------------------------------------------


def diff_values(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """What changed from state `a` to state `b` (JSON-able values), per channel."""
    out: dict[str, Any] = {}
    for ch in sorted(set(a) | set(b)):
        if ch not in a:
            out[ch] = {"added": b[ch]}
        elif ch not in b:
            out[ch] = {"removed": a[ch]}
        elif a[ch] != b[ch]:
            out[ch] = _diff_one(a[ch], b[ch])
    return out


def _diff_one(old: Any, new: Any) -> dict[str, Any]:
    if isinstance(old, list) and isinstance(new, list):
        if new[: len(old)] == old:
            return {"appended": new[len(old) :]}
        keys_old = [json.dumps(x, sort_keys=True) for x in old]
        keys_new = [json.dumps(x, sort_keys=True) for x in new]
        edits = []
        matcher = difflib.SequenceMatcher(a=keys_old, b=keys_new, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op != "equal":
                edits.append({"at": i1, "removed": old[i1:i2], "inserted": new[j1:j2]})
        return {"list_edits": edits}
    if isinstance(old, dict) and isinstance(new, dict):
        return {
            "keys": {
                k: (
                    {"added": new[k]}
                    if k not in old
                    else {"removed": old[k]}
                    if k not in new
                    else {"before": old[k], "after": new[k]}
                )
                for k in sorted(set(old) | set(new))
                if old.get(k, _MISSING) != new.get(k, _MISSING)
            }
        }
    return {"before": old, "after": new}


_MISSING = object()
