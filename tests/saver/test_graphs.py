"""Real LangGraph graphs run on the saver, on every store, sync and async.

Each scenario is written once against `Api`, which exposes the graph and saver
calls of one mode as coroutines: in "async" mode they are the `a*` methods on the
`saver` fixture; in "sync" mode they are the sync methods on the `sync_saver`
fixture, run in a worker thread (outside the event loop, as sync callers are).
The `api` fixture is parametrized over both modes and, through the saver
fixtures, over every store.
"""

from __future__ import annotations

import asyncio
import operator
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.channels import DeltaChannel
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Send, StateSnapshot, interrupt
from typing_extensions import TypedDict

from aiecs_checkpoint import ContextEngineSaver

Mode = Literal["sync", "async"]
T = TypeVar("T")
Graph = CompiledStateGraph[Any, Any, Any, Any]


# -- the graph API of one mode -------------------------------------------------


async def _collect(items: AsyncIterator[T]) -> list[T]:
    return [item async for item in items]


@dataclass
class Api:
    """Graph and saver calls of one mode ("sync" or "async"), all awaitable."""

    mode: Mode
    saver: BaseCheckpointSaver[Any]

    async def _call(
        self, sync: Callable[[], T], async_: Callable[[], Awaitable[T]]
    ) -> T:
        if self.mode == "sync":
            return await asyncio.to_thread(sync)
        return await async_()

    def compile(self, builder: StateGraph[Any, Any, Any, Any]) -> Graph:
        return builder.compile(checkpointer=self.saver)

    def on(self, saver: BaseCheckpointSaver[Any]) -> Api:
        """The same mode on another saver."""
        return Api(self.mode, saver)

    async def invoke(self, graph: Graph, input: Any, config: RunnableConfig) -> Any:
        return await self._call(
            lambda: graph.invoke(input, config), lambda: graph.ainvoke(input, config)
        )

    async def stream(
        self, graph: Graph, input: Any, config: RunnableConfig
    ) -> list[Any]:
        return await self._call(
            lambda: list(graph.stream(input, config, stream_mode="updates")),
            lambda: _collect(graph.astream(input, config, stream_mode="updates")),
        )

    async def state(
        self, graph: Graph, config: RunnableConfig, *, subgraphs: bool = False
    ) -> StateSnapshot:
        return await self._call(
            lambda: graph.get_state(config, subgraphs=subgraphs),
            lambda: graph.aget_state(config, subgraphs=subgraphs),
        )

    async def history(
        self, graph: Graph, config: RunnableConfig, **kwargs: Any
    ) -> list[StateSnapshot]:
        return await self._call(
            lambda: list(graph.get_state_history(config, **kwargs)),
            lambda: _collect(graph.aget_state_history(config, **kwargs)),
        )

    async def update(
        self,
        graph: Graph,
        config: RunnableConfig,
        values: dict[str, Any],
        as_node: str | None = None,
    ) -> RunnableConfig:
        return await self._call(
            lambda: graph.update_state(config, values, as_node=as_node),
            lambda: graph.aupdate_state(config, values, as_node=as_node),
        )

    async def checkpoints(
        self, config: RunnableConfig, **kwargs: Any
    ) -> list[CheckpointTuple]:
        saver = self.saver
        return await self._call(
            lambda: list(saver.list(config, **kwargs)),
            lambda: _collect(saver.alist(config, **kwargs)),
        )

    async def prune(self, thread_ids: Sequence[str]) -> None:
        saver = self.saver
        await self._call(
            lambda: saver.prune(thread_ids, strategy="keep_latest"),
            lambda: saver.aprune(thread_ids, strategy="keep_latest"),
        )

    async def copy_thread(self, source: str, target: str) -> None:
        saver = self.saver
        await self._call(
            lambda: saver.copy_thread(source, target),
            lambda: saver.acopy_thread(source, target),
        )

    async def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        saver = self.saver
        await self._call(
            lambda: saver.delete_for_runs(run_ids),
            lambda: saver.adelete_for_runs(run_ids),
        )

    async def delta_history(
        self, config: RunnableConfig, channels: Sequence[str]
    ) -> tuple[Mapping[str, DeltaChannelHistory], Mapping[str, DeltaChannelHistory]]:
        """(the saver's own delta history, the base class's default walk)."""
        saver = self.saver
        base = BaseCheckpointSaver
        ours = await self._call(
            lambda: saver.get_delta_channel_history(config=config, channels=channels),
            lambda: saver.aget_delta_channel_history(config=config, channels=channels),
        )
        default = await self._call(
            lambda: base.get_delta_channel_history(
                saver, config=config, channels=channels
            ),
            lambda: base.aget_delta_channel_history(
                saver, config=config, channels=channels
            ),
        )
        return ours, default


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, store_name: str) -> Api:
    """The saver of the current store, driven through the sync or async API."""
    mode: Mode = request.param
    saver = request.getfixturevalue("sync_saver" if mode == "sync" else "saver")
    return Api(mode, saver)


def thread(thread_id: str | None = None) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id or uuid.uuid4().hex}}


def checkpoint_id(config: RunnableConfig) -> str:
    return str(config["configurable"]["checkpoint_id"])


def thread_id(config: RunnableConfig) -> str:
    return str(config["configurable"]["thread_id"])


def namespace(config: RunnableConfig) -> str:
    return str(config["configurable"]["checkpoint_ns"])


def ids(items: Sequence[StateSnapshot | CheckpointTuple]) -> list[str]:
    return [checkpoint_id(item.config) for item in items]


def parent_id(snapshot: StateSnapshot) -> str | None:
    parent = snapshot.parent_config
    return checkpoint_id(parent) if parent else None


# -- 1. interrupt and resume ---------------------------------------------------


class AskState(TypedDict, total=False):
    question: str
    answer: str
    log: Annotated[list[str], operator.add]


def build_ask_graph(calls: list[str]) -> StateGraph[Any, Any, Any, Any]:
    def prepare(state: AskState) -> AskState:
        calls.append("prepare")
        return {"log": ["prepare"]}

    def ask(state: AskState) -> AskState:
        calls.append("ask")
        answer = interrupt({"question": state["question"]})
        return {"answer": answer, "log": ["ask"]}

    def finish(state: AskState) -> AskState:
        calls.append("finish")
        return {"log": [f"finish:{state['answer']}"]}

    builder = StateGraph(AskState)
    builder.add_node("prepare", prepare)
    builder.add_node("ask", ask)
    builder.add_node("finish", finish)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "ask")
    builder.add_edge("ask", "finish")
    builder.add_edge("finish", END)
    return builder


async def test_resume_after_interrupt_continues_from_the_interrupted_node(
    api: Api,
) -> None:
    calls: list[str] = []
    graph = api.compile(build_ask_graph(calls))
    config = thread()

    first = await api.invoke(graph, {"question": "name?", "log": []}, config)

    assert [i.value for i in first["__interrupt__"]] == [{"question": "name?"}]
    paused = await api.state(graph, config)
    assert paused.next == ("ask",)
    assert [i.value for t in paused.tasks for i in t.interrupts] == [
        {"question": "name?"}
    ]
    assert paused.values == {"question": "name?", "log": ["prepare"]}

    final = await api.invoke(graph, Command(resume="Ada"), config)

    assert final == {
        "question": "name?",
        "answer": "Ada",
        "log": ["prepare", "ask", "finish:Ada"],
    }
    done = await api.state(graph, config)
    assert done.next == () and done.tasks == ()
    assert done.values == final
    # prepare ran once; ask ran again on resume (interrupt re-executes the node)
    assert Counter(calls) == {"prepare": 1, "ask": 2, "finish": 1}


async def test_stream_surfaces_the_interrupt_and_resume_streams_the_remaining_nodes(
    api: Api,
) -> None:
    graph = api.compile(build_ask_graph([]))
    config = thread()

    first = await api.stream(graph, {"question": "q", "log": []}, config)
    assert first[0] == {"prepare": {"log": ["prepare"]}}
    assert [i.value for i in first[-1]["__interrupt__"]] == [{"question": "q"}]

    rest = await api.stream(graph, Command(resume="yes"), config)
    assert rest == [
        {"ask": {"answer": "yes", "log": ["ask"]}},
        {"finish": {"log": ["finish:yes"]}},
    ]


# -- 2. a failing node among succeeding siblings -------------------------------


class FanState(TypedDict):
    results: Annotated[list[str], operator.add]


def build_fan_graph(calls: list[str], fail_once: str) -> StateGraph[Any, Any, Any, Any]:
    def branch(name: str) -> Callable[[FanState], FanState]:
        def node(state: FanState) -> FanState:
            calls.append(name)
            if name == fail_once and calls.count(name) == 1:
                # Fail after the siblings finished: LangGraph cancels (and does
                # not save) siblings still running when a task fails.
                time.sleep(0.3)
                raise RuntimeError(f"{name} failed")
            return {"results": [name]}

        return node

    def join(state: FanState) -> FanState:
        calls.append("join")
        return {"results": ["join"]}

    builder = StateGraph(FanState)
    for name in ("a", "b", "c"):
        builder.add_node(name, branch(name))
        builder.add_edge(START, name)
    builder.add_node("join", join)
    builder.add_edge(["a", "b", "c"], "join")
    builder.add_edge("join", END)
    return builder


async def test_retry_after_a_failed_sibling_reruns_only_the_failed_node(
    api: Api,
) -> None:
    calls: list[str] = []
    graph = api.compile(build_fan_graph(calls, fail_once="b"))
    config = thread()

    with pytest.raises(RuntimeError, match="b failed"):
        await api.invoke(graph, {"results": []}, config)

    failed = await api.state(graph, config)
    assert failed.next == ("b",)  # a and c are done: their writes were kept
    by_name = {t.name: t for t in failed.tasks}
    assert by_name["a"].result == {"results": ["a"]}
    assert by_name["c"].result == {"results": ["c"]}
    assert "b failed" in str(by_name["b"].error) and by_name["b"].result is None
    [stored] = await api.checkpoints(failed.config)
    names = {t.id: t.name for t in failed.tasks}
    assert {(names[task], ch) for task, ch, _ in stored.pending_writes or ()} >= {
        ("a", "results"),
        ("c", "results"),
        ("b", "__error__"),
    }

    final = await api.invoke(graph, None, config)

    assert Counter(calls) == {"a": 1, "b": 2, "c": 1, "join": 1}
    assert sorted(final["results"][:3]) == ["a", "b", "c"]
    assert final["results"][3:] == ["join"]
    assert (await api.state(graph, config)).values == final


# -- 3. time travel ------------------------------------------------------------


class TrailState(TypedDict):
    trail: Annotated[list[str], operator.add]


def build_trail_graph(calls: list[str]) -> StateGraph[Any, Any, Any, Any]:
    def step(name: str) -> Callable[[TrailState], TrailState]:
        def node(state: TrailState) -> TrailState:
            calls.append(name)
            return {"trail": [name]}

        return node

    builder = StateGraph(TrailState)
    previous = START
    for name in ("one", "two", "three"):
        builder.add_node(name, step(name))
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder


async def snapshot_values(
    api: Api, graph: Graph, history: Sequence[StateSnapshot]
) -> dict[str, Any]:
    """Checkpoint id -> values, each read back by its own config."""
    out: dict[str, Any] = {}
    for snap in history:
        out[checkpoint_id(snap.config)] = (await api.state(graph, snap.config)).values
    return out


async def test_replaying_an_old_checkpoint_forks_and_keeps_the_original_history(
    api: Api,
) -> None:
    calls: list[str] = []
    graph = api.compile(build_trail_graph(calls))
    config = thread()
    await api.invoke(graph, {"trail": []}, config)
    original = await api.history(graph, config)
    original_values = {checkpoint_id(s.config): s.values for s in original}
    before_two = next(s for s in original if s.next == ("two",))
    assert before_two.values == {"trail": ["one"]}
    calls.clear()

    replayed = await api.invoke(graph, None, before_two.config)

    assert replayed == {"trail": ["one", "two", "three"]}
    assert calls == ["two", "three"]
    after = await api.history(graph, config)
    new = [s for s in after if checkpoint_id(s.config) not in original_values]
    assert new, "replaying must create new checkpoints"
    assert parent_id(new[-1]) == checkpoint_id(before_two.config)
    assert new[0].values == replayed and new[0].next == ()
    # the original branch is untouched
    assert await snapshot_values(api, graph, original) == original_values
    latest = await api.state(graph, config)
    assert checkpoint_id(latest.config) == checkpoint_id(new[0].config)


async def test_update_state_on_an_old_checkpoint_forks_and_continues_from_there(
    api: Api,
) -> None:
    calls: list[str] = []
    graph = api.compile(build_trail_graph(calls))
    config = thread()
    await api.invoke(graph, {"trail": []}, config)
    original = await api.history(graph, config)
    original_values = {checkpoint_id(s.config): s.values for s in original}
    before_two = next(s for s in original if s.next == ("two",))
    calls.clear()

    fork_config = await api.update(graph, before_two.config, {"trail": ["patched"]})

    fork = await api.state(graph, fork_config)
    assert parent_id(fork) == checkpoint_id(before_two.config)
    assert fork.values == {"trail": ["one", "patched"]}
    assert fork.next == ("two",)
    assert fork.metadata is not None and fork.metadata["source"] == "update"

    final = await api.invoke(graph, None, fork_config)

    assert final == {"trail": ["one", "patched", "two", "three"]}
    assert calls == ["two", "three"]
    assert (await api.state(graph, config)).values == final
    assert await snapshot_values(api, graph, original) == original_values
    history = await api.history(graph, config)
    assert len(history) == len(original) + 3  # the update, then two and three


# -- 4. subgraphs --------------------------------------------------------------


class ReviewState(TypedDict, total=False):
    topic: str
    draft: str
    verdict: str


def build_review_subgraph() -> Graph:
    def write(state: ReviewState) -> ReviewState:
        return {"draft": f"draft about {state['topic']}"}

    def review(state: ReviewState) -> ReviewState:
        return {"verdict": interrupt({"review": state["draft"]})}

    builder = StateGraph(ReviewState)
    builder.add_node("write", write)
    builder.add_node("review", review)
    builder.add_edge(START, "write")
    builder.add_edge("write", "review")
    builder.add_edge("review", END)
    return builder.compile()


class PublishState(TypedDict, total=False):
    topic: str
    draft: str
    verdict: str
    published: str


def build_publish_graph() -> StateGraph[Any, Any, Any, Any]:
    def plan(state: PublishState) -> PublishState:
        return {"topic": state["topic"].upper()}

    def publish(state: PublishState) -> PublishState:
        return {"published": f"{state['draft']} ({state['verdict']})"}

    builder = StateGraph(PublishState)
    builder.add_node("plan", plan)
    builder.add_node("child", build_review_subgraph())
    builder.add_node("publish", publish)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "child")
    builder.add_edge("child", "publish")
    builder.add_edge("publish", END)
    return builder


async def test_interrupt_inside_a_subgraph_shows_its_state_and_resumes(
    api: Api,
) -> None:
    graph = api.compile(build_publish_graph())
    config = thread()

    first = await api.invoke(graph, {"topic": "owls"}, config)

    assert [i.value for i in first["__interrupt__"]] == [{"review": "draft about OWLS"}]
    parent = await api.state(graph, config, subgraphs=True)
    assert parent.next == ("child",)
    [task] = parent.tasks
    assert task.name == "child"
    child = task.state
    assert isinstance(child, StateSnapshot)
    assert child.values == {"topic": "OWLS", "draft": "draft about OWLS"}
    assert child.next == ("review",)
    assert [i.value for t in child.tasks for i in t.interrupts] == [
        {"review": "draft about OWLS"}
    ]
    assert namespace(child.config).startswith("child:")

    final = await api.invoke(graph, Command(resume="approved"), config)

    assert final == {
        "topic": "OWLS",
        "draft": "draft about OWLS",
        "verdict": "approved",
        "published": "draft about OWLS (approved)",
    }
    done = await api.state(graph, config, subgraphs=True)
    assert done.next == () and done.tasks == ()


async def test_list_with_empty_namespace_returns_only_root_checkpoints(
    api: Api,
) -> None:
    graph = api.compile(build_publish_graph())
    config = thread()
    await api.invoke(graph, {"topic": "owls"}, config)
    await api.invoke(graph, Command(resume="ok"), config)
    tid = thread_id(config)

    root = await api.checkpoints(
        {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
    )
    every = await api.checkpoints({"configurable": {"thread_id": tid}})

    assert root and all(namespace(t.config) == "" for t in root)
    sub = [t for t in every if namespace(t.config) != ""]
    assert sub and all(namespace(t.config).startswith("child:") for t in sub)
    every_ids = ids(every)
    assert every_ids == sorted(every_ids, reverse=True)  # newest first
    assert ids([t for t in every if namespace(t.config) == ""]) == ids(root)
    assert ids(await api.history(graph, config)) == ids(root)
    for ns in {namespace(t.config) for t in sub}:
        only = await api.checkpoints(
            {"configurable": {"thread_id": tid, "checkpoint_ns": ns}}
        )
        assert ids(only) == ids([t for t in sub if namespace(t.config) == ns])


# -- 5. history filters --------------------------------------------------------


class CountState(TypedDict):
    n: int
    stop: int


def build_count_graph() -> StateGraph[Any, Any, Any, Any]:
    def count(state: CountState) -> dict[str, int]:
        return {"n": state["n"] + 1}

    def again(state: CountState) -> str:
        return "count" if state["n"] < state["stop"] else END

    builder = StateGraph(CountState)
    builder.add_node("count", count)
    builder.add_edge(START, "count")
    builder.add_conditional_edges("count", again, ["count", END])
    return builder


async def test_history_filter_before_and_limit_select_from_the_full_history(
    api: Api,
) -> None:
    graph = api.compile(build_count_graph())
    config = thread()
    first: RunnableConfig = {**config, "metadata": {"batch": "first"}}
    second: RunnableConfig = {**config, "metadata": {"batch": "second"}}
    await api.invoke(graph, {"n": 0, "stop": 3}, first)
    await api.invoke(graph, {"stop": 5}, second)
    full = await api.history(graph, config)
    assert [s.metadata and s.metadata["step"] for s in full] == list(range(7, -2, -1))

    def where(**expected: Any) -> list[str]:
        return ids(
            [
                s
                for s in full
                if s.metadata is not None
                and all(s.metadata.get(k) == v for k, v in expected.items())
            ]
        )

    loop = await api.history(graph, config, filter={"source": "loop"})
    assert ids(loop) == where(source="loop") and len(loop) == 7
    batch = await api.history(graph, config, filter={"batch": "second"})
    assert ids(batch) == where(batch="second") and len(batch) == 4
    both = await api.history(
        graph, config, filter={"source": "input", "batch": "first"}
    )
    assert ids(both) == where(source="input", batch="first") and len(both) == 1
    assert await api.history(graph, config, filter={"batch": "third"}) == []

    before = await api.history(graph, config, before=full[3].config)
    assert ids(before) == ids(full[4:])
    limited = await api.history(graph, config, limit=2)
    assert ids(limited) == ids(full[:2])
    combined = await api.history(
        graph, config, filter={"source": "loop"}, before=full[1].config, limit=2
    )
    expected = [s for s in full[2:] if s.metadata and s.metadata["source"] == "loop"]
    assert ids(combined) == ids(expected[:2])


# -- 6. Send fan-out -----------------------------------------------------------


class MapState(TypedDict, total=False):
    items: list[int]
    results: Annotated[list[int], operator.add]
    total: int


class WorkerState(TypedDict):
    item: int


def build_map_graph(
    calls: list[int], ask_about: int | None = None
) -> StateGraph[Any, Any, Any, Any]:
    def fan_out(state: MapState) -> list[Send]:
        return [Send("worker", {"item": i}) for i in state["items"]]

    def worker(state: WorkerState) -> MapState:
        calls.append(state["item"])
        factor = 10
        if state["item"] == ask_about:
            factor = interrupt(f"factor for {state['item']}?")
        return {"results": [state["item"] * factor]}

    def total(state: MapState) -> MapState:
        return {"total": sum(state["results"])}

    builder = StateGraph(MapState)
    builder.add_node("worker", worker)
    builder.add_node("total", total)
    builder.add_conditional_edges(START, fan_out, ["worker"])
    builder.add_edge("worker", "total")
    builder.add_edge("total", END)
    return builder


async def test_send_fan_out_aggregates_every_worker_result_with_the_reducer(
    api: Api,
) -> None:
    calls: list[int] = []
    graph = api.compile(build_map_graph(calls))
    config = thread()

    final = await api.invoke(graph, {"items": [1, 2, 3], "results": []}, config)

    assert sorted(final["results"]) == [10, 20, 30] and final["total"] == 60
    assert sorted(calls) == [1, 2, 3]
    assert (await api.state(graph, config)).values == final


async def test_send_fan_out_resume_reruns_only_the_interrupted_worker(
    api: Api,
) -> None:
    calls: list[int] = []
    graph = api.compile(build_map_graph(calls, ask_about=2))
    config = thread()

    first = await api.invoke(graph, {"items": [1, 2, 3], "results": []}, config)

    assert [i.value for i in first["__interrupt__"]] == ["factor for 2?"]
    paused = await api.state(graph, config)
    assert paused.next == ("worker",)  # workers 1 and 3 are done
    assert [i.value for t in paused.tasks for i in t.interrupts] == ["factor for 2?"]
    assert sorted(t.result["results"][0] for t in paused.tasks if t.result) == [10, 30]

    final = await api.invoke(graph, Command(resume=100), config)

    assert sorted(final["results"]) == [10, 30, 200] and final["total"] == 240
    assert Counter(calls) == {1: 1, 2: 2, 3: 1}


# -- 7. DeltaChannel -----------------------------------------------------------


def concat(state: list[int], writes: Sequence[list[int]]) -> list[int]:
    return state + [x for w in writes for x in w]


class DeltaState(TypedDict, total=False):
    items: Annotated[list[int], DeltaChannel(concat, snapshot_frequency=3)]
    n: int
    stop: int


def build_delta_graph() -> StateGraph[Any, Any, Any, Any]:
    """Appends n to `items` and increments n until n reaches `stop`."""

    def step(state: DeltaState) -> DeltaState:
        return {"items": [state["n"]], "n": state["n"] + 1}

    def again(state: DeltaState) -> str:
        return "step" if state["n"] < state["stop"] else END

    builder = StateGraph(DeltaState)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", again, ["step", END])
    return builder


def counted(stop: int) -> dict[str, Any]:
    """The state of the delta graph after counting to `stop`."""
    return {"items": list(range(stop)), "n": stop, "stop": stop}


async def assert_consistent_delta_history(
    api: Api, graph: Graph, config: RunnableConfig
) -> None:
    """Every checkpoint's items are 0..n-1 and its delta history is the default's."""
    history = await api.history(graph, config)
    for snap in history:
        values = snap.values
        assert values.get("items", []) == list(range(values.get("n", 0))), snap
    for snap in history:
        ours, default = await api.delta_history(snap.config, ["items"])
        assert ours == default, snap.config


async def test_delta_channel_state_is_rebuilt_at_every_checkpoint(api: Api) -> None:
    graph = api.compile(build_delta_graph())
    config = thread()

    assert await api.invoke(graph, {"n": 0, "stop": 10}, config) == counted(10)
    assert await api.invoke(graph, {"stop": 13}, config) == counted(13)

    assert (await api.state(graph, config)).values == counted(13)
    await assert_consistent_delta_history(api, graph, config)
    tuples = await api.checkpoints(config)
    snapshots = [t for t in tuples if "items" in t.checkpoint["channel_values"]]
    assert 0 < len(snapshots) < len(tuples), "expected both snapshots and deltas"


@pytest.mark.timeout(120)
async def test_delta_channel_graph_with_one_worker_thread_completes(api: Api) -> None:
    """langgraph 1.2.0-1.2.14 deadlock here once `put` does I/O (hence the floor).

    Their background put waited on DeltaChannel writes queued behind it in the same
    thread pool; `max_concurrency=1` makes that pool a single thread, so the hang is
    certain on those versions rather than a race.
    """
    graph = api.compile(build_delta_graph())
    config: RunnableConfig = {**thread(), "max_concurrency": 1}

    assert await api.invoke(graph, {"n": 0, "stop": 12}, config) == counted(12)
    assert await api.invoke(graph, {"stop": 14}, config) == counted(14)
    await assert_consistent_delta_history(api, graph, config)


async def test_delta_channel_state_survives_prune_keep_latest(api: Api) -> None:
    graph = api.compile(build_delta_graph())
    config = thread()
    await api.invoke(graph, {"n": 0, "stop": 10}, config)
    await api.invoke(graph, {"stop": 11}, config)
    latest = await api.checkpoints(config, limit=1)
    assert "items" not in latest[0].checkpoint["channel_values"], (
        "the latest checkpoint should rebuild items from deltas, not a snapshot"
    )
    before = await api.state(graph, config)

    await api.prune([thread_id(config)])

    after = await api.state(graph, config)
    assert after.values == before.values == counted(11)
    assert after.config == before.config and after.next == before.next
    remaining = await api.checkpoints(
        {"configurable": {"thread_id": thread_id(config)}}
    )
    assert [t.config for t in remaining] == [before.config]
    assert await api.invoke(graph, {"stop": 14}, config) == counted(14)
    assert await api.invoke(graph, {"stop": 16}, config) == counted(16)
    history = await api.history(graph, config)
    for snap in history:
        assert snap.values["items"] == list(range(snap.values["n"]))


async def test_copied_thread_has_the_same_delta_state_and_continues_alone(
    api: Api,
) -> None:
    graph = api.compile(build_delta_graph())
    src = thread()
    dst = thread()
    await api.invoke(graph, {"n": 0, "stop": 10}, src)
    await api.invoke(graph, {"stop": 11}, src)
    src_history = await api.history(graph, src)

    await api.copy_thread(thread_id(src), thread_id(dst))

    assert (await api.state(graph, dst)).values == counted(11)
    dst_history = await api.history(graph, dst)
    assert [(s.values, s.metadata, s.next) for s in dst_history] == [
        (s.values, s.metadata, s.next) for s in src_history
    ]
    assert await api.invoke(graph, {"stop": 15}, dst) == counted(15)
    assert (await api.state(graph, src)).values == counted(11)
    await assert_consistent_delta_history(api, graph, dst)
    assert await api.invoke(graph, {"stop": 12}, src) == counted(12)


def run_config(config: RunnableConfig, run_id: uuid.UUID) -> RunnableConfig:
    """`config` for one run; the run id also goes into the checkpoint metadata."""
    return {**config, "run_id": run_id, "metadata": {"run_id": str(run_id)}}


async def test_delete_for_an_early_run_keeps_later_delta_states(api: Api) -> None:
    graph = api.compile(build_delta_graph())
    config = thread()
    inputs = [{"n": 0, "stop": 4}, {"stop": 8}, {"stop": 11}]
    runs = [uuid.uuid4() for _ in inputs]
    for run_id, input in zip(runs, inputs, strict=True):
        await api.invoke(graph, input, run_config(config, run_id))
    history = await api.history(graph, config)
    stored = await api.checkpoints(config)
    assert {t.metadata.get("run_id") for t in stored} == {str(r) for r in runs}
    later = [s for s in history if s.metadata and s.metadata["run_id"] != str(runs[0])]

    await api.delete_for_runs([str(runs[0])])

    remaining = await api.history(graph, config)
    assert ids(remaining) == ids(later)
    assert await snapshot_values(api, graph, later) == {
        checkpoint_id(s.config): s.values for s in later
    }
    assert (await api.state(graph, config)).values == counted(11)
    final = await api.invoke(graph, {"stop": 13}, run_config(config, uuid.uuid4()))
    assert final == counted(13)


# -- 8. a long conversation against InMemorySaver ------------------------------


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def build_chat_graph() -> StateGraph[Any, Any, Any, Any]:
    """Replies to each message; "edit <k>" edits message k in place and returns it."""

    def reply(state: ChatState) -> ChatState:
        last = state["messages"][-1]
        answer = AIMessage(content=f"re: {last.content}", id=f"ai-{last.id}")
        text = str(last.content)
        if text.startswith("edit "):
            edited = state["messages"][int(text.split()[1])]
            edited.content = f"{edited.content} (edited)"
            return {"messages": [edited, answer]}
        return {"messages": [answer]}

    builder = StateGraph(ChatState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder


def say(i: int | str, text: str | None = None) -> dict[str, list[AnyMessage]]:
    return {"messages": [HumanMessage(content=text or f"message {i}", id=f"h{i}")]}


Shape = tuple[Any, ...]


def shape(values: Mapping[str, Any]) -> list[Shape]:
    """The messages of a state as comparable (type, id, content) tuples."""
    return [(m.type, m.id, m.content) for m in values.get("messages", [])]


def history_shape(history: Sequence[StateSnapshot]) -> list[Shape]:
    return [
        (
            s.metadata and s.metadata["step"],
            s.metadata and s.metadata["source"],
            s.next,
            shape(s.values),
        )
        for s in history
    ]


async def chat(api: Api, turns: Sequence[dict[str, Any]]) -> tuple[Graph, str]:
    """Runs `turns` on a new thread of `api`'s saver; returns the graph and thread."""
    graph = api.compile(build_chat_graph())
    config = thread("chat")
    for turn in turns:
        await api.invoke(graph, turn, config)
    return graph, thread_id(config)


def fresh_chat_reader(api: Api) -> tuple[Api, Graph]:
    """A new saver on the same engine (empty caches: every read hits the store)."""
    assert isinstance(api.saver, ContextEngineSaver)
    fresh = api.on(ContextEngineSaver(api.saver.engine))
    return fresh, fresh.compile(build_chat_graph())


async def test_long_conversation_reads_back_exactly_as_in_memory_saver(
    api: Api,
) -> None:
    turns = [say(i) for i in range(60)]
    graph, tid = await chat(api, turns)
    ref_api = api.on(InMemorySaver())
    ref_graph, _ = await chat(ref_api, turns)
    config = thread(tid)

    state = await api.state(graph, config)
    expected = await ref_api.state(ref_graph, config)
    assert len(state.values["messages"]) == 120
    assert shape(state.values) == shape(expected.values)
    history = history_shape(await api.history(graph, config))
    assert len(history) == 3 * 60
    assert history == history_shape(await ref_api.history(ref_graph, config))

    fresh, fresh_graph = fresh_chat_reader(api)
    assert history_shape(await fresh.history(fresh_graph, config)) == history


async def test_message_edited_in_place_by_a_node_is_read_back_edited(
    api: Api,
) -> None:
    turns = [say(0), say(1), say(2), say("e", "edit 0"), say(3)]
    graph, tid = await chat(api, turns)
    ref_api = api.on(InMemorySaver())
    ref_graph, _ = await chat(ref_api, turns)
    config = thread(tid)
    expected = shape((await ref_api.state(ref_graph, config)).values)
    assert expected[0] == ("human", "h0", "message 0 (edited)")

    assert shape((await api.state(graph, config)).values) == expected
    fresh, fresh_graph = fresh_chat_reader(api)
    assert shape((await fresh.state(fresh_graph, config)).values) == expected
    assert history_shape(await fresh.history(fresh_graph, config)) == history_shape(
        await ref_api.history(ref_graph, config)
    )
    await fresh.invoke(fresh_graph, say(4), config)
    assert shape((await fresh.state(fresh_graph, config)).values)[0] == expected[0]


async def test_message_edited_in_place_leaves_older_checkpoints_unedited(
    api: Api,
) -> None:
    """The same saver that ran the edit must not show it in earlier checkpoints."""
    turns = [say(0), say(1), say("e", "edit 0"), say(2)]
    graph, tid = await chat(api, turns)
    ref_api = api.on(InMemorySaver())
    ref_graph, _ = await chat(ref_api, turns)
    config = thread(tid)

    expected = history_shape(await ref_api.history(ref_graph, config))
    assert expected[-2][3] == [("human", "h0", "message 0")]
    assert history_shape(await api.history(graph, config)) == expected


async def test_update_state_replacing_a_message_is_stored_edited(api: Api) -> None:
    turns = [say(0), say(1), say(2)]
    graph, tid = await chat(api, turns)
    ref_api = api.on(InMemorySaver())
    ref_graph, _ = await chat(ref_api, turns)
    config = thread(tid)
    replacement = {"messages": [HumanMessage(content="replaced", id="h1")]}

    await api.update(graph, config, replacement)
    await ref_api.update(ref_graph, config, replacement)

    expected = shape((await ref_api.state(ref_graph, config)).values)
    assert ("human", "h1", "replaced") in expected and len(expected) == 6
    assert shape((await api.state(graph, config)).values) == expected
    fresh, fresh_graph = fresh_chat_reader(api)
    assert shape((await fresh.state(fresh_graph, config)).values) == expected
    assert history_shape(await fresh.history(fresh_graph, config)) == history_shape(
        await ref_api.history(ref_graph, config)
    )

    await api.invoke(graph, say(3), config)
    await ref_api.invoke(ref_graph, say(3), config)
    expected = shape((await ref_api.state(ref_graph, config)).values)
    assert expected[2] == ("human", "h1", "replaced") and len(expected) == 8
    fresh, fresh_graph = fresh_chat_reader(api)
    assert shape((await fresh.state(fresh_graph, config)).values) == expected
