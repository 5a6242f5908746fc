"""`show` without the graph: next nodes read off a checkpoint agree with
LangGraph's own `StateSnapshot.next` at every checkpoint of a history."""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt
from typing_extensions import TypedDict

from aiecs_checkpoint import ContextEngineSaver
from aiecs_checkpoint.cli import inspect, storage


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def fan_out() -> StateGraph[Any]:
    """draft sends to `side` and routes to `approve` (which interrupts) in one
    step: at the interrupt, `side` has finished and `approve` has not."""

    def draft(state: State) -> dict[str, Any]:
        return {"log": ["draft"]}

    def side(state: State) -> dict[str, Any]:
        return {"log": ["side"]}

    def approve(state: State) -> dict[str, Any]:
        return {"log": [f"approve {interrupt('ok?')}"]}

    def route(state: State) -> list[Any]:
        return [Send("side", {"log": []}), "approve"]

    g = StateGraph(State)
    g.add_node("draft", draft)
    g.add_node("side", side)
    g.add_node("approve", approve)
    g.add_edge(START, "draft")
    g.add_conditional_edges("draft", route, ["side", "approve"])
    g.add_edge("approve", END)
    return g


def join() -> StateGraph[Any]:
    """a and b run in parallel; c waits for both (a `join:` channel); b
    interrupts, so at the interrupt a has finished."""

    def node(name: str, ask: bool = False) -> Any:
        def run(state: State) -> dict[str, Any]:
            if ask:
                interrupt(f"{name}?")
            return {"log": [name]}

        return run

    g = StateGraph(State)
    g.add_node("a", node("a"))
    g.add_node("b", node("b", ask=True))
    g.add_node("c", node("c"))
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge(["a", "b"], "c")
    g.add_edge("c", END)
    return g


def derived(saver: ContextEngineSaver, config: Any, live: bool) -> list[str]:
    tup = saver.get_tuple(config)
    assert tup is not None
    cid = tup.config["configurable"]["checkpoint_id"]
    writes = storage.stored_writes(saver, "t", "", cid)
    return sorted(inspect.next_nodes(tup.checkpoint, writes, live))


def check(builder: StateGraph[Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(the paused thread's current next, each checkpoint's next once finished),
    after checking both against LangGraph's."""
    saver = ContextEngineSaver()
    graph = builder.compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": "t"}}
    graph.invoke({"log": []}, config)
    paused = graph.get_state(config).next
    assert derived(saver, config, live=True) == sorted(paused)
    graph.invoke(Command(resume="yes"), config)
    seen = []
    for snap in graph.get_state_history(config):
        assert derived(saver, snap.config, live=False) == sorted(snap.next), snap
        seen.append(snap.next)
    assert derived(saver, config, live=True) == []
    return paused, seen


def test_next_nodes_skip_finished_sends_and_keep_interrupted_tasks() -> None:
    paused, seen = check(fan_out())
    assert paused == ("approve",)  # side finished, approve interrupted
    assert sorted(seen[-3]) == ["approve", "side"]
    assert ("__start__",) in seen and () in seen


def test_next_nodes_follow_join_edges_and_parallel_tasks() -> None:
    paused, seen = check(join())
    assert paused == ("b",)  # a finished, b interrupted
    assert ("c",) in seen and ("a", "b") in seen
