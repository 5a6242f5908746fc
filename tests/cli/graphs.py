"""The graphs the CLI tests run, and the threads they leave behind.

`populate(saver)` leaves, newest activity first:

* "approval" (user u1): paused on `interrupt()` in node "approve", after node
  "agent" asked a chat model (tokens recorded by `ModelUsageTracker`) and
  wrote a file (`track_file_operation`);
* "ticket-0" .. "ticket-4" (users u1, u2, u1, u2, u1): finished two-node runs.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from aiecs_checkpoint import ContextEngineSaver, ModelUsageTracker, track_file_operation

MARKER = "PLAINTEXT-MARKER-7f3a"
"""Text the approval thread stores in its state, messages and interrupt."""

TICKETS = [f"ticket-{n}" for n in range(5)]
APPROVAL = "approval"


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    log: Annotated[list[str], operator.add]
    approved: bool


def _model() -> GenericFakeChatModel:
    reply = AIMessage(
        f"plan for {MARKER}",
        usage_metadata={"input_tokens": 42, "output_tokens": 9, "total_tokens": 51},
    )
    return GenericFakeChatModel(messages=iter([reply]))


def _agent(tracking: bool) -> Any:
    def agent(state: State) -> dict[str, Any]:
        """Ask the model for a plan and write it down."""
        reply = _model().invoke(state["messages"])
        if tracking:
            track_file_operation("out/plan.md", "write")
        return {"messages": [reply], "log": ["agent"]}

    return agent


def approve(state: State) -> dict[str, Any]:
    """Pause until a human answers."""
    answer = interrupt({"question": f"approve {MARKER}?"})
    return {"approved": answer == "yes", "log": [f"answer {answer}"]}


def finish(state: State) -> dict[str, Any]:
    return {"log": ["done" if state["approved"] else "cancelled"]}


def make_builder(tracking: bool) -> StateGraph[Any]:
    """The approval graph: agent -> approve (interrupts) -> finish; with
    `tracking` the agent records a file operation (ContextEngineSaver only)."""
    g = StateGraph(State)
    g.add_node("agent", _agent(tracking))
    g.add_node("approve", approve)
    g.add_node("finish", finish)
    g.add_edge(START, "agent")
    g.add_edge("agent", "approve")
    g.add_edge("approve", "finish")
    g.add_edge("finish", END)
    return g


builder = make_builder(tracking=True)
"""What `show --graph tests.cli.graphs:builder` loads."""


def build(saver: Any) -> Any:
    """The approval graph compiled with `saver`."""
    return make_builder(isinstance(saver, ContextEngineSaver)).compile(
        checkpointer=saver
    )


def config(thread_id: str, user: str | None = None) -> Any:
    conf: dict[str, Any] = {"thread_id": thread_id}
    if user is not None:
        conf["user_id"] = user
    return {"configurable": conf}


def populate(saver: ContextEngineSaver) -> None:
    """Run the graphs: five finished tickets, then the paused approval thread."""
    graph = build(saver)
    for n, thread_id in enumerate(TICKETS):
        user = "u1" if n % 2 == 0 else "u2"
        graph.invoke(
            {"messages": [HumanMessage(f"question {n}")], "log": []},
            config(thread_id, user),
        )
        graph.invoke(Command(resume="yes"), config(thread_id, user))
    run = {**config(APPROVAL, "u1"), "callbacks": [ModelUsageTracker()]}
    graph.invoke({"messages": [HumanMessage(f"please {MARKER}")], "log": []}, run)


def resume(saver: ContextEngineSaver, thread_id: str = APPROVAL) -> dict[str, Any]:
    """Answer the approval thread's interrupt; returns the final state."""
    result: dict[str, Any] = build(saver).invoke(
        Command(resume="yes"), config(thread_id)
    )
    return result


def history(saver: ContextEngineSaver, thread_id: str) -> list[Any]:
    """`get_state_history` as comparable data (values, next, config, metadata,
    parent, tasks with their interrupts)."""
    out = []
    for s in build(saver).get_state_history(config(thread_id)):
        out.append(
            (
                s.values,
                s.next,
                s.config["configurable"]["checkpoint_id"],
                s.metadata,
                (s.parent_config or {}).get("configurable", {}).get("checkpoint_id"),
                [(t.name, t.interrupts, t.error) for t in s.tasks],
                s.created_at,
            )
        )
    return out


def populate_source(saver: Any) -> None:
    """On another saver: "paused" (at the interrupt) and "finished" (resumed
    without a user id, so its latest metadata has none), both of user u7."""
    graph = build(saver)
    for thread_id in ("paused", "finished"):
        start = {"messages": [HumanMessage(f"hello {thread_id}")], "log": []}
        graph.invoke(start, config(thread_id, "u7"))
    graph.invoke(Command(resume="no"), config("finished"))


class Log(TypedDict):
    log: Annotated[list[str], operator.add]


def nested(saver: Any) -> Any:
    """A graph whose node "child" is a subgraph that interrupts in "inner"."""

    def inner(state: Log) -> dict[str, Any]:
        return {"log": [f"inner {interrupt('inner?')}"]}

    sub = StateGraph(Log)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")
    g = StateGraph(Log)
    g.add_node("child", sub.compile())
    g.add_edge(START, "child")
    g.add_edge("child", END)
    return g.compile(checkpointer=saver)
