"""Model-based: graphs on several savers of one thread behave as on InMemorySaver.

Random interleavings of graph runs (put and put_writes), `update_state` with
objects read earlier (and maybe edited in place since), reads through
`get_state`, `get_tuple`, `list` and `get_state_history`, and in-place edits of
returned objects at random depths. Every operation runs on one of several
`ContextEngineSaver`s sharing the thread's storage (on Redis, one of them
through its own engine and connections, as another process would) and, in the
same way, on one `InMemorySaver`. After every step, every saver reads exactly
what InMemorySaver reads.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from aiecs_checkpoint import ContextEngineSaver
from tests.conftest import STORES, engine_for

EXAMPLES = int(os.environ.get("AIECS_ISOLATION_EXAMPLES", "12"))
"""Hypothesis examples per store (`AIECS_ISOLATION_EXAMPLES` for a longer run)."""


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    items: Annotated[list[Any], lambda a, b: [*a, *b]]


def respond(state: State) -> dict[str, Any]:
    """An answer quoting what the node saw (so a leaked edit changes it)."""
    seen = [
        [m.content, sorted(m.additional_kwargs.items(), key=str)]
        for m in state["messages"]
    ]
    n = len(state["messages"])
    answer = AIMessage(content=repr(seen)[-200:], id=f"ai-{n}")
    item: Any = {"n": n, "nested": {"seen": len(state["items"]), "tags": ["t"]}}
    if n % 3 == 0:
        item = f"plain string {n}"
    return {"messages": [answer], "items": [item]}


def build(saver: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("respond", respond)
    builder.add_edge(START, "respond")
    return builder.compile(checkpointer=saver)


def shape(values: dict[str, Any]) -> Any:
    """Comparable form of a state (message ids are the caller's, so equal)."""
    return (
        [
            (m.type, m.id, m.content, sorted(m.additional_kwargs.items(), key=str))
            for m in values.get("messages", [])
        ],
        values.get("items", []),
    )


def edit_in_place(values: dict[str, Any], choice: int) -> None:
    """Mutate a returned state somewhere, at one of several depths."""
    messages, items = values.get("messages", []), values.get("items", [])
    if choice % 5 == 0 and messages:
        messages[choice % len(messages)].content = f"edited {choice}"
    elif choice % 5 == 1 and messages:
        messages[choice % len(messages)].additional_kwargs["k"] = {"deep": [choice]}
    elif choice % 5 == 2 and items:
        item = items[choice % len(items)]
        if isinstance(item, dict):
            item["nested"]["tags"].append(f"e{choice}")
        else:
            items[choice % len(items)] = "replaced"
    elif choice % 5 == 3:
        messages.append(HumanMessage(f"smuggled {choice}", id=f"s{choice}"))
    else:
        items.clear()


class SaversMatchInMemory(RuleBasedStateMachine):
    store = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.thread = f"prop-{uuid.uuid4()}"
        self.config = {"configurable": {"thread_id": self.thread}}
        self.ref = build(InMemorySaver())
        prefix = f"p{uuid.uuid4().hex[:10]}"
        first = engine_for(self.store, key_prefix=prefix)
        engines = [first]
        if not self.store.startswith("memory"):
            engines.append(engine_for(self.store, key_prefix=prefix, archive=None))
        self.engines = [engine.connect() for engine in engines]
        self.savers = [
            ContextEngineSaver(first),
            ContextEngineSaver(first),
            ContextEngineSaver(engines[-1]),
        ]
        self.graphs = [build(s) for s in self.savers]
        self.held: list[tuple[Any, Any]] = []
        self.turn = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        for engine in self.engines:
            self.run(engine.close())
        self.loop.close()

    @initialize()
    def first_run(self) -> None:
        self.invoke(0, False)

    @rule(who=st.integers(0, 2), use_async=st.booleans())
    def invoke(self, who: int, use_async: bool) -> None:
        self.turn += 1
        message = {"messages": [HumanMessage(f"turn {self.turn}", id=f"h{self.turn}")]}
        ours = self.graphs[who]
        if use_async:
            self.run(ours.ainvoke(message, self.config))
        else:
            ours.invoke(message, self.config)
        self.ref.invoke(message, self.config)

    @rule(
        who=st.integers(0, 2),
        how=st.sampled_from(["state", "tuple", "list", "history"]),
    )
    def read(self, who: int, how: str) -> None:
        pairs: list[tuple[Any, Any]]
        if how == "state":
            pairs = [
                (
                    self.graphs[who].get_state(self.config).values,
                    self.ref.get_state(self.config).values,
                )
            ]
        elif how == "tuple":
            ours = self.savers[who].get_tuple(self.config)
            ref = self.ref.checkpointer.get_tuple(self.config)
            assert (ours is None) == (ref is None)
            pairs = (
                []
                if ours is None
                else [
                    (
                        ours.checkpoint["channel_values"],
                        ref.checkpoint["channel_values"],
                    )
                ]
            )
        elif how == "list":
            ours_list = list(self.savers[who].list(self.config, limit=4))
            ref_list = list(self.ref.checkpointer.list(self.config, limit=4))
            pairs = [
                (a.checkpoint["channel_values"], b.checkpoint["channel_values"])
                for a, b in zip(ours_list, ref_list, strict=True)
            ]
        else:
            ours_h = list(self.graphs[who].get_state_history(self.config))
            ref_h = list(self.ref.get_state_history(self.config))
            assert len(ours_h) == len(ref_h)
            pairs = [(a.values, b.values) for a, b in zip(ours_h, ref_h, strict=True)]
        for ours_values, ref_values in pairs:
            assert shape(ours_values) == shape(ref_values)
        self.held += pairs[:2]
        self.held = self.held[-8:]

    @precondition(lambda self: bool(self.held))
    @rule(pick=st.integers(0, 7), choice=st.integers(0, 1000))
    def edit_returned(self, pick: int, choice: int) -> None:
        ours, ref = self.held[pick % len(self.held)]
        edit_in_place(ours, choice)
        edit_in_place(ref, choice)

    @precondition(lambda self: bool(self.held))
    @rule(who=st.integers(0, 2), pick=st.integers(0, 7), choice=st.integers(0, 1000))
    def update_with_read_objects(self, who: int, pick: int, choice: int) -> None:
        ours, ref = self.held[pick % len(self.held)]
        if not ours.get("messages") or not ref.get("messages"):
            return
        index = choice % min(len(ours["messages"]), len(ref["messages"]))
        update_ours = {"messages": [ours["messages"][index]]}
        update_ref = {"messages": [ref["messages"][index]]}
        self.graphs[who].update_state(self.config, update_ours)
        self.ref.update_state(self.config, update_ref)

    @invariant()
    def every_saver_reads_what_in_memory_reads(self) -> None:
        expected = shape(self.ref.get_state(self.config).values)
        for saver_graph in self.graphs:
            assert shape(saver_graph.get_state(self.config).values) == expected
        fresh = ContextEngineSaver(self.engines[0])
        got = fresh.get_tuple(self.config)
        ref = self.ref.checkpointer.get_tuple(self.config)
        assert got is not None and ref is not None
        assert shape(got.checkpoint["channel_values"]) == shape(
            ref.checkpoint["channel_values"]
        )


@pytest.mark.parametrize("store", STORES)
def test_savers_with_edited_reads_behave_as_in_memory_saver(store: str) -> None:
    machine = type(f"Machine_{store}", (SaversMatchInMemory,), {"store": store})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
