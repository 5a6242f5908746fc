"""`Send` arguments that carry the state are stored by reference, read back exactly.

LangGraph's prebuilt agent sends each tool call with the whole state; the
saver stores such a `Send`'s message list as a reference to the element log
(`saver.sends`). Every read (pending writes, `get_state().tasks`, history, a
cold reader in another saver) returns exactly what InMemorySaver returns, the
graph resumes to the same end, and history rewrites keep the references valid.
"""

from __future__ import annotations

import operator
import uuid
import warnings
from typing import Annotated, Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send
from typing_extensions import TypedDict

from aiecs_checkpoint import ContextEngineSaver
from aiecs_checkpoint.stores import refs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    results: Annotated[list[str], operator.add]


def plan(state: State) -> dict[str, Any]:
    n = len(state["messages"])
    calls = [{"name": "t", "args": {"i": i}, "id": f"c{n}-{i}"} for i in range(3)]
    return {"messages": [AIMessage(content=f"plan {n}", id=f"p{n}", tool_calls=calls)]}


def fan_out(state: State) -> list[Send]:
    last = state["messages"][-1]
    return [
        Send(
            "work",
            {"call": call, "state": state, "meta": {"history": state["messages"]}},
        )
        for call in last.tool_calls
    ]


def work(arg: dict[str, Any]) -> dict[str, Any]:
    seen = len(arg["state"]["messages"]) + len(arg["meta"]["history"])
    return {
        "messages": [
            ToolMessage(
                content=f"{arg['call']['args']['i']} saw {seen}",
                tool_call_id=arg["call"]["id"],
                id=f"r-{arg['call']['id']}",
            )
        ],
        "results": [arg["call"]["id"]],
    }


def build(saver: Any, interrupt: bool = False) -> Any:
    builder = StateGraph(State)
    builder.add_node("plan", plan)
    builder.add_node("work", work)
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", fan_out, ["work"])
    builder.add_edge("work", END)
    return builder.compile(
        checkpointer=saver, interrupt_before=["work"] if interrupt else None
    )


def question(turn: int) -> dict[str, Any]:
    text = f"question {turn} " + "q" * 200
    return {"messages": [HumanMessage(text, id=f"h{turn}")]}


def shape(value: Any) -> Any:
    """A comparable form of values, writes and Send arguments."""
    if isinstance(value, Send):
        return ("Send", value.node, shape(value.arg))
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shape(v) for v in value]
    if hasattr(value, "model_dump"):
        return (type(value).__name__, value.model_dump())
    return value


def tasks_shape(snapshot: Any) -> Any:
    return sorted(str(shape([t.name, t.path[0], t.path[1:]])) for t in snapshot.tasks)


async def run_pair(saver: ContextEngineSaver, turns: int) -> tuple[Any, Any, Any]:
    """The same interrupted conversation on our saver and on InMemorySaver."""
    ours, ref = build(saver, interrupt=True), build(InMemorySaver(), interrupt=True)
    config = {"configurable": {"thread_id": f"send-{uuid.uuid4()}"}}
    for turn in range(turns):
        await ours.ainvoke(question(turn), config)
        await ref.ainvoke(question(turn), config)
        if turn < turns - 1:
            await ours.ainvoke(None, config)
            await ref.ainvoke(None, config)
    return ours, ref, config


def pending_shape(tup: Any) -> Any:
    return sorted(
        str(shape([channel, value])) for _, channel, value in tup.pending_writes
    )


async def test_sends_carrying_state_read_back_exactly_and_resume(
    saver: ContextEngineSaver,
) -> None:
    ours, ref, config = await run_pair(saver, 4)
    mine, theirs = await ours.aget_state(config), await ref.aget_state(config)
    assert mine.next == theirs.next == ("work", "work", "work")
    assert tasks_shape(mine) == tasks_shape(theirs)
    got = await saver.aget_tuple(config)
    expected = await ref.checkpointer.aget_tuple(config)
    assert got is not None and expected is not None
    assert pending_shape(got) == pending_shape(expected)
    assert shape(got.checkpoint["channel_values"]) == shape(
        expected.checkpoint["channel_values"]
    )
    cold = ContextEngineSaver(saver.engine)
    cold_tuple = await cold.aget_tuple(config)
    assert cold_tuple is not None and pending_shape(cold_tuple) == pending_shape(
        expected
    )
    history = [shape(s.values) async for s in ours.aget_state_history(config)]
    assert history == [shape(s.values) async for s in ref.aget_state_history(config)]
    cold_history = [
        shape(s.values) async for s in build(cold).aget_state_history(config)
    ]
    assert cold_history == history
    await ours.ainvoke(None, config)
    await ref.ainvoke(None, config)
    assert shape((await ours.aget_state(config)).values) == shape(
        (await ref.aget_state(config)).values
    )


async def test_a_send_repeating_the_messages_stores_them_by_reference(
    saver: ContextEngineSaver,
) -> None:
    _, _, config = await run_pair(saver, 6)
    thread_id = config["configurable"]["thread_id"]
    engine = saver.engine
    thread = engine.run(engine.checkpoints.export_thread(thread_id))
    values = [
        w.value
        for ns in thread.values()
        for by in ns.writes.values()
        for w in by.values()
        if w.channel == "__pregel_tasks"
    ]
    values += [
        item
        for ns in thread.values()
        for (ch, _), log in ns.logs.items()
        if ch == "__pregel_tasks"
        for item in log
    ]
    shared = [v for v in values if refs.is_ref(v)]
    inline = [v for v in values if not refs.is_ref(v)]
    assert shared, "no Send was stored by reference"
    assert all(len(v[1]) < 2_000 for v in inline), "a long message list was inlined"
    message_bytes = sum(
        len(item[1])
        for ns in thread.values()
        for (ch, _), log in ns.logs.items()
        if ch == "messages"
        for item in log
    )
    assert max(len(v[1]) for v in shared) < message_bytes / 4


async def test_rewrites_keep_send_references_readable(
    saver: ContextEngineSaver,
) -> None:
    ours, _, config = await run_pair(saver, 3)
    thread_id = config["configurable"]["thread_id"]
    before = await saver.aget_tuple(config)
    assert before is not None
    copy_id = f"{thread_id}-copy"
    await saver.acopy_thread(thread_id, copy_id)
    await saver.acopy_thread(thread_id, copy_id)
    await saver.aprune([thread_id], strategy="keep_latest")
    for target in (thread_id, copy_id):
        for reader in (saver, ContextEngineSaver(saver.engine)):
            after = await reader.aget_tuple({"configurable": {"thread_id": target}})
            assert after is not None
            assert pending_shape(after) == pending_shape(before)
    await ours.ainvoke(None, config)
    final = (await ours.aget_state(config)).values
    last_plan = final["messages"][-4]
    assert set(final["results"][-3:]) == {c["id"] for c in last_plan.tool_calls}


async def test_a_copy_into_a_diverged_thread_keeps_send_references_readable(
    saver: ContextEngineSaver,
) -> None:
    """Copying into a thread whose element log went its own way stores the
    source's log under a fresh epoch; the copied refs must follow it."""
    graph = build(saver, interrupt=True)
    source = {"configurable": {"thread_id": f"src-{uuid.uuid4()}"}}
    target_id = f"dst-{uuid.uuid4()}"
    target = {"configurable": {"thread_id": target_id}}
    for turn in range(2):
        await graph.ainvoke(question(turn), source)
        await graph.ainvoke(None, source)
    await saver.acopy_thread(source["configurable"]["thread_id"], target_id)
    await graph.ainvoke(question(10), target)
    await graph.ainvoke(None, target)
    await graph.ainvoke(question(20), source)
    expected = await saver.aget_tuple(source)
    assert expected is not None
    await saver.acopy_thread(source["configurable"]["thread_id"], target_id)
    for reader in (saver, ContextEngineSaver(saver.engine)):
        copied = await reader.aget_tuple(target)
        assert copied is not None
        assert pending_shape(copied) == pending_shape(expected)
    await graph.ainvoke(None, target)
    assert (await graph.aget_state(target)).next == ()


async def test_deleting_earlier_runs_keeps_later_send_references_readable(
    saver: ContextEngineSaver,
) -> None:
    graph = build(saver, interrupt=True)
    config: Any = {"configurable": {"thread_id": f"runs-{uuid.uuid4()}"}}
    first = {**config, "metadata": {"run_id": "first"}}
    await graph.ainvoke(question(0), first)
    await graph.ainvoke(None, first)
    second = {**config, "metadata": {"run_id": "second"}}
    await graph.ainvoke(question(1), second)
    before = await saver.aget_tuple(config)
    assert before is not None
    await saver.adelete_for_runs(["first"])
    for reader in (saver, ContextEngineSaver(saver.engine)):
        after = await reader.aget_tuple(config)
        assert after is not None
        assert pending_shape(after) == pending_shape(before)


def scripted_model() -> Any:
    replies = []
    for turn in range(12):
        replies.append(
            AIMessage(
                content="",
                id=f"ai-{turn}-call",
                tool_calls=[
                    {"name": "lookup", "args": {"q": f"q{turn}"}, "id": f"c{turn}"}
                ],
            )
        )
        replies.append(AIMessage(content=f"answer {turn}", id=f"ai-{turn}-answer"))

    class Model(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    return Model(messages=iter(replies))


@tool
def lookup(q: str) -> str:
    """Look something up."""
    return f"result for {q}: " + "x" * 120


def stored_bytes(saver: ContextEngineSaver, thread_id: str) -> int:
    engine = saver.engine
    thread = engine.run(engine.checkpoints.export_thread(thread_id))
    total = 0
    for ns in thread.values():
        total += sum(len(w.value[1]) for by in ns.writes.values() for w in by.values())
        total += sum(len(i[1]) for log in ns.logs.values() for i in log)
        total += sum(len(v[1]) for v in ns.values.values() if isinstance(v, tuple))
        total += sum(
            len(r.checkpoint[1]) + len(r.metadata[1]) for r in ns.rows.values()
        )
    return total


async def test_the_prebuilt_agent_v2_stores_about_what_v1_stores() -> None:
    from langgraph.prebuilt import create_react_agent

    sizes: dict[str, int] = {}
    finals: dict[str, Any] = {}
    for version in ("v1", "v2"):
        for saver in (ContextEngineSaver(), InMemorySaver()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                agent = create_react_agent(
                    scripted_model(), [lookup], checkpointer=saver, version=version
                )
            config = {"configurable": {"thread_id": version}}
            for turn in range(12):
                await agent.ainvoke(question(turn), config)
            state = (await agent.aget_state(config)).values
            finals[f"{version}-{type(saver).__name__}"] = [
                (m.type, m.content, getattr(m, "tool_call_id", None))
                for m in state["messages"]
            ]
            if isinstance(saver, ContextEngineSaver):
                sizes[version] = stored_bytes(saver, version)
    assert finals["v2-ContextEngineSaver"] == finals["v2-InMemorySaver"]
    assert finals["v1-ContextEngineSaver"] == finals["v1-InMemorySaver"]
    assert sizes["v2"] <= 1.5 * sizes["v1"], sizes
