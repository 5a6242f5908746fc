"""Thread history: list one user's threads, page by page, and walk one's history.

Several users run a small support graph; each run names its user in the config
(`configurable["user_id"]`, which LangGraph copies into checkpoint metadata).
`list_threads(filter={"user_id": ...})` then lists that user's threads, newest
activity first, in pages; `get_state_history` walks one thread back in time.
Runs on the embedded memory store: no server, no configuration.

    python examples/threads.py
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from aiecs_checkpoint import ContextEngineSaver


class State(TypedDict):
    question: str
    log: Annotated[list[str], operator.add]


def triage(state: State) -> dict[str, Any]:
    """Decide where the question goes."""
    return {"log": [f"triaged {state['question']!r}"]}


def answer(state: State) -> dict[str, Any]:
    """Answer it."""
    return {"log": ["answered"]}


def build(saver: ContextEngineSaver) -> Any:
    g = StateGraph(State)
    g.add_node("triage", triage)
    g.add_node("answer", answer)
    g.add_edge(START, "triage")
    g.add_edge("triage", "answer")
    g.add_edge("answer", END)
    return g.compile(checkpointer=saver)


def main() -> None:
    saver = ContextEngineSaver()
    graph = build(saver)
    for n in range(7):
        user = "alice" if n % 2 == 0 else "bob"
        config: Any = {"configurable": {"thread_id": f"ticket-{n}", "user_id": user}}
        graph.invoke({"question": f"question {n}", "log": []}, config)

    print("alice's threads, newest first, two per page:")
    page = saver.list_threads(filter={"user_id": "alice"}, limit=2)
    number = 1
    while page:
        for info in page:
            print(
                f"  page {number}: {info.thread_id} at step {info.step}, "
                f"checkpoint {info.checkpoint_id[-8:]}, "
                f"{info.created_at:%H:%M:%S.%f}"
            )
        page = saver.list_threads(filter={"user_id": "alice"}, limit=2, before=page[-1])
        number += 1

    newest = saver.list_threads(filter={"user_id": "alice"}, limit=1)[0]
    print(f"\nhistory of {newest.thread_id}, newest first:")
    thread: Any = {"configurable": {"thread_id": newest.thread_id}}
    for state in graph.get_state_history(thread):
        source = state.metadata.get("source") if state.metadata else None
        print(
            f"  step {state.metadata and state.metadata.get('step')}: "
            f"{source:<5} next={state.next} log={state.values.get('log')}"
        )


if __name__ == "__main__":
    main()
