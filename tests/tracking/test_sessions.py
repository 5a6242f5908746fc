"""Session tracking (`ContextEngineSaver(track_sessions=True)`) with real graphs.

Scenarios run on every store, most in "sync" mode (graph.invoke in a worker
thread, so the saver's sync hooks run outside the event loop) and "async" mode
(graph.ainvoke). Sessions and histories are read back through the engine's
domain API, as an application would. The Redis-only tests at the end pin the
cost (calls per put and per write) and the lifetime of the new keys.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import clickhouse_connect
import pytest
import redis
from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from aiecs_checkpoint.domain.models import ConversationMessage, SessionMetrics
from aiecs_checkpoint.errors import InvalidConfigError
from aiecs_checkpoint.stores.clickhouse import layout as C
from tests.conftest import (
    REDIS_INSTALLED,
    _redis_param,
    engine_for,
    make_saver,
    make_sync_saver,
    redis_url,
)
from tests.stores.redis.test_redis import SendCounter

Mode = Literal["sync", "async"]
Graph = CompiledStateGraph[Any, Any, Any, Any]

NODE_SLEEP = 0.01
"""Each reply node sleeps this long, a lower bound of every run's duration."""


# -- graphs ----------------------------------------------------------------------


def _reply(state: MessagesState) -> dict[str, Any]:
    """Echo the last message; raise when it says "boom"."""
    time.sleep(NODE_SLEEP)
    last = state["messages"][-1].text
    if last == "boom":
        raise ValueError("boom")
    return {"messages": [AIMessage(f"echo {last}")]}


def chat_graph() -> StateGraph[Any, Any, Any, Any]:
    builder = StateGraph(MessagesState)
    builder.add_node("reply", _reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder


def _intro(state: MessagesState) -> dict[str, Any]:
    return {"messages": [AIMessage("what is your name?")]}


def _ask(state: MessagesState) -> dict[str, Any]:
    answer = interrupt("name?")
    if answer == "boom":
        raise ValueError("boom")
    return {"messages": [HumanMessage(str(answer)), AIMessage(f"hello {answer}")]}


def interview_graph() -> StateGraph[Any, Any, Any, Any]:
    builder = StateGraph(MessagesState)
    builder.add_node("intro", _intro)
    builder.add_node("ask", _ask)
    builder.add_edge(START, "intro")
    builder.add_edge("intro", "ask")
    builder.add_edge("ask", END)
    return builder


def nested_graph() -> StateGraph[Any, Any, Any, Any]:
    """A root graph whose second node is the chat graph as a subgraph."""
    builder = StateGraph(MessagesState)
    builder.add_node("intro", _intro)
    builder.add_node("inner", chat_graph().compile())
    builder.add_edge(START, "intro")
    builder.add_edge("intro", "inner")
    builder.add_edge("inner", END)
    return builder


# -- running in one mode ---------------------------------------------------------


@dataclass
class Runner:
    """Graph calls of one mode on one saver, all awaitable."""

    mode: Mode
    saver: ContextEngineSaver

    @property
    def engine(self) -> ContextEngine:
        return self.saver.engine

    def compile(self, builder: StateGraph[Any, Any, Any, Any]) -> Graph:
        return builder.compile(checkpointer=self.saver)

    async def _call(self, sync: Callable[[], Any], async_: Callable[[], Any]) -> Any:
        if self.mode == "sync":
            return await asyncio.to_thread(sync)
        return await async_()

    async def invoke(self, graph: Graph, input: Any, config: RunnableConfig) -> Any:
        return await self._call(
            lambda: graph.invoke(input, config), lambda: graph.ainvoke(input, config)
        )

    async def update_state(
        self, graph: Graph, config: RunnableConfig, values: dict[str, Any]
    ) -> None:
        await self._call(
            lambda: graph.update_state(config, values),
            lambda: graph.aupdate_state(config, values),
        )

    async def session(self, thread_id: str) -> SessionMetrics:
        session = await self.engine.get_session(thread_id)
        assert session is not None
        return session

    async def history(self, thread_id: str) -> list[ConversationMessage]:
        return await self.engine.get_conversation_history(thread_id, limit=0)


@asynccontextmanager
async def runner_for(mode: Mode, store: str, **kwargs: Any) -> AsyncIterator[Runner]:
    """A saver on `store` for `mode`: the sync one is built outside the loop."""
    if mode == "async":
        async with make_saver(store, **kwargs) as saver:
            yield Runner(mode, saver)
        return
    manager = make_sync_saver(store, **kwargs)
    saver = await asyncio.to_thread(manager.__enter__)
    try:
        yield Runner(mode, saver)
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Mode:
    return request.param  # type: ignore[no-any-return]


def _thread() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def _config(thread_id: str, **configurable: Any) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, **configurable}}


def _texts(history: list[ConversationMessage]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in history]


# -- sessions and requests -------------------------------------------------------


async def test_each_run_is_one_request_of_the_thread_session(
    store_name: str, mode: Mode
) -> None:
    async with runner_for(mode, store_name, track_sessions=True) as r:
        graph = r.compile(chat_graph())
        tid = _thread()
        config = _config(tid, user_id="alice")
        times: list[float] = []
        for n in range(1, 4):
            await r.invoke(graph, {"messages": [HumanMessage(f"hi {n}")]}, config)
            session = await r.session(tid)
            assert session.session_id == tid and session.user_id == "alice"
            assert (session.request_count, session.error_count) == (n, 0)
            assert session.status == "active"
            times.append(session.total_processing_time)
        assert times == sorted(times) and times[0] > 0
        assert times[-1] >= 3 * NODE_SLEEP
        assert await r.history(tid) == []


async def test_user_id_from_metadata_else_anonymous(
    store_name: str, mode: Mode
) -> None:
    async with runner_for(mode, store_name, track_sessions=True) as r:
        graph = r.compile(chat_graph())
        meta, anon = _thread(), _thread()
        config: RunnableConfig = {**_config(meta), "metadata": {"user_id": "bob"}}
        await r.invoke(graph, {"messages": [HumanMessage("hi")]}, config)
        await r.invoke(graph, {"messages": [HumanMessage("hi")]}, _config(anon))
        assert (await r.session(meta)).user_id == "bob"
        assert (await r.session(anon)).user_id == "anonymous"
        assert [s.session_id for s in await r.engine.list_sessions(user_id="bob")] == [
            meta
        ]


async def test_failed_runs_count_errors_and_the_next_success_reactivates(
    store_name: str, mode: Mode
) -> None:
    async with runner_for(mode, store_name, track_sessions=True) as r:
        graph = r.compile(chat_graph())
        tid = _thread()
        expected = [
            ("hi", 1, 0, "active"),
            ("boom", 2, 1, "failed"),
            ("boom", 3, 2, "failed"),
            ("hello", 4, 2, "active"),
        ]
        for text, requests, errors, status in expected:
            try:
                await r.invoke(graph, {"messages": [HumanMessage(text)]}, _config(tid))
            except ValueError:
                assert text == "boom"
            session = await r.session(tid)
            assert (session.request_count, session.error_count) == (requests, errors)
            assert session.status == status
            listed = await r.engine.list_sessions(status=status)
            assert tid in [s.session_id for s in listed]
        assert tid not in [
            s.session_id for s in await r.engine.list_sessions(status="failed")
        ]


async def test_resume_is_a_request_and_a_failing_resume_an_error(
    store_name: str, mode: Mode
) -> None:
    async with runner_for(mode, store_name, track_sessions=True) as r:
        graph = r.compile(interview_graph())
        tid = _thread()
        await r.invoke(graph, {"messages": [HumanMessage("start")]}, _config(tid))
        assert (await r.session(tid)).request_count == 1
        with pytest.raises(ValueError, match="boom"):
            await r.invoke(graph, Command(resume="boom"), _config(tid))
        session = await r.session(tid)
        assert (session.request_count, session.error_count) == (2, 1)
        assert session.status == "failed"
        await r.invoke(graph, {"messages": [HumanMessage("again")]}, _config(tid))
        session = await r.session(tid)
        assert (session.request_count, session.error_count) == (3, 1)
        assert session.status == "active"


async def test_manual_state_updates_are_not_requests(
    store_name: str, mode: Mode
) -> None:
    async with runner_for(mode, store_name, track_sessions=True) as r:
        graph = r.compile(chat_graph())
        tid = _thread()
        await r.invoke(graph, {"messages": [HumanMessage("hi")]}, _config(tid))
        await r.update_state(graph, _config(tid), {"messages": [AIMessage("edited")]})
        assert (await r.session(tid)).request_count == 1


async def test_a_run_through_a_subgraph_is_one_request(
    store_name: str, mode: Mode
) -> None:
    kwargs = {"track_sessions": True, "mirror_messages": True}
    async with runner_for(mode, store_name, **kwargs) as r:
        graph = r.compile(nested_graph())
        tid = _thread()
        await r.invoke(graph, {"messages": [HumanMessage("hi")]}, _config(tid))
        await r.invoke(graph, {"messages": [HumanMessage("again")]}, _config(tid))
        assert (await r.session(tid)).request_count == 2
        assert _texts(await r.history(tid)) == [
            ("user", "hi"),
            ("assistant", "what is your name?"),
            ("assistant", "echo what is your name?"),
            ("user", "again"),
            ("assistant", "what is your name?"),
            ("assistant", "echo what is your name?"),
        ]


# -- across savers and processes -------------------------------------------------


async def _replay(
    source: ContextEngineSaver,
    target: ContextEngineSaver,
    tid: str,
    pause: float = 0.0,
) -> None:
    """Save every checkpoint and pending write of `tid` again through `target`,
    oldest first, as another process saving the same data would (the writes
    carrying their run's id, as LangGraph Server's run configs do)."""
    tuples = [t async for t in source.alist(_config(tid))]
    for t in reversed(tuples):
        parent = t.parent_config or _config(tid, checkpoint_ns="")
        versions = t.checkpoint["channel_versions"]
        await target.aput(parent, t.checkpoint, t.metadata, versions)
        await asyncio.sleep(pause)
        by_task: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in t.pending_writes or []:
            by_task.setdefault(task_id, []).append((channel, value))
        run_id = t.metadata.get("run_id")
        config = {**t.config, "metadata": {"run_id": run_id}} if run_id else t.config
        for task_id, writes in by_task.items():
            await target.aput_writes(config, writes, task_id)


async def test_a_replay_slower_than_the_run_adds_no_processing_time() -> None:
    kwargs = {"track_sessions": True}
    async with ContextEngineSaver(**kwargs) as a:
        graph = chat_graph().compile(checkpointer=a)
        tid = _thread()
        config: RunnableConfig = {**_config(tid), "metadata": {"run_id": "r1"}}
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, config)
        before = await a.engine.get_session(tid)
        assert before is not None and before.request_count == 1
        await _replay(a, a, tid, pause=0.05)
        after = await a.engine.get_session(tid)
        assert after is not None and after.request_count == 1
        assert after.total_processing_time == before.total_processing_time


async def test_runs_with_ids_are_counted_once_across_processes(store_name: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    kwargs = {"track_sessions": True, "mirror_messages": True}
    first = engine_for(store_name, key_prefix=prefix)
    second = first if store_name.startswith("memory") else None
    if second is None:
        second = engine_for(store_name, key_prefix=prefix, archive=None)
    async with ContextEngineSaver(first, **kwargs) as a:
        b = ContextEngineSaver(second, **kwargs)
        await second.initialize()
        graph = chat_graph().compile(checkpointer=a)
        tid = _thread()
        for text in ("hi", "boom", "hello"):
            config: RunnableConfig = {
                **_config(tid),
                "metadata": {"run_id": str(uuid.uuid4())},
            }
            try:
                await graph.ainvoke({"messages": [HumanMessage(text)]}, config)
            except ValueError:
                pass
        before = await first.get_session(tid)
        history = await first.get_conversation_history(tid, limit=0)
        assert before is not None
        assert (before.request_count, before.error_count) == (3, 1)
        await _replay(a, b, tid)
        await _replay(a, a, tid)
        after = await second.get_session(tid)
        assert after is not None
        assert (after.request_count, after.error_count) == (3, 1)
        assert after.total_processing_time == pytest.approx(
            before.total_processing_time
        )
        assert await second.get_conversation_history(tid, limit=0) == history
        if second is not first:
            await second.close()


async def test_two_savers_on_one_engine_count_each_run_once(store_name: str) -> None:
    async with make_saver(store_name, track_sessions=True) as a:
        b = ContextEngineSaver(a.engine, track_sessions=True)
        tid = _thread()
        for saver in (a, b, a, b):
            graph = chat_graph().compile(checkpointer=saver)
            await graph.ainvoke({"messages": [HumanMessage("hi")]}, _config(tid))
        session = await a.engine.get_session(tid)
        assert session is not None and session.request_count == 4


# -- mirroring -------------------------------------------------------------------


async def test_mirrored_history_has_each_message_once_in_order(
    store_name: str, mode: Mode
) -> None:
    kwargs = {"track_sessions": True, "mirror_messages": True}
    async with runner_for(mode, store_name, **kwargs) as r:
        graph = r.compile(interview_graph())
        tid = _thread()
        await r.invoke(graph, {"messages": [HumanMessage("start")]}, _config(tid))
        await r.invoke(graph, Command(resume="ada"), _config(tid))
        await r.invoke(graph, {"messages": [HumanMessage("again")]}, _config(tid))
        await r.invoke(graph, Command(resume="bo"), _config(tid))
        expected = [
            ("user", "start"),
            ("assistant", "what is your name?"),
            ("user", "ada"),
            ("assistant", "hello ada"),
            ("user", "again"),
            ("assistant", "what is your name?"),
            ("user", "bo"),
            ("assistant", "hello bo"),
        ]
        history = await r.history(tid)
        assert _texts(history) == expected
        state = (await graph.aget_state(_config(tid))).values["messages"]
        assert [m.metadata["message_id"] for m in history] == [m.id for m in state]
        assert [m.metadata["message_type"] for m in history] == [m.type for m in state]
        assert (await r.session(tid)).request_count == 4

        await _replay(r.saver, r.saver, tid)
        assert _texts(await r.history(tid)) == expected
        assert (await r.session(tid)).request_count == 4


async def test_mirroring_keeps_the_newest_messages_and_never_readds_old_ones(
    store_name: str,
) -> None:
    kwargs: dict[str, Any] = {
        "track_sessions": True,
        "mirror_messages": True,
        "engine_options": {"max_conversation_messages": 3},
    }
    async with make_saver(store_name, **kwargs) as saver:
        graph = chat_graph().compile(checkpointer=saver)
        tid = _thread()
        for text in ("a", "b", "c"):
            await graph.ainvoke({"messages": [HumanMessage(text)]}, _config(tid))
        expected = [("assistant", "echo b"), ("user", "c"), ("assistant", "echo c")]
        assert _texts(await saver.engine.get_conversation_history(tid, 0)) == expected
        await _replay(saver, saver, tid)
        other = ContextEngineSaver(
            saver.engine, track_sessions=True, mirror_messages=True
        )
        await _replay(saver, other, tid)
        assert _texts(await saver.engine.get_conversation_history(tid, 0)) == expected


async def test_removed_messages_stay_in_the_history_and_later_ones_follow(
    store_name: str, mode: Mode
) -> None:
    kwargs = {"track_sessions": True, "mirror_messages": True}
    async with runner_for(mode, store_name, **kwargs) as r:
        graph = r.compile(chat_graph())
        tid = _thread()
        await r.invoke(graph, {"messages": [HumanMessage("a")]}, _config(tid))
        first = (await graph.aget_state(_config(tid))).values["messages"][0]
        removal = {"messages": [RemoveMessage(id=first.id)]}
        await r.update_state(graph, _config(tid), removal)
        await r.invoke(graph, {"messages": [HumanMessage("b")]}, _config(tid))
        assert _texts(await r.history(tid)) == [
            ("user", "a"),
            ("assistant", "echo a"),
            ("user", "b"),
            ("assistant", "echo b"),
        ]


async def test_manual_updates_are_mirrored_too(store_name: str) -> None:
    kwargs = {"track_sessions": True, "mirror_messages": True}
    async with make_saver(store_name, **kwargs) as saver:
        graph = chat_graph().compile(checkpointer=saver)
        tid = _thread()
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, _config(tid))
        await graph.aupdate_state(
            _config(tid), {"messages": [AIMessage("note", name="editor")]}
        )
        history = await saver.engine.get_conversation_history(tid, 0)
        assert _texts(history)[-1] == ("assistant", "note")
        assert history[-1].metadata["name"] == "editor"


async def test_a_deleted_session_starts_over_with_the_next_run(
    store_name: str,
) -> None:
    kwargs = {"track_sessions": True, "mirror_messages": True}
    async with make_saver(store_name, **kwargs) as saver:
        graph = chat_graph().compile(checkpointer=saver)
        tid = _thread()
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, _config(tid))
        assert await saver.engine.delete_session(tid)
        assert await saver.engine.get_session(tid) is None
        await graph.ainvoke({"messages": [HumanMessage("anew")]}, _config(tid))
        session = await saver.engine.get_session(tid)
        assert session is not None and session.request_count == 1
        history = await saver.engine.get_conversation_history(tid, 0)
        assert _texts(history) == [("user", "anew"), ("assistant", "echo anew")]


@pytest.mark.parametrize("store", ["memory+archive", _redis_param("redis+archive")])
async def test_tracked_sessions_and_mirrored_messages_are_archived_once(
    store: str,
) -> None:
    kwargs = {"track_sessions": True, "mirror_messages": True}
    async with make_saver(store, **kwargs) as saver:
        graph = chat_graph().compile(checkpointer=saver)
        tid = _thread()
        for text in ("hi", "boom", "yo"):
            try:
                await graph.ainvoke({"messages": [HumanMessage(text)]}, _config(tid))
            except ValueError:
                pass
        await _replay(saver, saver, tid)
        archive = saver.engine.archive
        assert archive is not None
        assert await asyncio.to_thread(archive.flush, 10)
        settings = archive.settings
        client = clickhouse_connect.get_client(
            **settings.client_options(), database=settings.database
        )
        try:
            where = f"WHERE session_id = '{tid}'"
            rows = client.query(
                f"SELECT request_count, error_count, status FROM `{C.SESSIONS}` "
                f"FINAL {where}"
            ).result_rows
            assert [tuple(row) for row in rows] == [(3, 1, "active")]
            count = client.query(f"SELECT count() FROM `{C.CONVERSATIONS}` {where}")
            assert count.result_rows[0][0] == 5
        finally:
            client.close()


# -- Redis: round trips and keys ---------------------------------------------------

needs_redis = pytest.mark.skipif(
    not REDIS_INSTALLED and not os.environ.get("CI"),
    reason="redis-server not installed (apt-get install redis-server redis-tools)",
)


def _calls_per_step(
    store: str, monkeypatch: pytest.MonkeyPatch, **kwargs: Any
) -> tuple[int, int]:
    """Redis calls of two puts of one run and of one plain write (warmed up)."""
    with make_sync_saver(store, **kwargs) as saver:
        tid = _thread()
        meta = {"run_id": f"run-{tid}"}
        config: RunnableConfig = {
            "configurable": {"thread_id": tid, "checkpoint_ns": ""},
            "metadata": meta,
        }
        messages: list[Any] = []
        counter: SendCounter | None = None
        for i in range(4):
            if i == 2:
                saver.put_writes(config, [("messages", "x")], "warm-up")
                counter = SendCounter(monkeypatch)
            messages = [*messages, HumanMessage(f"m{i}", id=f"{tid}-{i}")]
            version = f"{i + 1:032}.0"
            cp = empty_checkpoint()
            cp["channel_values"] = {"messages": messages}
            cp["channel_versions"] = {"messages": version}
            stored = saver.put(config, cp, {"step": i}, {"messages": version})
            config = {**stored, "metadata": meta}
        assert counter is not None
        puts, counter.count = counter.count, 0
        saver.put_writes(config, [("messages", "x")], "task-1")
        writes = counter.count
        if kwargs:
            session = saver.engine.run(saver.engine.domain.get_session(tid))
            assert session is not None and session.request_count == 1
            assert len(saver.engine.run(saver.engine.domain.messages(tid, 0))) == 4
        monkeypatch.undo()
        return puts, writes


@needs_redis
@pytest.mark.parametrize("store", ["redis", "cluster"])
def test_tracking_costs_one_call_per_put_and_none_per_plain_write(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = _calls_per_step(store, monkeypatch)
    tracked = _calls_per_step(
        store, monkeypatch, track_sessions=True, mirror_messages=True
    )
    assert tracked == (plain[0] + 2, plain[1])


@needs_redis
async def test_a_sessions_new_keys_expire_and_are_deleted_with_it() -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    options = {"key_prefix": prefix, "session_ttl": 60}
    kwargs = {"track_sessions": True, "mirror_messages": True}
    async with make_saver("redis", engine_options=options, **kwargs) as saver:
        graph = chat_graph().compile(checkpointer=saver)
        tid = _thread()
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, _config(tid))
        client = redis.Redis.from_url(redis_url())
        try:
            group = f"{prefix}:{{{tid}}}:"
            names = {k.decode() for k in client.scan_iter(match=group + "*")}
            tracked = {group + k for k in ("sess", "conv", "convids", "runs", "runq")}
            assert tracked <= names
            assert all(0 < client.pttl(k) <= 60_000 for k in tracked)
            assert await saver.engine.delete_session(tid)
            assert list(client.scan_iter(match=group + "*")) == []
        finally:
            client.close()


def test_mirror_messages_needs_track_sessions() -> None:
    with pytest.raises(InvalidConfigError):
        ContextEngineSaver(mirror_messages=True)
