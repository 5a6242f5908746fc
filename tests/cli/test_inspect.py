"""threads, history, show, diff, health and errors, run as a subprocess against
a populated memory store and a populated Redis store.

The CLI's start-up dominates (about a second per process), so each store's
read-only calls run once, side by side, and the tests assert on their output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiecs_checkpoint import __version__
from tests.cli import graphs
from tests.cli.conftest import MEMORY, Result, cli, cli_all

CALLS = {
    "page": ["threads", "--where", "user_id=u1", "--limit", "2", "--json"],
    "history": ["history", "ticket-0", "--json"],
    "show": ["show", "approval", "--json"],
    "finished": ["show", "ticket-1", "--json"],
    "diff": ["diff", "ticket-0", "latest~3", "latest", "--json"],
    "missing": ["history", "no-such-thread"],
}
MEMORY_ONLY = {
    "u2": ["threads", "--where", "user_id=u2"],
    "show_table": ["show", "approval"],
    "usage": ["threads", "--where", "user_id"],
}
"""Table output and usage errors do not depend on the store: memory only."""


@pytest.fixture(scope="module", params=["memory", "redis"])
def ran(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each call of CALLS against one populated store."""
    store: list[str] = (
        MEMORY
        if request.param == "memory"
        else request.getfixturevalue("shared_redis_store")
    )
    calls = {**CALLS, **(MEMORY_ONLY if store == MEMORY else {})}
    results = cli_all(*[[*args, *store] for args in calls.values()])
    return {"store": store, **dict(zip(calls, results, strict=True))}


def test_threads_filters_by_metadata_and_pages_with_the_printed_cursor(
    ran: dict[str, Any],
) -> None:
    first: Result = ran["page"]
    assert first.code == 0, first.err
    page = first.json()
    assert [t["thread_id"] for t in page["threads"]] == ["approval", "ticket-4"]
    assert all(t["metadata"]["user_id"] == "u1" for t in page["threads"])
    assert page["threads"][0]["step"] == 1
    assert page["next_cursor"]
    if ran["store"] == MEMORY:  # a cursor cannot carry over to another process
        u2: Result = ran["u2"]
        assert u2.code == 0, u2.err
        assert "ticket-3" in u2.out and "ticket-1" in u2.out
        assert "ticket-2" not in u2.out and "approval" not in u2.out
        return
    cursor = ["--before", page["next_cursor"]]
    second = cli(*CALLS["page"], *cursor, *ran["store"]).json()
    assert [t["thread_id"] for t in second["threads"]] == ["ticket-2", "ticket-0"]


def test_history_is_newest_first_with_parents_sources_and_writers(
    ran: dict[str, Any],
) -> None:
    done: Result = ran["history"]
    assert done.code == 0, done.err
    rows = done.json()["checkpoints"]
    assert [r["step"] for r in rows] == [3, 2, 1, 0, -1]
    assert [r["source"] for r in rows] == ["loop"] * 4 + ["input"]
    assert [r["wrote"] for r in rows] == [
        ["finish"],
        ["approve"],
        ["agent"],
        ["__start__"],
        [],
    ]
    ids = [r["checkpoint_id"] for r in rows]
    assert ids == sorted(ids, reverse=True)
    assert [r["parent_id"] for r in rows] == [*ids[1:], None]


def test_show_of_an_interrupted_thread_has_next_node_interrupt_and_task_context(
    ran: dict[str, Any],
) -> None:
    done: Result = ran["show"]
    assert done.code == 0, done.err
    data = done.json()
    assert data["next"] == ["approve"]
    assert [i["value"] for i in data["interrupts"]] == [
        {"question": f"approve {graphs.MARKER}?"}
    ]
    assert data["values"]["log"] == ["agent"]
    assert [m["type"] for m in data["values"]["messages"]] == ["human", "ai"]
    usage = data["task_context"]["model_usage"]
    assert [(u["calls"], u["input_tokens"], u["output_tokens"]) for u in usage] == [
        (1, 42, 9)
    ]
    files = data["task_context"]["file_operations"]
    assert [(f["path"], f["operation"]) for f in files] == [("out/plan.md", "write")]
    if ran["store"] == MEMORY:
        table: Result = ran["show_table"]
        assert "next: approve" in table.out
        assert "interrupts" in table.out and "model usage" in table.out
    finished = ran["finished"].json()
    assert finished["next"] == [] and finished["interrupts"] == []


def test_diff_shows_appended_list_items_and_added_channels(
    ran: dict[str, Any],
) -> None:
    done: Result = ran["diff"]
    assert done.code == 0, done.err
    data = done.json()
    assert (data["from"]["step"], data["to"]["step"]) == (0, 3)
    changes = data["changes"]
    assert changes["log"] == {"appended": ["agent", "answer yes", "done"]}
    assert changes["approved"] == {"added": True}
    assert [m["type"] for m in changes["messages"]["appended"]] == ["ai"]


def test_errors_are_one_line_on_stderr_with_exit_code_1_or_2_for_usage(
    ran: dict[str, Any],
) -> None:
    missing: Result = ran["missing"]
    assert missing.code == 1
    assert missing.err.strip() == "Error: thread 'no-such-thread' has no checkpoints"
    assert missing.out == ""
    if ran["store"] == MEMORY:
        usage: Result = ran["usage"]
        assert usage.code == 2 and "KEY=VALUE" in usage.err


def test_show_with_the_graph_agrees_and_debug_shows_a_traceback() -> None:
    graph, debug, unconfigured = cli_all(
        ["show", "approval", *MEMORY, "--graph", "tests.cli.graphs:builder", "--json"],
        ["show", "no-such-thread", *MEMORY, "--debug"],
        ["threads"],
    )
    assert graph.code == 0, graph.err
    assert graph.json()["next"] == ["approve"]
    assert [i["value"] for i in graph.json()["interrupts"]] == [
        {"question": f"approve {graphs.MARKER}?"}
    ]
    assert debug.code == 1 and "Traceback" in debug.err
    assert unconfigured.code == 1 and unconfigured.out == ""
    lines = unconfigured.err.strip().splitlines()
    assert len(lines) == 1 and "memory store lives inside one process" in lines[0]


def test_health_prints_status_and_metrics_and_exits_3_when_degraded(
    shared_redis_store: list[str],
) -> None:
    healthy, down = cli_all(
        ["health", *shared_redis_store, "--json"],
        ["health", "--url", "redis://127.0.0.1:1/0", "--json"],
    )
    assert healthy.code == 0, healthy.err
    data = healthy.json()
    assert data["health"]["status"] == "healthy"
    assert data["metrics"]["total_checkpoints"] >= 20
    assert down.code == 3, down.err
    assert down.json()["health"]["status"] == "degraded"
    assert down.json()["health"]["issues"]


def test_the_console_script_runs_the_same_command_line() -> None:
    script = Path(sys.executable).with_name("aiecs-checkpoint")
    done = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"aiecs-checkpoint, version {__version__}"


def test_ns_selects_a_subgraphs_checkpoints_and_star_lists_every_namespace(
    redis_store: tuple[list[str], Any],
) -> None:
    args, saver = redis_store
    graphs.nested(saver).invoke({"log": []}, graphs.config("nested"))
    every = cli("history", "nested", *args, "--ns", "*", "--json")
    assert every.code == 0, every.err
    names = {r["checkpoint_ns"] for r in every.json()["checkpoints"]}
    child = next(n for n in names if n)
    assert names == {"", child} and child.startswith("child:")
    inner, outer = cli_all(
        ["show", "nested", *args, "--ns", child, "--json"],
        ["show", "nested", *args, "--json"],
    )
    assert inner.json()["next"] == ["inner"]
    assert inner.json()["checkpoint"]["checkpoint_ns"] == child
    assert outer.json()["next"] == ["child"]
    assert [i["value"] for i in inner.json()["interrupts"]] == ["inner?"]
