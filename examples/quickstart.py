"""Quickstart: a graph that pauses for approval, is resumed, and shows its history.

Runs on the embedded memory store: no server, no configuration. With
`REDIS_URL` set it runs on that Redis instead, so the thread outlives the
process and the command line can show it afterwards:

    python examples/quickstart.py
    REDIS_URL=redis://localhost:6379/0 python examples/quickstart.py
    aiecs-checkpoint history quickstart-1 --url redis://localhost:6379/0
"""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from aiecs_checkpoint import ContextEngineSaver


class State(TypedDict):
    request: str
    log: Annotated[list[str], operator.add]
    approved: bool


def draft(state: State) -> dict[str, object]:
    """Prepare a plan for the request."""
    return {"log": [f"drafted a plan for {state['request']!r}"]}


def approve(state: State) -> dict[str, object]:
    """Pause the graph until a human answers; the answer resumes it."""
    answer = interrupt({"question": "Approve the plan?", "request": state["request"]})
    return {"approved": answer == "yes", "log": [f"human answered {answer!r}"]}


def execute(state: State) -> dict[str, object]:
    """Act on the decision."""
    outcome = "executed the plan" if state["approved"] else "cancelled the plan"
    return {"log": [outcome]}


def build() -> StateGraph:
    builder = StateGraph(State)
    builder.add_node("draft", draft)
    builder.add_node("approve", approve)
    builder.add_node("execute", execute)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "approve")
    builder.add_edge("approve", "execute")
    builder.add_edge("execute", END)
    return builder


def main() -> None:
    saver = ContextEngineSaver.from_env()  # memory, or Redis when REDIS_URL is set
    saver.delete_thread("quickstart-1")  # start afresh when run again on Redis
    print(f"store: {saver.engine.storage_backend}")
    graph = build().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "quickstart-1"}}

    first = graph.invoke({"request": "archive old reports", "log": []}, config)
    question = first["__interrupt__"][0].value
    print(f"paused at 'approve': {question['question']} ({question['request']})")

    final = graph.invoke(Command(resume="yes"), config)
    print(f"resumed and finished: approved={final['approved']}")
    for line in final["log"]:
        print(f"  - {line}")

    print("thread history (newest first):")
    for snapshot in graph.get_state_history(config):
        step = snapshot.metadata.get("step") if snapshot.metadata else None
        source = snapshot.metadata.get("source") if snapshot.metadata else None
        nxt = ",".join(snapshot.next) or "-"
        cid = snapshot.config["configurable"]["checkpoint_id"]
        print(f"  step {step:>2} {source:<6} next={nxt:<8} {cid}")


if __name__ == "__main__":
    main()
