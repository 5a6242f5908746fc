"""Every ```python block of README.md, SECURITY.md and docs/*.md runs.

Conventions for writers (an HTML comment on the line(s) just above a fence;
GitHub does not render it):

* A block runs on its own, in a fresh namespace that already holds:
  - `builder`: an uncompiled `StateGraph(MessagesState)` with one node, "chat",
    that records `track_model_usage("scripted", "fake", "chat")` and calls a
    scripted chat model (every reply reports 12 input and 5 output tokens), from
    START to END;
  - `inputs`: `{"messages": [HumanMessage("hello")]}`;
  - `saver`: a `ContextEngineSaver()` on the embedded memory store in which
    `graph` already ran threads "t1" and "t2" (user "u1") and "t3" (user "u2"),
    each with `configurable.user_id` set and the `ModelUsageTracker` callback;
  - `graph`: `builder` compiled with that `saver`;
  - `run_id`: the run id of the run of "t1" (for `delete_for_runs`).
  Names a block defines itself replace these.
* Top-level `await`, `async with` and `async for` work (the block is compiled
  with `PyCF_ALLOW_TOP_LEVEL_AWAIT` and run with `asyncio.run`).
* Each block runs in an empty temporary working directory, with the `REDIS_*`
  and `CLICKHOUSE_*` variables unset, so it uses the embedded store.
* `<!-- docs-test: redis -->` marks a block that needs a Redis server: every
  `"redis://..."` or `"rediss://..."` string literal in it is replaced by the
  URL of the test suite's Redis server (`tests.conftest.redis_url()`). Without
  `redis-server` installed it is skipped (it fails under CI=true).
* `<!-- docs-test: continue -->` runs a block in the namespace left by the
  previous block of the same file (one test runs the whole chain).
* `<!-- docs-test: skip: <reason> -->` does not run the block; a reason is
  required. Use it only for what cannot run here.

Blocks in other languages (```bash, plain ```) are not run.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import itertools
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from aiecs_checkpoint import ContextEngineSaver, ModelUsageTracker, track_model_usage
from tests.conftest import REDIS_INSTALLED, redis_url

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]

MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<what>[a-z]+)(?::\s*(?P<why>.*?))?\s*-->")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
REDIS_LITERAL = re.compile(r"""(?P<q>["'])rediss?://[^"']*(?P=q)""")
KNOWN_MARKERS = {"redis", "continue", "skip"}


@dataclass
class Block:
    """One ```python block: where it is, its code and its markers."""

    path: Path
    line: int
    code: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The python blocks of a Markdown file, with the markers just above each."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    pending: dict[str, str] = {}
    i = 0
    while i < len(lines):
        marker = MARKER.search(lines[i])
        fence = FENCE.match(lines[i])
        if marker:
            what = marker["what"]
            if what not in KNOWN_MARKERS:
                raise ValueError(
                    f"{path.name}:{i + 1}: unknown docs-test marker {what!r}"
                )
            if what == "skip" and not marker["why"]:
                raise ValueError(f"{path.name}:{i + 1}: docs-test skip needs a reason")
            pending[what] = marker["why"] or ""
        elif fence:
            end = i + 1
            while end < len(lines) and not FENCE.match(lines[end]):
                end += 1
            if fence["lang"] == "python":
                indent = len(fence["indent"])
                code = "\n".join(line[indent:] for line in lines[i + 1 : end])
                found.append(Block(path, i + 1, code, pending))
            pending = {}
            i = end
        elif lines[i].strip():
            pending = {}
        i += 1
    return found


def chains() -> list[list[Block]]:
    """Blocks grouped so that each `continue` block follows its predecessors."""
    out: list[list[Block]] = []
    for path in DOCS:
        for block in blocks(path):
            if "continue" in block.markers and out and out[-1][-1].path == path:
                out[-1].append(block)
            else:
                out.append([block])
    return out


CHAINS = chains()


# -- the harness --------------------------------------------------------------------


def make_builder() -> StateGraph[Any]:
    """A one-node chat graph whose model reports token usage."""
    reply = AIMessage(
        "hi there",
        usage_metadata={"input_tokens": 12, "output_tokens": 5, "total_tokens": 17},
    )
    model = GenericFakeChatModel(messages=itertools.repeat(reply))

    def chat(state: MessagesState) -> dict[str, Any]:
        track_model_usage("scripted", "fake", "chat")
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("chat", chat)
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    return builder


def namespace() -> dict[str, Any]:
    """What every block starts with (see the module docstring)."""
    builder = make_builder()
    saver = ContextEngineSaver()
    graph = builder.compile(checkpointer=saver)
    inputs = {"messages": [HumanMessage("hello")]}
    run_id = str(uuid.uuid4())
    for thread, user in (("t1", "u1"), ("t2", "u1"), ("t3", "u2")):
        config: Any = {
            "configurable": {"thread_id": thread, "user_id": user},
            "callbacks": [ModelUsageTracker()],
        }
        if thread == "t1":
            config["run_id"] = run_id
        graph.invoke(inputs, config)
    return {
        "__name__": "__docs__",
        "builder": make_builder(),
        "inputs": inputs,
        "saver": saver,
        "graph": graph,
        "run_id": run_id,
    }


def run_block(block: Block, names: dict[str, Any]) -> None:
    """Run one block in `names`, awaiting it when it uses top-level await."""
    code = block.code
    if "redis" in block.markers:
        code = REDIS_LITERAL.sub(repr(redis_url()), code)
    compiled = compile(
        code,
        block.name,
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    result = eval(compiled, names)
    if inspect.iscoroutine(result):
        asyncio.run(result)


@pytest.mark.parametrize("chain", CHAINS, ids=[c[0].name for c in CHAINS])
def test_python_block_runs(
    chain: list[Block], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skipped = [b for b in chain if "skip" in b.markers]
    if skipped:
        pytest.skip(f"{skipped[0].name}: {skipped[0].markers['skip']}")
    if any("redis" in b.markers for b in chain) and not (
        REDIS_INSTALLED or os.environ.get("REDIS_URL") or os.environ.get("CI")
    ):
        pytest.skip(
            "redis-server not installed (apt-get install redis-server redis-tools)"
        )
    external_redis = os.environ.get("REDIS_URL")
    if external_redis:
        redis_url()  # read before the variables are cleared below
    for name in list(os.environ):
        if name.startswith(("REDIS_", "CLICKHOUSE_")):
            monkeypatch.delenv(name)
    if external_redis:
        monkeypatch.setattr("tests.conftest.redis_url", lambda: external_redis)
        monkeypatch.setitem(globals(), "redis_url", lambda: external_redis)
    monkeypatch.chdir(tmp_path)
    names = namespace()
    for block in chain:
        run_block(block, names)


def test_every_doc_has_its_python_blocks_collected() -> None:
    """The parser sees every python fence (a block it missed would never run)."""
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        fences = len(re.findall(r"^\s*```python\s*$", text, flags=re.MULTILINE))
        assert len(blocks(path)) == fences, path.name
    assert sum(len(c) for c in CHAINS) >= 7


def test_markers_are_parsed(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "<!-- docs-test: redis -->\n```python\na = 1\n```\n\n"
        "<!-- docs-test: continue -->\n\n```python\nb = a\n```\n"
        "text between\n```python\nc = 1\n```\n"
        "```bash\nnot python\n```\n"
    )
    found = blocks(doc)
    assert [(b.line, b.markers) for b in found] == [
        (2, {"redis": ""}),
        (8, {"continue": ""}),
        (12, {}),
    ]
    doc.write_text("<!-- docs-test: skip -->\n```python\na = 1\n```\n")
    with pytest.raises(ValueError, match="reason"):
        blocks(doc)


def test_the_readme_test_command_is_what_ci_runs() -> None:
    """One test command: the README shows `scripts/test`, `.ci/run` calls it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"^python3 -m venv .*scripts/test$", readme, flags=re.MULTILINE)
    assert shown == ["python3 -m venv .venv && . .venv/bin/activate && scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^scripts/test \|\| status=\$\?$", ci, flags=re.MULTILINE)
    commands = [x for x in ci.splitlines() if not x.lstrip().startswith("#")]
    assert not [x for x in commands if "pytest" in x], "pytest runs via scripts/test"
