"""The examples run as documented (`python examples/<name>.py`) and print what
the README says they show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart_runs_on_the_embedded_store() -> None:
    assert run("quickstart.py").strip()


def test_tracking_example_prints_model_calls_files_and_history() -> None:
    out = run("tracking.py")
    assert "42 in / 9 out tokens" in out
    assert "total tokens: 136" in out
    assert "read " in out and "write" in out
    assert "tool_call" in out


def test_threads_example_pages_a_users_threads_and_walks_one() -> None:
    out = run("threads.py")
    pages = [line for line in out.splitlines() if "page " in line]
    assert [line.split(": ")[1].split(" ")[0] for line in pages] == [
        "ticket-6",
        "ticket-4",
        "ticket-2",
        "ticket-0",
    ]
    assert "history of ticket-6" in out
    assert "step -1: input" in out
