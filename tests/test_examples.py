"""The examples run as documented (`python examples/<name>.py`) and print what
the README says they show."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REDIS_INSTALLED, redis_url

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env={**os.environ, **env},
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


@pytest.mark.skipif(
    not REDIS_INSTALLED and not os.environ.get("CI"), reason="redis-server missing"
)
def test_quickstart_on_redis_leaves_a_thread_the_command_line_shows() -> None:
    url = redis_url()
    for _ in range(2):  # a second run starts the thread afresh
        out = run("quickstart.py", REDIS_URL=url)
        assert out.startswith("store: redis")
    command = ["history", "quickstart-1", "--json", "--url", url]
    shown = subprocess.run(
        [sys.executable, "-m", "aiecs_checkpoint", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    steps = [row["step"] for row in json.loads(shown)["checkpoints"]]
    assert steps == [3, 2, 1, 0, -1], shown


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
