"""Child process of the restart test: runs a three-node graph on Redis.

`python -m tests.tracking_child REDIS_URL PREFIX THREAD MARKER` runs the graph;
node "b" records its usage, then creates MARKER and sleeps until killed when
MARKER does not exist yet, so the parent can kill the process inside "b",
before b's writes are saved. A second run (MARKER present) resumes and finishes.
"""

from __future__ import annotations

import operator
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, track_model_usage


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def main(url: str, prefix: str, thread: str, marker: Path) -> None:
    first_run = not marker.exists()

    def a(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "a")
        return {"log": ["a"]}

    def b(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "b")
        if first_run:
            marker.touch()
            time.sleep(60)  # killed here by the parent
        return {"log": ["b"]}

    def c(state: State) -> dict[str, Any]:
        track_model_usage("m", "p", "c")
        return {"log": ["c"]}

    g = StateGraph(State)
    g.add_node("a", a)
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    engine = ContextEngine(redis_url=url, key_prefix=prefix)
    with ContextEngineSaver(engine) as saver:
        graph = g.compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": thread}}
        state = graph.get_state(config)
        graph.invoke(None if state.next else {"log": []}, config, durability="sync")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]))
