"""The examples run as documented (`python examples/<name>.py`) and print what
the README says they show."""

from __future__ import annotations

import re
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


def test_quickstart_pauses_resumes_and_prints_its_history() -> None:
    out = run("quickstart.py")
    assert "paused at 'approve': Approve the plan? (archive old reports)" in out
    assert "resumed and finished: approved=True" in out
    assert "  - human answered 'yes'" in out
    history = [line.split()[1] for line in out.splitlines() if "  step " in line]
    assert history == ["3", "2", "1", "0", "-1"], "newest first, down to the input"


def test_every_example_has_a_test_of_what_it_prints() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    tested = set(re.findall(r'run\("([\w.]+\.py)"\)', source))
    assert tested == {p.name for p in EXAMPLES.glob("*.py")}


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
