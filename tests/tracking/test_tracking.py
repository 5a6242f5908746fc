"""Node side effects: model usage, file operations and context updates recorded by
graph nodes land once per executed task, durably with the task's writes, on every
store; the ModelUsageTracker callback records real chat-model calls."""

from __future__ import annotations

import operator
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall
from langchain_core.tools import tool
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command, RetryPolicy, Send, interrupt
from typing_extensions import TypedDict

from aiecs_checkpoint import (
    ContextEngine,
    ContextEngineSaver,
    ModelUsageTracker,
    SerializationError,
    TrackingError,
    acurrent_task_context,
    add_context_update,
    current_task_context,
    track_file_operation,
    track_model_usage,
)
from aiecs_checkpoint.domain.task_context import TaskContext
from aiecs_checkpoint.tracking.records import Stamp
from tests.conftest import (
    REDIS_INSTALLED,
    STORES,
    make_saver,
    make_sync_saver,
    redis_url,
)


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def cfg(thread: str, **extra: Any) -> Any:
    return {"configurable": {"thread_id": thread}, **extra}


def usage_by_node(ctx: TaskContext) -> Counter[str]:
    return Counter(str(u["stamp"]["node"]) for u in ctx.model_tracker)  # type: ignore[typeddict-item]


def linear_graph(saver: Any) -> Any:
    def plan(state: State) -> dict[str, Any]:
        track_model_usage("gpt-x", "openai", "chat")
        track_file_operation("/data/in.csv", "read")
        return {"log": ["plan"]}

    def write(state: State) -> dict[str, Any]:
        track_file_operation("/data/out.csv", "write", source="writer")
        add_context_update("note", {"rows": 3}, {"why": "test"})
        return {"log": ["write"]}

    g = StateGraph(State)
    g.add_node("plan", plan)
    g.add_node("write", write)
    g.add_edge(START, "plan")
    g.add_edge("plan", "write")
    g.add_edge("write", END)
    return g.compile(checkpointer=saver)


@pytest.mark.parametrize("store", STORES)
def test_each_executed_task_records_once_with_its_stamp(store: str) -> None:
    with make_sync_saver(store) as saver:
        graph = linear_graph(saver)
        graph.invoke({"log": []}, cfg("t1"))
        ctx = saver.get_task_context("t1")
        assert [u.update_type for u in ctx.context_history] == [
            "model_usage",
            "file_operation",
            "file_operation",
            "note",
        ]
        assert usage_by_node(ctx) == {"plan": 1}
        usage = ctx.model_tracker[0]
        assert (usage["model_id"], usage["provider_id"], usage["mode"]) == (
            "gpt-x",
            "openai",
            "chat",
        )
        stamp = ctx.context_history[0].metadata["stamp"]
        assert stamp["thread_id"] == "t1"
        assert stamp["node"] == "plan"
        assert stamp["step"] == 1
        assert stamp["checkpoint_ns"].startswith("plan:")
        assert stamp["task_id"] == stamp["checkpoint_ns"].split(":", 1)[1]
        assert ctx.file_tracker["/data/out.csv"]["operation"] == "write"
        assert ctx.file_tracker["/data/out.csv"]["source"] == "writer"
        note = ctx.context_history[3]
        assert note.data == {"rows": 3} and note.metadata["why"] == "test"
        state = graph.get_state(cfg("t1"))
        assert state.values == {"log": ["plan", "write"]}
        for t in saver.list(cfg("t1")):
            assert all(w[1] != "__aiecs_record__" for w in t.pending_writes or [])
        graph.invoke({"log": []}, cfg("t1"))
        assert usage_by_node(saver.get_task_context("t1")) == {"plan": 2}


def fan_graph(saver: Any) -> Any:
    def fan(state: State) -> list[Send]:
        return [Send("worker", {"log": [str(i)]}) for i in range(5)]

    def worker(state: State) -> dict[str, Any]:
        track_model_usage(f"m{state['log'][0]}", "p", "chat")
        return {"log": [f"w{state['log'][0]}"]}

    def inner(state: State) -> dict[str, Any]:
        track_file_operation("/sub/file", "read")
        return {"log": ["inner"]}

    sub = StateGraph(State)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")
    g = StateGraph(State)
    g.add_node("sub", sub.compile())
    g.add_node("worker", worker)
    g.add_edge(START, "sub")
    g.add_conditional_edges("sub", fan, ["worker"])
    g.add_edge("worker", END)
    return g.compile(checkpointer=saver)


@pytest.mark.parametrize("store", STORES)
async def test_parallel_send_tasks_and_subgraph_nodes_record_once_each(
    store: str,
) -> None:
    async with make_saver(store) as saver:
        graph = fan_graph(saver)
        await graph.ainvoke({"log": []}, cfg("fan"))
        ctx = await saver.aget_task_context("fan")
        models = sorted(u["model_id"] for u in ctx.model_tracker)
        assert models == ["m0", "m1", "m2", "m3", "m4"]
        tasks = {u["stamp"]["task_id"] for u in ctx.model_tracker}  # type: ignore[typeddict-item]
        assert len(tasks) == 5
        inner = [u for u in ctx.context_history if u.update_type == "file_operation"]
        assert len(inner) == 1
        assert inner[0].metadata["stamp"]["node"] == "inner"
        assert inner[0].metadata["stamp"]["checkpoint_ns"].startswith("sub:")
        assert "|inner:" in inner[0].metadata["stamp"]["checkpoint_ns"]
        sync_ctx = saver.get_task_context("fan")
        assert [u.to_dict() for u in sync_ctx.context_history] == [
            u.to_dict() for u in ctx.context_history
        ]


@pytest.mark.parametrize("store", STORES)
def test_a_retried_task_keeps_the_usage_of_every_attempt(store: str) -> None:
    attempts: list[int] = []

    def flaky(state: State) -> dict[str, Any]:
        attempts.append(1)
        track_model_usage("m", "p", f"attempt-{len(attempts)}")
        if len(attempts) < 3:
            raise ConnectionError("model timed out")
        return {"log": ["ok"]}

    with make_sync_saver(store) as saver:
        g = StateGraph(State)
        g.add_node(
            "flaky",
            flaky,
            retry_policy=RetryPolicy(
                initial_interval=0.01, jitter=False, retry_on=ConnectionError
            ),
        )
        g.add_edge(START, "flaky")
        graph = g.compile(checkpointer=saver)
        graph.invoke({"log": []}, cfg("retry"))
        ctx = saver.get_task_context("retry")
        assert [u["mode"] for u in ctx.model_tracker] == [
            "attempt-1",
            "attempt-2",
            "attempt-3",
        ]


@pytest.mark.parametrize("store", STORES)
def test_interrupt_and_resume_record_each_execution_once(store: str) -> None:
    def ask(state: State) -> dict[str, Any]:
        add_context_update("asking", {"n": len(state["log"])})
        answer = interrupt("name?")
        track_model_usage("m", "p", "after-answer")
        return {"log": [answer]}

    with make_sync_saver(store) as saver:
        graph = linear_graph(saver)
        g = StateGraph(State)
        g.add_node("ask", ask)
        g.add_edge(START, "ask")
        graph = g.compile(checkpointer=saver)
        graph.invoke({"log": []}, cfg("ir"))
        first = saver.get_task_context("ir")
        assert [u.update_type for u in first.context_history] == ["asking"]
        graph.invoke(Command(resume="bob"), cfg("ir"))
        ctx = saver.get_task_context("ir")
        # the node runs again from its start on resume: "asking" twice, once each
        assert [u.update_type for u in ctx.context_history] == [
            "asking",
            "asking",
            "model_usage",
        ]
        assert graph.get_state(cfg("ir")).values == {"log": ["bob"]}


@pytest.mark.parametrize("store", STORES)
def test_a_failed_task_keeps_its_records_and_resume_does_not_repeat_saved_tasks(
    store: str,
) -> None:
    broken = {"on": True}

    def first(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "first")
        return {"log": ["first"]}

    def second(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "second")
        if broken["on"]:
            raise ValueError("bad input")
        return {"log": ["second"]}

    with make_sync_saver(store) as saver:
        g = StateGraph(State)
        g.add_node("first", first)
        g.add_node("second", second)
        g.add_edge(START, "first")
        g.add_edge("first", "second")
        graph = g.compile(checkpointer=saver)
        with pytest.raises(ValueError, match="bad input"):
            graph.invoke({"log": []}, cfg("fail"))
        assert [u["mode"] for u in saver.get_task_context("fail").model_tracker] == [
            "first",
            "second",
        ]
        broken["on"] = False
        graph.invoke(None, cfg("fail"))
        modes = [u["mode"] for u in saver.get_task_context("fail").model_tracker]
        assert modes == ["first", "second", "second"]


@pytest.mark.parametrize("store", STORES)
def test_exit_durability_keeps_the_records_of_every_step(store: str) -> None:
    with make_sync_saver(store) as saver:
        graph = linear_graph(saver)
        graph.invoke({"log": []}, cfg("exit"), durability="exit")
        ctx = saver.get_task_context("exit")
        assert [u.update_type for u in ctx.context_history] == [
            "model_usage",
            "file_operation",
            "file_operation",
            "note",
        ]


@pytest.mark.parametrize("store", STORES)
def test_copy_prune_delete_and_delete_for_runs_follow_the_records(store: str) -> None:
    with make_sync_saver(store) as saver:
        graph = linear_graph(saver)
        runs = [str(uuid.uuid4()) for _ in range(2)]
        for run in runs:
            graph.invoke({"log": []}, cfg("src", metadata={"run_id": run}))
        assert usage_by_node(saver.get_task_context("src")) == {"plan": 2}
        saver.copy_thread("src", "copy")
        copied = saver.get_task_context("copy")
        assert [u.to_dict() for u in copied.context_history] == [
            u.to_dict() for u in saver.get_task_context("src").context_history
        ]
        saver.prune(["copy"], strategy="keep_latest")
        assert len(saver.get_task_context("copy").context_history) == 8
        saver.delete_for_runs([runs[0]])
        left = saver.get_task_context("src")
        assert {u.metadata["stamp"]["run_id"] for u in left.context_history} == {
            runs[1]
        }
        assert len(left.context_history) == 4
        saver.delete_thread("copy")
        assert saver.get_task_context("copy").context_history == []


def test_helpers_outside_a_graph_or_under_another_checkpointer_raise() -> None:
    with pytest.raises(TrackingError, match="inside a graph node"):
        track_model_usage("m", "p", "chat")
    with pytest.raises(TrackingError, match="inside a graph node"):
        current_task_context()

    def node(state: State) -> dict[str, Any]:
        track_file_operation("/x", "read")
        return {"log": ["x"]}

    g = StateGraph(State)
    g.add_node("node", node)
    g.add_edge(START, "node")
    with pytest.raises(TrackingError, match="InMemorySaver"):
        g.compile(checkpointer=InMemorySaver()).invoke({"log": []}, cfg("other"))
    with pytest.raises(TrackingError, match="no checkpointer"):
        g.compile().invoke({"log": []})
    with pytest.raises(ValueError, match="model_id"):

        def bad(state: State) -> dict[str, Any]:
            track_model_usage("", "p", "chat")
            return {}

        g2 = StateGraph(State)
        g2.add_node("bad", bad)
        g2.add_edge(START, "bad")
        g2.compile(checkpointer=ContextEngineSaver()).invoke({"log": []}, cfg("b"))


def test_an_unserializable_record_fails_in_the_node_and_loses_nothing() -> None:
    lock = threading.Lock()

    def node(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "chat")
        try:
            add_context_update("bad", {"lock": lock})
        except SerializationError:
            add_context_update("caught", {"ok": True})
        return {"log": ["done"]}

    saver = ContextEngineSaver()
    g = StateGraph(State)
    g.add_node("node", node)
    g.add_edge(START, "node")
    g.compile(checkpointer=saver).invoke({"log": []}, cfg("ser"))
    ctx = saver.get_task_context("ser")
    assert [u.update_type for u in ctx.context_history] == ["model_usage", "caught"]


@pytest.mark.parametrize("store", STORES)
async def test_nodes_read_their_task_context_while_running(store: str) -> None:
    seen: list[int] = []

    async def node(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "chat")
        ctx = await acurrent_task_context()
        seen.append(len(ctx.model_tracker))
        return {"log": ["x"]}

    async with make_saver(store) as saver:
        g = StateGraph(State)
        g.add_node("node", node)
        g.add_edge(START, "node")
        graph = g.compile(checkpointer=saver)
        await graph.ainvoke({"log": []}, cfg("live"))
        await graph.ainvoke({"log": []}, cfg("live"))
        assert seen == [1, 2]


# -- the callback handler ------------------------------------------------------------


@tool
def lookup(city: str) -> str:
    """Weather of a city."""
    return f"sunny in {city}"


def react_graph(saver: Any, replies: list[AIMessage]) -> Any:
    model = GenericFakeChatModel(messages=iter(replies))

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke(state["messages"])]}

    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode([lookup]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=saver)


def react_replies() -> list[AIMessage]:
    call = ToolCall(name="lookup", args={"city": "Oslo"}, id="call-1")
    return [
        AIMessage(
            "",
            tool_calls=[call],
            usage_metadata={"input_tokens": 11, "output_tokens": 7, "total_tokens": 18},
        ),
        AIMessage(
            "It is sunny.",
            usage_metadata={"input_tokens": 30, "output_tokens": 5, "total_tokens": 35},
        ),
    ]


@pytest.mark.parametrize("store", STORES)
def test_the_callback_records_model_calls_with_their_token_usage_and_tools(
    store: str,
) -> None:
    with make_sync_saver(store) as saver:
        graph = react_graph(saver, react_replies())
        result = graph.invoke(
            {"messages": [HumanMessage("weather in Oslo?")]},
            cfg("react", callbacks=[ModelUsageTracker()]),
        )
        assert result["messages"][-1].content == "It is sunny."
        ctx = saver.get_task_context("react")
        usage = [
            (u["input_tokens"], u["output_tokens"], u["total_tokens"])  # type: ignore[typeddict-item]
            for u in ctx.model_tracker
        ]
        assert usage == [(11, 7, 18), (30, 5, 35)]
        first = ctx.model_tracker[0]
        assert first["model_id"] == "GenericFakeChatModel"
        assert first["provider_id"] == "genericfakechatmodel"
        assert first["latency_ms"] >= 0  # type: ignore[typeddict-item]
        assert first["error"] is None  # type: ignore[typeddict-item]
        assert {u["stamp"]["node"] for u in ctx.model_tracker} == {"agent"}  # type: ignore[typeddict-item]
        tools = [u for u in ctx.context_history if u.update_type == "tool_call"]
        assert len(tools) == 1
        assert tools[0].data["name"] == "lookup"
        assert tools[0].data["output"] == "sunny in Oslo"
        assert tools[0].metadata["stamp"]["node"] == "tools"


async def test_the_callback_records_a_failed_model_call_with_its_error() -> None:
    class Broken(GenericFakeChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            raise TimeoutError("provider timed out")

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        model = Broken(messages=iter([]))
        try:
            model.invoke(state["messages"])
        except TimeoutError:
            pass
        return {"messages": [AIMessage("fallback")]}

    saver = ContextEngineSaver()
    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_edge(START, "agent")
    graph = g.compile(checkpointer=saver)
    await graph.ainvoke(
        {"messages": [HumanMessage("hi")]}, cfg("err", callbacks=[ModelUsageTracker()])
    )
    ctx = saver.get_task_context("err")
    assert len(ctx.model_tracker) == 1
    assert "TimeoutError: provider timed out" in ctx.model_tracker[0]["error"]  # type: ignore[typeddict-item]


# -- a process killed mid-graph, resumed by another ----------------------------------


@pytest.mark.skipif(
    not (REDIS_INSTALLED or os.environ.get("REDIS_URL") or os.environ.get("CI")),
    reason="needs redis-server",
)
def test_a_process_killed_inside_a_task_leaves_no_record_of_it_and_resume_completes(
    tmp_path: Path,
) -> None:
    url = redis_url()
    prefix = f"k{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "inside-b"
    root = Path(__file__).resolve().parents[2]
    command = [
        sys.executable,
        "-m",
        "tests.tracking_child",
        url,
        prefix,
        "job",
        str(marker),
    ]
    child = subprocess.Popen(command, cwd=root)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the child ended before reaching node b"
            assert time.monotonic() < deadline, "the child never reached node b"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    engine = ContextEngine(redis_url=url, key_prefix=prefix)
    with ContextEngineSaver(engine) as saver:
        modes = [u["mode"] for u in saver.get_task_context("job").model_tracker]
        assert modes == ["a"]
        subprocess.run(command, cwd=root, check=True, timeout=120)
        ctx = saver.get_task_context("job")
        assert [u["mode"] for u in ctx.model_tracker] == ["a", "b", "c"]
        steps = [u["stamp"]["step"] for u in ctx.model_tracker]  # type: ignore[typeddict-item]
        assert steps == [1, 2, 3]
        state = saver.get_tuple({"configurable": {"thread_id": "job"}})
        assert state is not None
        assert state.checkpoint["channel_values"]["log"] == ["a", "b", "c"]


@pytest.mark.parametrize("store", STORES)
def test_delete_for_runs_removes_a_resumed_runs_records_on_earlier_checkpoints(
    store: str,
) -> None:
    def ask(state: State) -> dict[str, Any]:
        answer = interrupt("name?")
        track_model_usage("m", "p", f"answered-{answer}")
        return {"log": [answer]}

    with make_sync_saver(store) as saver:
        g = StateGraph(State)
        g.add_node("ask", ask)
        g.add_edge(START, "ask")
        graph = g.compile(checkpointer=saver)
        first, resume = str(uuid.uuid4()), str(uuid.uuid4())
        graph.invoke({"log": []}, cfg("runs", metadata={"run_id": first}))
        graph.invoke(Command(resume="x"), cfg("runs", metadata={"run_id": resume}))
        ctx = saver.get_task_context("runs")
        assert [u.metadata["stamp"]["run_id"] for u in ctx.context_history] == [resume]
        saver.delete_for_runs([resume])
        assert saver.get_task_context("runs").context_history == []


@pytest.mark.parametrize("store", STORES)
def test_exit_durability_keeps_the_records_of_subgraphs_and_send_tasks(
    store: str,
) -> None:
    with make_sync_saver(store) as saver:
        fan_graph(saver).invoke({"log": []}, cfg("exit-fan"), durability="exit")
        ctx = saver.get_task_context("exit-fan")
        assert sorted(u["model_id"] for u in ctx.model_tracker) == [
            "m0",
            "m1",
            "m2",
            "m3",
            "m4",
        ]
        assert list(ctx.file_tracker) == ["/sub/file"]


async def test_records_of_a_cancelled_run_do_not_outlive_the_deleted_thread() -> None:
    import asyncio

    started = asyncio.Event()

    async def slow(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "cancelled")
        started.set()
        await asyncio.sleep(30)
        return {"log": ["never"]}

    async def quick(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "fresh")
        return {"log": ["quick"]}

    saver = ContextEngineSaver()
    graphs = []
    for node in (slow, quick):
        g = StateGraph(State)
        g.add_node("node", node)
        g.add_edge(START, "node")
        graphs.append(g.compile(checkpointer=saver))
    run = asyncio.ensure_future(graphs[0].ainvoke({"log": []}, cfg("gone")))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await saver.adelete_thread("gone")
    await graphs[1].ainvoke({"log": []}, cfg("gone"))
    ctx = await saver.aget_task_context("gone")
    assert [u["mode"] for u in ctx.model_tracker] == ["fresh"]


def test_the_stamp_metadata_key_is_reserved() -> None:
    def node(state: State) -> dict[str, Any]:
        add_context_update("note", {}, {"stamp": "mine"})
        return {}

    g = StateGraph(State)
    g.add_node("node", node)
    g.add_edge(START, "node")
    graph = g.compile(checkpointer=ContextEngineSaver())
    with pytest.raises(ValueError, match="reserved"):
        graph.invoke({"log": []}, cfg("stamp"))


def _two_node_graph(saver: Any, track: bool) -> Any:
    """`linear_graph`, recording only when `track` (helpers need our saver)."""

    def plan(state: State) -> dict[str, Any]:
        if track:
            track_model_usage("gpt-x", "openai", "chat")
            track_file_operation("/data/in.csv", "read")
        return {"log": ["plan"]}

    def write(state: State) -> dict[str, Any]:
        if track:
            track_file_operation("/data/out.csv", "write", source="writer")
            add_context_update("note", {"rows": 3}, {"why": "test"})
        return {"log": ["write"]}

    g = StateGraph(State)
    g.add_node("plan", plan)
    g.add_node("write", write)
    g.add_edge(START, "plan")
    g.add_edge("plan", "write")
    g.add_edge("write", END)
    return g.compile(checkpointer=saver)


def _run_counting_uuid4(
    saver: Any, track: bool, monkeypatch: pytest.MonkeyPatch
) -> int:
    """uuid4 draws while the graph runs twice on `saver`, uuid4 patched to a
    counter (as test suites do for deterministic ids)."""
    drawn = 0

    def counter() -> uuid.UUID:
        nonlocal drawn
        drawn += 1
        return uuid.UUID(int=drawn)

    with monkeypatch.context() as patch:
        patch.setattr(uuid, "uuid4", counter)
        graph = _two_node_graph(saver, track)
        graph.invoke({"log": []}, cfg("det"))
        graph.invoke({"log": []}, cfg("det"))
    return drawn


@pytest.mark.parametrize("store", STORES)
def test_a_patched_uuid4_neither_merges_records_nor_is_drawn_by_the_saver(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 #5: every record survives whatever uuid4 returns, and the saver
    draws no uuid4 of its own (the user's deterministic ids do not shift)."""
    reference = _run_counting_uuid4(InMemorySaver(), False, monkeypatch)
    with make_sync_saver(store, track_sessions=True) as saver:
        assert _run_counting_uuid4(saver, True, monkeypatch) == reference
        ctx = saver.get_task_context("det")
    kinds = [u.update_type for u in ctx.context_history]
    assert kinds == ["model_usage", "file_operation", "file_operation", "note"] * 2


def _usage(
    saver: ContextEngineSaver, thread: str, ns: str, task: str, mode: str
) -> None:
    """Buffer a model-usage record of task `task` (step 1) run in graph `ns`."""
    task_ns = f"{ns}|n:{task}" if ns else f"n:{task}"
    stamp = Stamp(thread, task_ns, "n", task, 1, None)
    saver.record(
        "model_usage", {"model_id": "m", "provider_id": "p", "mode": mode}, stamp
    )


def _modes(saver: ContextEngineSaver, thread: str) -> list[str]:
    return sorted(u["mode"] for u in saver.get_task_context(thread).model_tracker)


def _ckpt_config(thread: str, ns: str, cid: str) -> Any:
    return {
        "configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": cid}
    }


def _put_checkpoint(saver: ContextEngineSaver, thread: str, ns: str, cid: str) -> None:
    checkpoint = {**empty_checkpoint(), "id": cid}
    meta: Any = {"source": "loop", "step": 1, "parents": {}}
    saver.put(_ckpt_config(thread, ns, ""), checkpoint, meta, {})  # type: ignore[arg-type]


@pytest.mark.parametrize("store", STORES)
def test_records_on_writes_of_a_checkpoint_never_stored_are_not_counted(
    store: str,
) -> None:
    """A process killed between a task's put_writes and its checkpoint's put
    (durability="async") leaves orphan writes; their records never count, in
    the root namespace or a subgraph's, in copies, after prune or
    delete_for_runs, until (if ever) that checkpoint is stored."""
    with make_sync_saver(store) as saver:
        linear_graph(saver).invoke({"log": []}, cfg("orph"))
        assert _modes(saver, "orph") == ["chat"]
        late, other = str(uuid6()), str(uuid6())
        _usage(saver, "orph", "", "ta", "late")
        saver.put_writes(_ckpt_config("orph", "", late), [("log", ["a"])], "ta")
        _usage(saver, "orph", "sub:1", "tb", "sub-orphan")
        saver.put_writes(_ckpt_config("orph", "sub:1", other), [("log", ["b"])], "tb")
        _put_checkpoint(saver, "orph", "", other)  # same id, another namespace
        assert _modes(saver, "orph") == ["chat"]
        saver.copy_thread("orph", "orph-copy")
        assert _modes(saver, "orph-copy") == ["chat"]
        saver.delete_for_runs([str(uuid.uuid4())])
        saver.prune(["orph-copy"], strategy="keep_latest")
        assert _modes(saver, "orph") == _modes(saver, "orph-copy") == ["chat"]
        _put_checkpoint(saver, "orph", "", late)
        assert _modes(saver, "orph") == ["chat", "late"]
        saver.prune(["orph"], strategy="keep_latest")
        assert _modes(saver, "orph") == ["chat", "late"]


@pytest.mark.parametrize("store", STORES)
def test_a_checkpoint_stored_before_its_tasks_writes_land_keeps_their_records(
    store: str,
) -> None:
    """LangGraph may put the checkpoint holding a task's output while the
    task's put_writes is in flight: the put stores the task's records, and
    when the writes land they are not counted twice."""
    with make_sync_saver(store) as saver:
        parent, cid = str(uuid6()), str(uuid6())
        _put_checkpoint(saver, "flight", "", parent)
        _usage(saver, "flight", "", "t1", "in-flight")
        buffer = saver._ctx.records
        taken = buffer.take("flight", "t1")
        assert len(taken) == 1
        _put_checkpoint(saver, "flight", "", cid)
        assert _modes(saver, "flight") == ["in-flight"]
        config = _ckpt_config("flight", "", parent)
        saver.engine.run(
            saver._ctx.engine.checkpoints.put_writes(
                "flight", "", parent, [w.row for w in taken]
            )
        )
        buffer.landed("flight", taken)
        assert _modes(saver, "flight") == ["in-flight"]
        assert buffer.waiting("flight") == []
        saver.put_writes(config, [("log", ["y"])], "t1")
        assert _modes(saver, "flight") == ["in-flight"]
