"""The peer benchmark harness (benchmarks/peers) keeps running: its --quick mode
on InMemorySaver and ours on memory, in process (peers need .venv-bench and
their servers, so they are not run here)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from benchmarks.peers import run, workloads
from benchmarks.peers.savers import BY_KEY, Context

MEMORY_WORKLOADS = {
    name for name, savers in run.APPLIES.items() if "ours-memory" in savers
}


def test_quick_run_measures_every_memory_workload_and_checks_it(tmp_path: Path) -> None:
    document = run.main(
        [
            "--quick",
            "--savers",
            "none,inmemory,ours-memory",
            "--in-process",
            "--no-setup",
            "--json",
            str(tmp_path / "results.json"),
        ]
    )
    skipped = set(document["skipped"])
    ran = {entry["workload"] for entry in document["results"]}
    assert ran == MEMORY_WORKLOADS - skipped, document["skipped"]
    for entry in document["results"]:
        assert "error" not in entry, (entry["workload"], entry["saver"], entry["error"])
        assert entry["figures"], (entry["workload"], entry["saver"])
        assert all(v == v for values in entry["figures"].values() for v in values)
        if entry["saver"] != "none":
            assert entry["checks"], (entry["workload"], entry["saver"])
    assert (tmp_path / "results.json").exists()


def test_a_saver_that_loses_writes_fails_the_raw_rounds_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def lose(
        self: Any, config: Any, writes: Any, task_id: Any, task_path: str = ""
    ) -> None:
        return None

    monkeypatch.setattr(InMemorySaver, "aput_writes", lose)
    params = dict(run.QUICK)
    with pytest.raises(workloads.CheckFailed, match="pending writes"):
        asyncio.run(workloads.raw_rounds(BY_KEY["inmemory"], Context(), params, 1))
