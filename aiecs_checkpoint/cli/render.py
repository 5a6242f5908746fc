"""Rich output of the CLI's data (`--json` prints the same data as JSON)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from aiecs_checkpoint.cli.inspect import compact

VALUE_WIDTH = 160
"""Characters of a value shown without `--full`."""


PIPE_WIDTH = 200
"""Table width when output goes to a file or pipe (COLUMNS overrides it), so
ids are not folded."""


def console(stderr: bool = False) -> Console:
    """A console for tables: terminal width, or `PIPE_WIDTH` when piped."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)
    return out


def print_json(data: Any) -> None:
    """Machine-readable output on stdout: one JSON document."""
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _table(title: str | None, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    return table


LAST_ITEMS = 3
"""List items shown without `--full` (the newest)."""


def _cut(value: Any, full: bool) -> str:
    if full:
        return compact(value, None)
    return _brief(value)[:VALUE_WIDTH]


def _brief(value: Any) -> str:
    """A short line: lists as their length and newest items, messages as
    `type: content`."""
    if isinstance(value, list):
        shown = [_brief(v) for v in value[-LAST_ITEMS:]]
        more = "…; " if len(value) > LAST_ITEMS else ""
        return f"({len(value)}) {more}" + "; ".join(s[:80] for s in shown)
    if isinstance(value, Mapping) and "type" in value and "content" in value:
        text = f"{value['type']}: {compact(value['content'], 100)}"
        calls = value.get("tool_calls")
        return text + (f" [{len(calls)} tool call(s)]" if calls else "")
    return compact(value, VALUE_WIDTH)


def _time(iso: Any) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM:SS` (UTC), for tables."""
    text = str(iso)
    return text[:19].replace("T", " ") if len(text) >= 19 else text


def threads(
    out: Console, page: Sequence[Mapping[str, Any]], cursor: str | None
) -> None:
    table = _table(None, "thread", "latest checkpoint", "step", "metadata")
    for t in page:
        meta = {k: v for k, v in t["metadata"].items() if k not in ("step", "parents")}
        table.add_row(
            t["thread_id"], _time(t["created_at"]), str(t["step"]), _cut(meta, False)
        )
    out.print(table)
    if cursor is not None:
        out.print(f"next page: --before {cursor}")
    elif not page:
        out.print("no threads")


def history(out: Console, rows: Sequence[Mapping[str, Any]], all_ns: bool) -> None:
    columns = ["checkpoint", "parent", "step", "source", "wrote", "time"]
    table = _table(None, *(["namespace", *columns] if all_ns else columns))
    for r in rows:
        cells = [
            r["checkpoint_id"],
            r["parent_id"] or "-",
            str(r["step"]),
            str(r["source"]),
            ", ".join(r["wrote"]) or "-",
            _time(r["created_at"]),
        ]
        table.add_row(*([r["checkpoint_ns"] or "(root)", *cells] if all_ns else cells))
    out.print(table)


def show(out: Console, data: Mapping[str, Any], full: bool) -> None:
    c = data["checkpoint"]
    out.print(
        f"thread {data['thread_id']}  checkpoint {c['checkpoint_id']}  "
        f"step {c['step']}  source {c['source']}  {c['created_at']}"
    )
    if c["checkpoint_ns"]:
        out.print(f"namespace {c['checkpoint_ns']}")
    out.print(f"parent {c['parent_id'] or '-'}")
    out.print(f"next: {', '.join(data['next']) or '(none: the run is complete)'}")
    values = _table("channel values", "channel", "value")
    for ch, v in data["values"].items():
        values.add_row(ch, _cut(v, full))
    out.print(values)
    if data["interrupts"]:
        table = _table("interrupts", "task", "interrupt id", "value")
        for i in data["interrupts"]:
            table.add_row(i["task_id"], str(i["id"]), _cut(i["value"], full))
        out.print(table)
    if data["pending_writes"]:
        table = _table("pending writes", "task", "channel", "value")
        for w in data["pending_writes"]:
            table.add_row(w["task_id"], w["channel"], _cut(w["value"], full))
        out.print(table)
    ctx = data["task_context"]
    if ctx["model_usage"]:
        table = _table(
            "model usage", "model", "provider", "calls", "input", "output",
            "latency ms", "errors",
        )  # fmt: skip
        for m in ctx["model_usage"]:
            table.add_row(
                m["model_id"], m["provider_id"], str(m["calls"]),
                str(m["input_tokens"]), str(m["output_tokens"]),
                f"{m['latency_ms']:.0f}", str(m["errors"]),
            )  # fmt: skip
        out.print(table)
    if ctx["file_operations"]:
        table = _table("file operations", "path", "operation", "source", "at")
        for f in ctx["file_operations"]:
            table.add_row(f["path"], f["operation"], f["source"], str(f["at"]))
        out.print(table)
    if ctx["context_updates"]:
        out.print(f"context updates recorded: {ctx['context_updates']}")


def diff(out: Console, data: Mapping[str, Any], full: bool) -> None:
    a, b = data["from"], data["to"]
    out.print(f"from {a['checkpoint_id']} (step {a['step']})")
    out.print(f"  to {b['checkpoint_id']} (step {b['step']})")
    if not data["changes"]:
        out.print("no channel changed")
        return
    table = _table(None, "channel", "change")
    for ch, change in data["changes"].items():
        for kind, what in change.items():
            table.add_row(ch, f"{kind}: {_cut(what, full)}")
    out.print(table)


def health(out: Console, data: Mapping[str, Any]) -> None:
    status = data["health"]["status"]
    out.print(f"status: {status}")
    for issue in data["health"].get("issues", []):
        out.print(f"  issue: {issue}")
    table = _table(None, "metric", "value")
    for key, value in {**data["health"], **(data.get("metrics") or {})}.items():
        if key not in ("status", "issues"):
            table.add_row(key, compact(value, None))
    out.print(table)
