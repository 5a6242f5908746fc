"""What a newcomer types first works or fails clearly: `setup()`, a connection
string passed to the constructor, token counts in `track_model_usage`, one shape
for every model-tracker entry, names that say which TaskContext they read, and
node code that stays portable to other checkpointers (optional tracking)."""

from __future__ import annotations

import json
import operator
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from typing_extensions import TypedDict

from aiecs_checkpoint import (
    ContextEngineSaver,
    InvalidConfigError,
    InvalidRecordError,
    ModelUsageTracker,
    TaskContext,
    TrackingError,
    acurrent_task_context,
    add_context_update,
    aget_task_context,
    current_task_context,
    get_task_context,
    optional_tracking,
    track_file_operation,
    track_model_usage,
)
from aiecs_checkpoint.domain.task_context import ModelUsage
from tests.conftest import make_saver

ROOT = Path(__file__).resolve().parents[2]


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def cfg(thread: str, **extra: Any) -> Any:
    return {"configurable": {"thread_id": thread}, **extra}


def one_node(node: Any, saver: Any) -> Any:
    g = StateGraph(State)
    g.add_node("node", node)
    g.add_edge(START, "node")
    return g.compile(checkpointer=saver)


# -- the habits of the official savers ---------------------------------------------


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_setup_and_asetup_are_no_ops_and_the_saver_works_after_them(
    store: str,
) -> None:
    def node(state: State) -> dict[str, Any]:
        return {"log": ["ran"]}

    async with make_saver(store) as saver:
        assert saver.setup() is None
        assert await saver.asetup() is None
        graph = one_node(node, saver)
        await graph.ainvoke({"log": []}, cfg("t"))
        assert (await graph.aget_state(cfg("t"))).values == {"log": ["ran"]}
    assert "Nothing to create" in (ContextEngineSaver.setup.__doc__ or "")


def test_a_connection_string_as_first_argument_raises_naming_from_conn_string() -> None:
    with pytest.raises(InvalidConfigError) as caught:
        ContextEngineSaver("redis://:s3cret@localhost:6379/0")  # type: ignore[arg-type]
    message = str(caught.value)
    assert "ContextEngineSaver.from_conn_string(" in message
    assert "s3cret" not in message
    with pytest.raises(InvalidConfigError, match="from_conn_string"):
        ContextEngineSaver(6379)  # type: ignore[arg-type]


# -- model usage: figures and one shape ---------------------------------------------


def test_track_model_usage_records_tokens_latency_and_error() -> None:
    def node(state: State) -> dict[str, Any]:
        track_model_usage(
            "gpt-x",
            "openai",
            "chat",
            input_tokens=42,
            output_tokens=9,
            latency_ms=12.5,
            error=TimeoutError("slow"),
        )
        track_model_usage("gpt-x", "openai", "chat", total_tokens=7, error="quota")
        return {"log": ["x"]}

    saver = ContextEngineSaver()
    one_node(node, saver).invoke({"log": []}, cfg("figures"))
    first, second = saver.get_task_context("figures").model_tracker
    assert (first["input_tokens"], first["output_tokens"], first["total_tokens"]) == (
        42,
        9,
        51,
    )
    assert first["latency_ms"] == 12.5
    assert first["error"] == "TimeoutError: slow"
    assert (second["input_tokens"], second["total_tokens"], second["error"]) == (
        None,
        7,
        "quota",
    )


@pytest.mark.parametrize(
    "figures",
    [
        {"input_tokens": -1},
        {"output_tokens": True},
        {"total_tokens": 1.5},
        {"latency_ms": "fast"},
        {"latency_ms": float("nan")},
        {"error": 3},
    ],
)
def test_malformed_figures_raise_before_anything_is_recorded(
    figures: dict[str, Any],
) -> None:
    seen: list[str] = []

    def node(state: State) -> dict[str, Any]:
        try:
            track_model_usage("m", "p", "chat", **figures)
        except InvalidRecordError as exc:
            seen.append(str(exc))
        return {"log": ["x"]}

    saver = ContextEngineSaver()
    one_node(node, saver).invoke({"log": []}, cfg("bad"))
    assert len(seen) == 1 and next(iter(figures)) in seen[0]
    assert saver.get_task_context("bad").model_tracker == []


def test_every_model_tracker_entry_has_every_key_whoever_wrote_it() -> None:
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    "hi",
                    usage_metadata={
                        "input_tokens": 3,
                        "output_tokens": 2,
                        "total_tokens": 5,
                    },
                )
            ]
        )
    )

    def node(state: MessagesState) -> dict[str, Any]:
        track_model_usage("bare", "p", "chat")
        track_model_usage("full", "p", "chat", input_tokens=1, output_tokens=1)
        return {"messages": [model.invoke(state["messages"])]}

    saver = ContextEngineSaver()
    g = StateGraph(MessagesState)
    g.add_node("node", node)
    g.add_edge(START, "node")
    g.compile(checkpointer=saver).invoke(
        {"messages": [HumanMessage("hello")]},
        cfg("shape", callbacks=[ModelUsageTracker()]),
    )
    recorded = saver.get_task_context("shape").model_tracker
    direct = TaskContext(enable_persistence=False)
    direct.track_model_usage("direct", "p", "chat")
    old = TaskContext.from_dict(
        {
            "model_tracker": [
                {
                    "model_id": "old",
                    "provider_id": "p",
                    "mode": "chat",
                    "timestamp": 0,
                }
            ]
        },
        enable_persistence=False,
    )
    entries = [*recorded, *direct.model_tracker, *old.model_tracker]
    assert [e["model_id"] for e in entries][:2] == ["bare", "full"]
    assert len(entries) == 5
    declared = ModelUsage.__required_keys__
    assert ModelUsage.__optional_keys__ == frozenset()
    for entry in entries:
        assert set(entry) == declared, entry["model_id"]
    tracked = recorded[2]
    assert (tracked["input_tokens"], tracked["total_tokens"]) == (3, 5)
    assert tracked["stamp"] is not None and tracked["stamp"]["node"] == "node"
    assert direct.model_tracker[0]["stamp"] is None


def test_typed_code_reading_token_counts_passes_mypy_strict(tmp_path: Path) -> None:
    """The README's loop over `model_tracker`, type-checked as a user's code."""
    snippet = tmp_path / "user_code.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from aiecs_checkpoint import ContextEngineSaver

            def report(saver: ContextEngineSaver) -> int:
                total = 0
                for call in saver.get_task_context("t1").model_tracker:
                    tokens: int | None = call["input_tokens"]
                    latency: float | None = call["latency_ms"]
                    error: str | None = call["error"]
                    if call["stamp"] is not None:
                        node: str | None = call["stamp"]["node"]
                        print(node, latency, error)
                    total += tokens or 0
                return total
            """
        )
    )
    done = subprocess.run(
        # Errors inside the package are `mypy aiecs_checkpoint`'s business (.ci/run,
        # latest versions); here only the user's code is judged.
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            str(snippet),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- which TaskContext: names that say it --------------------------------------------


def test_the_node_helper_is_current_task_context_and_the_old_names_warn() -> None:
    seen: dict[str, Any] = {}

    def node(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "chat")
        seen["current"] = len(current_task_context().model_tracker)
        with pytest.warns(DeprecationWarning, match="current_task_context"):
            seen["old"] = len(get_task_context().model_tracker)
        return {"log": ["x"]}

    async def anode(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "chat")
        seen["acurrent"] = len((await acurrent_task_context()).model_tracker)
        with pytest.warns(DeprecationWarning, match="acurrent_task_context"):
            seen["aold"] = len((await aget_task_context()).model_tracker)
        return {"log": ["x"]}

    saver = ContextEngineSaver()
    one_node(node, saver).invoke({"log": []}, cfg("names"))
    import asyncio

    asyncio.run(one_node(anode, saver).ainvoke({"log": []}, cfg("anames")))
    assert seen == {"current": 1, "old": 1, "acurrent": 1, "aold": 1}


# -- portable node code: optional tracking -------------------------------------------


def portable_node(state: State) -> dict[str, Any]:
    track_model_usage("m", "p", "chat", input_tokens=1)
    track_file_operation("/tmp/x", "read")
    add_context_update("note", {"n": 1})
    ctx = current_task_context()
    return {"log": [f"seen {len(ctx.model_tracker)}"]}


def test_without_opt_out_helpers_raise_under_another_checkpointer() -> None:
    graph = one_node(portable_node, InMemorySaver())
    with pytest.raises(TrackingError, match="InMemorySaver"):
        graph.invoke({"log": []}, cfg("strict"))


def test_aiecs_tracking_optional_makes_helpers_no_ops_under_other_checkpointers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIECS_TRACKING", "optional")
    out = one_node(portable_node, InMemorySaver()).invoke({"log": []}, cfg("o"))
    assert out == {"log": ["seen 0"]}
    assert one_node(portable_node, None).invoke({"log": []}) == {"log": ["seen 0"]}
    track_model_usage("m", "p", "chat")  # outside any graph: nothing, no error
    saver = ContextEngineSaver()
    out = one_node(portable_node, saver).invoke({"log": []}, cfg("ours"))
    assert out == {"log": ["seen 1"]}, "under ContextEngineSaver it still records"
    assert len(saver.get_task_context("ours").context_history) == 3


async def test_optional_tracking_block_covers_sync_and_async_runs_started_in_it() -> (
    None
):
    async def anode(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "chat")
        ctx = await acurrent_task_context()
        return {"log": [f"seen {len(ctx.model_tracker)}"]}

    with optional_tracking():
        sync_out = one_node(portable_node, InMemorySaver()).invoke(
            {"log": []}, cfg("s")
        )
        async_out = await one_node(anode, InMemorySaver()).ainvoke(
            {"log": []}, cfg("a")
        )
    assert sync_out == async_out == {"log": ["seen 0"]}
    with pytest.raises(TrackingError):
        track_model_usage("m", "p", "chat")


def test_an_unknown_tracking_mode_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIECS_TRACKING", "sometimes")
    with pytest.raises(InvalidConfigError, match="AIECS_TRACKING"):
        one_node(portable_node, InMemorySaver()).invoke({"log": []}, cfg("x"))


def test_recorded_model_usage_round_trips_through_json() -> None:
    def node(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "chat", input_tokens=4, latency_ms=1.0)
        return {"log": ["x"]}

    saver = ContextEngineSaver()
    one_node(node, saver).invoke({"log": []}, cfg("json"))
    ctx = saver.get_task_context("json")
    data = json.loads(json.dumps(ctx.to_dict()["model_tracker"]))
    back = TaskContext.from_dict({"model_tracker": data}, enable_persistence=False)
    assert back.model_tracker == ctx.model_tracker


def test_the_callback_outside_a_saver_warns_only_when_tracking_is_required(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def call_model() -> None:
        model = GenericFakeChatModel(messages=iter([AIMessage("hi")]))
        model.invoke("hello", config={"callbacks": [ModelUsageTracker()]})

    with caplog.at_level("WARNING", logger="aiecs_checkpoint.tracking"):
        with optional_tracking():
            call_model()
        assert caplog.records == []
        call_model()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith("ModelUsageTracker is not recording")
