"""Every object a read returns is the caller's own, at every depth.

Editing what `get_state`, `get_tuple`, `list` or `get_state_history` returned,
or what a graph run started from, never changes what a later read returns, in
this process or another; and the caches stay exact when their byte budget
evicts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from aiecs_checkpoint import ContextEngineSaver, InvalidConfigError
from tests.conftest import REDIS_INSTALLED, engine_for, make_saver, redis_url


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    notes: Annotated[list[Any], lambda a, b: [*a, *b]]


def reply(state: State) -> dict[str, Any]:
    """Answer the last message, quoting what the node sees of the first one."""
    first = state["messages"][0]
    seen = f"{first.content}|{first.additional_kwargs.get('k')}"
    note = state["notes"][0] if state["notes"] else None
    text = json.dumps([seen, note], sort_keys=True)
    answer = AIMessage(content=text, id=f"ai-{len(state['messages'])}")
    return {"messages": [answer], "notes": [{"n": len(state["notes"])}]}


def graph(saver: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=saver)


def cfg(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


def start(text: str) -> dict[str, Any]:
    return {
        "messages": [
            HumanMessage(content=text, id=f"h-{text}", additional_kwargs={"k": "v"})
        ],
        "notes": [{"tag": {"deep": ["a"]}}],
    }


def vandalize(values: dict[str, Any]) -> None:
    """Edit every level of what a read returned, in place."""
    first = values["messages"][0]
    first.content = "redacted for the UI"
    first.additional_kwargs["k"] = "edited"
    first.additional_kwargs["new"] = {"x": 1}
    values["messages"].append(HumanMessage(content="smuggled", id="smuggled"))
    values["notes"][0]["tag"]["deep"].append("edited")
    values["notes"][0]["extra"] = True


def pristine(values: dict[str, Any]) -> None:
    first = values["messages"][0]
    assert first.content == "hello"
    assert first.additional_kwargs == {"k": "v"}
    assert all(m.id != "smuggled" for m in values["messages"])
    assert values["notes"][0] == {"tag": {"deep": ["a"]}}


async def test_editing_what_get_state_returned_reaches_no_run_and_no_read(
    saver: ContextEngineSaver,
) -> None:
    g, config = graph(saver), cfg(f"iso-{uuid.uuid4()}")
    await g.ainvoke(start("hello"), config)
    snap = await g.aget_state(config)
    vandalize(snap.values)
    out = await g.ainvoke({"messages": [HumanMessage("again", id="h2")]}, config)
    assert json.loads(out["messages"][-1].content) == [
        "hello|v",
        {"tag": {"deep": ["a"]}},
    ]
    pristine((await g.aget_state(config)).values)
    for old in [s async for s in g.aget_state_history(config)]:
        if old.values.get("messages"):
            pristine(old.values)


def test_editing_what_sync_reads_returned_changes_no_later_read(
    sync_saver: ContextEngineSaver,
) -> None:
    g, config = graph(sync_saver), cfg(f"iso-{uuid.uuid4()}")
    g.invoke(start("hello"), config)
    tup = sync_saver.get_tuple(config)
    assert tup is not None
    vandalize(tup.checkpoint["channel_values"])
    for listed in sync_saver.list(config, limit=2):
        if listed.checkpoint["channel_values"].get("messages"):
            vandalize(listed.checkpoint["channel_values"])
    for snap in g.get_state_history(config):
        if snap.values.get("messages"):
            vandalize(snap.values)
    pristine(g.get_state(config).values)
    again = sync_saver.get_tuple(config)
    assert again is not None
    pristine(again.checkpoint["channel_values"])
    for snap in g.get_state_history(config):
        if snap.values.get("messages"):
            pristine(snap.values)


async def test_a_node_editing_state_in_place_without_returning_it_stores_nothing(
    saver: ContextEngineSaver,
) -> None:
    """Unsupported, as in LangGraph: the edit lives in that run's memory only
    (with durability="sync"; with the default, a checkpoint saved in the
    background may or may not have been serialized before the edit, as with
    every checkpointer). Every read, in this process or another, returns the
    same stored values, never the run's edited object."""

    def sneaky(state: State) -> dict[str, Any]:
        state["messages"][0].content = "edited in place"
        state["notes"][0]["tag"]["deep"].append("edited")
        return {"notes": [{"n": 1}]}

    builder = StateGraph(State)
    builder.add_node("sneaky", sneaky)
    builder.add_edge(START, "sneaky")
    g, config = builder.compile(checkpointer=saver), cfg(f"iso-{uuid.uuid4()}")
    await g.ainvoke(start("hello"), config, durability="sync")
    await g.ainvoke({"notes": [{"n": 2}]}, config, durability="sync")
    pristine((await g.aget_state(config)).values)
    other = ContextEngineSaver(saver.engine)
    mine, theirs = await saver.aget_tuple(config), await other.aget_tuple(config)
    assert mine is not None and theirs is not None
    assert mine.checkpoint["channel_values"] == theirs.checkpoint["channel_values"]


async def test_a_message_edited_and_resubmitted_as_input_is_stored_edited(
    saver: ContextEngineSaver,
) -> None:
    g, config = graph(saver), cfg(f"iso-{uuid.uuid4()}")
    await g.ainvoke(start("hello"), config)
    first = (await g.aget_state(config)).values["messages"][0]
    first.content = "hello, edited"
    await g.ainvoke({"messages": [first]}, config)
    state = (await g.aget_state(config)).values
    assert state["messages"][0].content == "hello, edited"
    ref, ref_config = graph(InMemorySaver()), cfg("ref")
    await ref.ainvoke(start("hello"), ref_config)
    ref_first = (await ref.aget_state(ref_config)).values["messages"][0]
    ref_first.content = "hello, edited"
    await ref.ainvoke({"messages": [ref_first]}, ref_config)
    expected = (await ref.aget_state(ref_config)).values
    assert [m.content for m in state["messages"]] == [
        m.content for m in expected["messages"]
    ]


async def test_update_state_with_values_read_and_edited_earlier_stores_the_edit(
    saver: ContextEngineSaver,
) -> None:
    g, config = graph(saver), cfg(f"iso-{uuid.uuid4()}")
    await g.ainvoke(start("hello"), config)
    await g.ainvoke({"messages": [HumanMessage("two", id="h-two")]}, config)
    messages = (await g.aget_state(config)).values["messages"]
    messages[0].content = "fixed"
    await g.aupdate_state(config, {"messages": [messages[0]]})
    assert (await g.aget_state(config)).values["messages"][0].content == "fixed"
    fresh = ContextEngineSaver(saver.engine)
    got = await fresh.aget_tuple(config)
    assert got is not None
    assert got.checkpoint["channel_values"]["messages"][0].content == "fixed"


def checkpoint_of(items: list[Any], step: int) -> tuple[Any, Any, str]:
    cp = empty_checkpoint()
    cp["id"] = str(uuid.UUID(int=step + 1))
    version = f"{step + 1:032}.0"
    cp["channel_values"] = {"items": items}
    cp["channel_versions"] = {"items": version}
    return cp, {"source": "loop", "step": step}, version


async def test_a_raw_put_of_read_objects_edited_in_place_stores_the_edits(
    saver: ContextEngineSaver,
) -> None:
    """Outside a graph run, objects read back and edited are compared with
    what is stored before their positions are reused."""
    config: Any = {"configurable": {"thread_id": f"raw-{uuid.uuid4()}"}}
    items: list[Any] = [{"i": i, "tags": ["t"]} for i in range(20)] + ["s", 7]
    cp, md, version = checkpoint_of(items, 0)
    config = await saver.aput(config, cp, md, {"items": version})
    got = await saver.aget_tuple(config)
    assert got is not None
    read = got.checkpoint["channel_values"]["items"]
    assert read == items and read[0] is not items[0]
    read[3]["tags"].append("edited")
    read[5]["i"] = -5
    cp, md, version = checkpoint_of([*read, {"i": 99}], 1)
    config = await saver.aput(config, cp, md, {"items": version})
    other = ContextEngineSaver(saver.engine)
    for reader in (saver, other):
        again = await reader.aget_tuple(config)
        assert again is not None
        assert again.checkpoint["channel_values"]["items"] == [*read, {"i": 99}]


async def test_a_small_cache_budget_evicts_and_every_read_stays_exact(
    store_name: str,
) -> None:
    async with make_saver(store_name, cache_bytes=4_000) as small:
        g = graph(small)
        threads = [f"budget-{uuid.uuid4()}" for _ in range(6)]
        for turn in range(4):
            for t in threads:
                text = f"turn {turn} of {t} " + "x" * 300
                await g.ainvoke(
                    {"messages": [HumanMessage(text, id=f"{t}-{turn}")]}, cfg(t)
                )
        cache = small._ctx.cache
        assert cache.used <= 4_000 + 4 * 2_000
        for t in threads:
            state = (await g.aget_state(cfg(t))).values
            contents = [m.content for m in state["messages"] if m.type == "human"]
            assert contents == [f"turn {i} of {t} " + "x" * 300 for i in range(4)]
        fresh = ContextEngineSaver(small.engine)
        for t in threads:
            mine = await small.aget_tuple(cfg(t))
            theirs = await fresh.aget_tuple(cfg(t))
            assert mine is not None and theirs is not None
            assert (
                mine.checkpoint["channel_values"] == theirs.checkpoint["channel_values"]
            )


def test_cache_bytes_is_validated() -> None:
    for bad in (-1, "64", True, 1.5):
        with pytest.raises(InvalidConfigError, match="cache_bytes"):
            ContextEngineSaver(cache_bytes=bad)  # type: ignore[arg-type]


READER = """
import json, sys
from aiecs_checkpoint import ContextEngineSaver, ContextEngine
url, prefix, thread = sys.argv[1:4]
saver = ContextEngineSaver(ContextEngine(redis_url=url, key_prefix=prefix))
out = []
for t in saver.list({"configurable": {"thread_id": thread}}):
    msgs = t.checkpoint["channel_values"].get("messages", [])
    out.append([t.config["configurable"]["checkpoint_id"], [m.content for m in msgs],
                t.checkpoint["channel_values"].get("notes", [])])
print(json.dumps(out))
"""


@pytest.mark.skipif(not REDIS_INSTALLED, reason="needs redis-server")
async def test_every_process_reads_equal_values_for_every_checkpoint() -> None:
    prefix = f"x{uuid.uuid4().hex[:10]}"
    thread = f"proc-{uuid.uuid4()}"
    async with ContextEngineSaver(engine_for("redis", key_prefix=prefix)) as saver:
        g = graph(saver)
        await g.ainvoke(start("hello"), cfg(thread))
        vandalize((await g.aget_state(cfg(thread))).values)
        await g.ainvoke({"messages": [HumanMessage("two", id="h-two")]}, cfg(thread))
        mine = [
            [
                t.config["configurable"]["checkpoint_id"],
                [m.content for m in t.checkpoint["channel_values"].get("messages", [])],
                t.checkpoint["channel_values"].get("notes", []),
            ]
            async for t in saver.alist(cfg(thread))
        ]
    done = subprocess.run(
        [sys.executable, "-c", READER, redis_url(), prefix, thread],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == mine
