"""Tracking helpers called with bad arguments inside a node raise typed errors
(`InvalidRecordError`, `InvalidArgumentError`), which still derive from the
built-in `ValueError` / `TypeError` they raised before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

from aiecs_checkpoint import (
    ContextEngineSaver,
    add_context_update,
    track_file_operation,
    track_model_usage,
)
from aiecs_checkpoint.errors import InvalidArgumentError, InvalidRecordError


class State(TypedDict):
    n: int


CALLS: list[tuple[Callable[[], Any], type[Exception]]] = [
    (lambda: track_model_usage("", "p", "chat"), InvalidRecordError),
    (lambda: track_model_usage("m", 3, "chat"), InvalidRecordError),  # type: ignore[arg-type]
    (lambda: track_file_operation("", "write"), InvalidRecordError),
    (lambda: add_context_update("", {}), InvalidRecordError),
    (lambda: add_context_update("u", {}, metadata=[1]), InvalidArgumentError),  # type: ignore[arg-type]
    (lambda: add_context_update("u", {}, metadata={"stamp": 1}), InvalidRecordError),
]


@pytest.mark.parametrize(("call", "expected"), CALLS)
def test_bad_helper_arguments_raise_typed_errors(
    call: Callable[[], Any], expected: type[Exception]
) -> None:
    def node(state: State) -> dict[str, Any]:
        call()
        return {"n": 1}

    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    with ContextEngineSaver() as saver:
        graph = builder.compile(checkpointer=saver)
        with pytest.raises(expected):
            graph.invoke({"n": 0}, {"configurable": {"thread_id": "t"}})
