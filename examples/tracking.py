"""Tracking: nodes record file operations, a callback records model usage.

A small ReAct-style loop: an agent node asks a chat model (a scripted fake
model, so no API key is needed), a tool node runs the tool it asked for, and a
report node writes a file. `ModelUsageTracker` in the run config records every
model call (tokens, latency) and tool call; the nodes record their file
operations with `track_file_operation`. Then the thread's TaskContext is printed.
Runs on the embedded memory store: no server, no configuration.

    python examples/tracking.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from aiecs_checkpoint import (
    ContextEngineSaver,
    ModelUsageTracker,
    add_context_update,
    track_file_operation,
)

WORKDIR = Path(tempfile.mkdtemp(prefix="aiecs-tracking-"))


@tool
def read_notes(topic: str) -> str:
    """Read the notes kept on a topic."""
    path = WORKDIR / f"{topic}.txt"
    path.write_text(f"{topic}: ship on Friday\n")
    track_file_operation(path, "read", source="tool")
    return path.read_text()


MODEL = GenericFakeChatModel(
    messages=iter(
        [
            AIMessage(
                "",
                tool_calls=[
                    ToolCall(name="read_notes", args={"topic": "release"}, id="c1")
                ],
                usage_metadata={
                    "input_tokens": 42,
                    "output_tokens": 9,
                    "total_tokens": 51,
                },
            ),
            AIMessage(
                "The release ships on Friday.",
                usage_metadata={
                    "input_tokens": 77,
                    "output_tokens": 8,
                    "total_tokens": 85,
                },
            ),
        ]
    )
)


def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
    """Ask the model what to do next."""
    return {"messages": [MODEL.invoke(state["messages"])]}


def report(state: MessagesState) -> dict[str, Any]:
    """Write the answer to a report file."""
    path = WORKDIR / "report.md"
    path.write_text(str(state["messages"][-1].content))
    track_file_operation(path, "write")
    add_context_update("report", {"path": str(path), "words": 5})
    return {}


def build(saver: ContextEngineSaver) -> Any:
    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode([read_notes]))
    g.add_node("report", report)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: "report"})
    g.add_edge("tools", "agent")
    g.add_edge("report", END)
    return g.compile(checkpointer=saver)


def main() -> None:
    saver = ContextEngineSaver()
    graph = build(saver)
    config: Any = {
        "configurable": {"thread_id": "release-check"},
        "callbacks": [ModelUsageTracker()],
    }
    result = graph.invoke({"messages": [HumanMessage("When do we ship?")]}, config)
    print("answer:", result["messages"][-1].content)

    ctx = saver.get_task_context("release-check")
    print("\nmodel calls:")
    for call in ctx.model_tracker:
        extra: Any = call
        print(
            f"  {call['model_id']} ({call['provider_id']}) in node "
            f"{extra['stamp']['node']!r}: {extra['input_tokens']} in / "
            f"{extra['output_tokens']} out tokens, {extra['latency_ms']:.1f} ms"
        )
    total = sum(int(dict(c).get("total_tokens", 0)) for c in ctx.model_tracker)
    print(f"  total tokens: {total}")
    print("\nfiles:")
    for path, op in ctx.file_tracker.items():
        print(f"  {op['operation']:<5} {path} (by {op['source']})")
    print("\nhistory:")
    for update in ctx.context_history:
        stamp = update.metadata["stamp"]
        print(
            f"  step {stamp['step']} {stamp['node']:<6} {update.update_type:<14} "
            f"{update.data}"
        )


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(WORKDIR, ignore_errors=True)
