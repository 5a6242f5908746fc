"""The workloads: each runs one saver for `repeats` repeats and returns its
figures (one value per repeat; the report takes medians) after checking that
the saver stored and returned what it should, so a broken saver cannot look fast.

A workload is `async def run(spec, ctx, params, repeats) -> Result`. The
no-checkpointer baseline ("none") runs only where it means something (agent loop,
prebuilt agents). See benchmarks/README.md for what each one measures.
"""

from __future__ import annotations

import asyncio
import gc
import operator
import resource
import statistics
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, StateGraph

from benchmarks.agent_loop import (
    MESSAGES_PER_INVOKE,
    WARMUP_INVOKES,
    _drive,
    build_graph,
)
from benchmarks.peers.savers import (
    Context,
    SaverSpec,
    open_saver,
    storage_delta,
    storage_snapshot,
)

CONTENT_100 = ("raw round payload: a deterministic hundred-character string " * 3)[:100]


class CheckFailed(AssertionError):
    """A saver stored or returned something other than what was written."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclass
class Result:
    """Per-figure values (one per repeat), notes, and what was checked."""

    figures: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)

    def add(self, figure: str, value: float) -> None:
        self.figures.setdefault(figure, []).append(value)


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def _collect(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


def archive_of(engine: Any) -> Any:
    """The engine's archive (its `flush()` / `metrics()`): the one place the
    harness reaches past `ContextEngine`'s constructor options."""
    return getattr(engine, "archive", None) if engine is not None else None


# -- 1. agent loop ---------------------------------------------------------------


async def agent_loop(
    spec: SaverSpec, ctx: Context, params: dict[str, Any], repeats: int
) -> Result:
    """`benchmarks/agent_loop.py`'s graph: `invokes` ainvokes on one thread."""
    invokes, window = params["invokes"], params["window"]
    result = Result()
    result.notes["rss_start_mib"] = rss_mib()
    expected = invokes * MESSAGES_PER_INVOKE
    for _ in range(repeats):
        gc.collect()
        run = uuid.uuid4().hex[:8]
        async with open_saver(spec, ctx) as opened:
            graph = build_graph(opened.saver)
            persistent = opened.saver is not None
            await _drive(graph, persistent, f"warmup-{run}", WARMUP_INVOKES)
            archive = archive_of(opened.engine)
            if archive is not None:
                await asyncio.to_thread(archive.flush, 300.0)
            timings, messages = await _drive(graph, persistent, f"bench-{run}", invokes)
            if archive is not None:
                backlog = int(archive.metrics()["queued"])
                start = time.perf_counter()
                flushed = await asyncio.to_thread(archive.flush, 300.0)
                result.add("archive backlog after loop (rows)", backlog)
                result.add(
                    "archive flush after loop (ms)", _ms(time.perf_counter() - start)
                )
                metrics = archive.metrics()
                check(flushed, "archive did not flush within 300 s")
                check(int(metrics["dropped"]) == 0, f"archive dropped rows: {metrics}")
                result.notes["archive_metrics"] = {
                    k: metrics[k] for k in ("enqueued", "written", "dropped", "retried")
                }
        ids = {message.id for message in messages}
        check(
            len(messages) == expected == len(ids),
            f"final state holds {len(messages)} messages ({len(ids)} distinct ids), "
            f"expected {expected}",
        )
        result.add(f"first-{window} ms/invoke", _mean(timings[:window]))
        result.add(f"last-{window} ms/invoke", _mean(timings[-window:]))
        result.add(
            f"last-{window} median ms/invoke", statistics.median(timings[-window:])
        )
    if not params.get("in_process"):
        result.add("peak RSS (MiB)", peak_rss_mib())
        start_rss = result.notes["rss_start_mib"]
        result.add("peak RSS - start RSS (MiB)", peak_rss_mib() - start_rss)
    result.checks.append(f"final state: {expected} messages with distinct ids")
    return result


# -- 2. raw put / put_writes / get rounds ----------------------------------------


async def raw_rounds(
    spec: SaverSpec, ctx: Context, params: dict[str, Any], repeats: int
) -> Result:
    """aput + aput_writes + aget_tuple(latest) per round on one thread whose
    `messages` list (plain dicts, kept by the caller) grows by one per round."""
    rounds = params["raw_elements"]
    tenth = max(1, rounds // 10)
    result = Result()
    async with open_saver(spec, ctx) as opened:
        saver = opened.saver
        for _ in range(repeats):
            gc.collect()
            thread = f"raw-{uuid.uuid4().hex[:8]}"
            config: Any = _config(thread)
            latest = _config(thread)
            msgs: list[dict[str, str]] = []
            version: Any = None
            puts, writes, gets = [], [], []
            clock = time.perf_counter
            began = clock()
            for i in range(rounds):
                msgs = [*msgs, {"role": "ai", "content": f"{i:08d} {CONTENT_100[9:]}"}]
                version = saver.get_next_version(version, None)
                cp = empty_checkpoint()
                cp["channel_values"] = {"messages": msgs}
                cp["channel_versions"] = {"messages": version}
                metadata: Any = {"source": "loop", "step": i, "parents": {}}
                t0 = clock()
                config = await saver.aput(config, cp, metadata, {"messages": version})
                t1 = clock()
                await saver.aput_writes(config, [("messages", msgs[-1:])], f"task-{i}")
                t2 = clock()
                got = await saver.aget_tuple(latest)
                t3 = clock()
                puts.append(t1 - t0)
                writes.append(t2 - t1)
                gets.append(t3 - t2)
                check(
                    got is not None and got.checkpoint["id"] == cp["id"],
                    f"round {i}: aget_tuple(latest) did not return the checkpoint put",
                )
                values = got.checkpoint["channel_values"].get("messages", [])
                check(
                    len(values) == i + 1 and values[-1] == msgs[-1],
                    f"round {i}: latest holds {len(values)} messages, expected {i + 1}",
                )
                check(
                    len(got.pending_writes or []) == 1,
                    f"round {i}: {len(got.pending_writes or [])} pending writes, "
                    "expected 1",
                )
            total = clock() - began
            result.add("aput ms, first 10%", _ms(_mean(puts[:tenth])))
            result.add("aput ms, last 10%", _ms(_mean(puts[-tenth:])))
            result.add("aget_tuple ms, first 10%", _ms(_mean(gets[:tenth])))
            result.add("aget_tuple ms, last 10%", _ms(_mean(gets[-tenth:])))
            result.add("aput_writes ms, last 10%", _ms(_mean(writes[-tenth:])))
            result.add("ops/s (3 calls per round)", 3 * rounds / total)
    result.checks.append(
        f"every round: aget_tuple(latest) returns the checkpoint put, with i+1 "
        f"messages and 1 pending write ({rounds} rounds)"
    )
    return result


# -- 3. history ------------------------------------------------------------------


class _ChatState(TypedDict):
    """A conversation of plain dicts (cheap to decode, so listing 1,000 full
    states measures the saver rather than message-object construction)."""

    messages: Annotated[list[dict[str, str]], operator.add]


async def _answer(state: _ChatState) -> dict[str, list[dict[str, str]]]:
    return {"messages": [{"role": "ai", "content": CONTENT_100}]}


def chat_graph(saver: Any) -> Any:
    """START -> answer -> END: each invoke adds a human and an ai dict."""
    builder = StateGraph(_ChatState)
    builder.add_node("answer", _answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=saver)


async def _chat_thread(saver: Any, thread: str, checkpoints: int) -> tuple[Any, int]:
    """Invokes of `chat_graph` on `thread` until it holds >= `checkpoints`."""
    graph = chat_graph(saver)
    config: Any = {"configurable": {"thread_id": thread}}
    human = {"role": "human", "content": CONTENT_100}
    await graph.ainvoke({"messages": [human]}, config)
    per_invoke = len(await _collect(saver.alist(_config(thread))))
    invokes = -(-checkpoints // per_invoke)
    for _ in range(1, invokes):
        await graph.ainvoke({"messages": [human]}, config)
    return graph, invokes


async def history(
    spec: SaverSpec, ctx: Context, params: dict[str, Any], repeats: int
) -> Result:
    """alist full, limit=10, filtered, and aget_state_history on one thread of
    ~`history_checkpoints` checkpoints of a chat graph (state: a list of plain
    dicts with 100-char content, two more per invoke)."""
    result = Result()
    async with open_saver(spec, ctx) as opened:
        saver = opened.saver
        thread = f"hist-{uuid.uuid4().hex[:8]}"
        graph, invokes = await _chat_thread(
            saver, thread, params["history_checkpoints"]
        )
        config = _config(thread)
        total = len(await _collect(saver.alist(config)))
        result.notes["checkpoints"] = total
        result.notes["invokes"] = invokes
        clock = time.perf_counter
        for _ in range(repeats):
            gc.collect()
            t0 = clock()
            everything = await _collect(saver.alist(config))
            t1 = clock()
            ten = await _collect(saver.alist(config, limit=10))
            t2 = clock()
            filtered = await _collect(saver.alist(config, filter={"source": "input"}))
            t3 = clock()
            states = await _collect(
                graph.aget_state_history({"configurable": {"thread_id": thread}})
            )
            t4 = clock()
            check(
                len(everything) == total, f"alist returned {len(everything)} of {total}"
            )
            ids = [t.checkpoint["id"] for t in everything]
            check(ids == sorted(ids, reverse=True), "alist is not newest first")
            check(
                len(ten) == 10 and [t.checkpoint["id"] for t in ten] == ids[:10],
                "alist(limit=10) is not the newest 10",
            )
            check(
                len(filtered) == invokes
                and all(t.metadata.get("source") == "input" for t in filtered),
                f"alist(filter source=input) returned {len(filtered)}, "
                f"expected {invokes}",
            )
            check(len(states) == total, f"aget_state_history returned {len(states)}")
            newest = states[0].values.get("messages", [])
            check(
                len(newest) == 2 * invokes,
                f"newest state holds {len(newest)} messages",
            )
            result.add("alist full (ms)", _ms(t1 - t0))
            result.add("alist limit=10 (ms)", _ms(t2 - t1))
            result.add("alist filter source=input (ms)", _ms(t3 - t2))
            result.add("aget_state_history full (ms)", _ms(t4 - t3))
    result.checks.append(
        f"{total} checkpoints listed newest first; limit=10 = newest 10; filter "
        f"returns the {invokes} input checkpoints; history's newest state complete"
    )
    return result


# -- 4. lookups against thread length --------------------------------------------


async def lookup(
    spec: SaverSpec, ctx: Context, params: dict[str, Any], repeats: int
) -> Result:
    """Median µs of aget_tuple (latest, and by the id of the middle checkpoint) on
    threads of each size in `lookup_sizes` (one small channel per checkpoint)."""
    calls = params["lookup_calls"]
    result = Result()
    async with open_saver(spec, ctx) as opened:
        saver = opened.saver
        built: dict[int, tuple[str, str, str]] = {}
        for n in params["lookup_sizes"]:
            thread = f"look-{n}-{uuid.uuid4().hex[:6]}"
            config: Any = _config(thread)
            version: Any = None
            middle = last = ""
            for i in range(n):
                cp = empty_checkpoint()
                version = saver.get_next_version(version, None)
                cp["channel_values"] = {"step": i}
                cp["channel_versions"] = {"step": version}
                config = await saver.aput(
                    config,
                    cp,
                    {"source": "loop", "step": i, "parents": {}},
                    {"step": version},
                )
                last = cp["id"]
                if i == n // 2:
                    middle = cp["id"]
            built[n] = (thread, middle, last)
        clock = time.perf_counter
        for _ in range(repeats):
            gc.collect()
            for n, (thread, middle, last) in built.items():
                for label, cfg, want in (
                    ("latest", _config(thread), last),
                    ("by id", _config(thread, middle), middle),
                ):
                    got = await saver.aget_tuple(cfg)
                    check(
                        got is not None and got.checkpoint["id"] == want,
                        f"{label} lookup at {n} returned the wrong checkpoint",
                    )
                    step = got.checkpoint["channel_values"].get("step")
                    check(
                        step == (n - 1 if label == "latest" else n // 2),
                        f"{label} lookup at {n}: step {step}",
                    )
                    samples = []
                    for _ in range(calls):
                        t0 = clock()
                        await saver.aget_tuple(cfg)
                        samples.append(clock() - t0)
                    result.add(f"{label} µs @ {n:,}", statistics.median(samples) * 1e6)
    result.checks.append("latest and by-id return the right checkpoint and value")
    return result


# -- 5. many threads, concurrent -------------------------------------------------


async def _fill(
    saver: Any, queue: asyncio.Queue[int], prefix: str, per_thread: int
) -> None:
    """One task: take threads off `queue` and write `per_thread` checkpoints each."""
    while True:
        try:
            t = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        config: Any = _config(f"{prefix}-{t}")
        msgs: list[dict[str, str]] = []
        version: Any = None
        for i in range(per_thread):
            msgs = [*msgs, {"role": "ai", "content": CONTENT_100}]
            version = saver.get_next_version(version, None)
            cp = empty_checkpoint()
            cp["channel_values"] = {"messages": msgs}
            cp["channel_versions"] = {"messages": version}
            meta: Any = {"source": "loop", "step": i, "parents": {}}
            config = await saver.aput(config, cp, meta, {"messages": version})


async def many_threads(
    spec: SaverSpec, ctx: Context, params: dict[str, Any], repeats: int
) -> Result:
    """`threads` threads x `per_thread` checkpoints (aput; messages growing by
    one plain dict each) written from `tasks` concurrent asyncio tasks."""
    n_threads, per_thread, n_tasks = (
        params["threads"],
        params["per_thread"],
        params["tasks"],
    )
    result = Result()
    async with open_saver(spec, ctx) as opened:
        saver = opened.saver
        for _ in range(repeats):
            gc.collect()
            prefix = f"mt-{uuid.uuid4().hex[:6]}"
            queue: asyncio.Queue[int] = asyncio.Queue()
            for t in range(n_threads):
                queue.put_nowait(t)
            start = time.perf_counter()
            tasks = (_fill(saver, queue, prefix, per_thread) for _ in range(n_tasks))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - start
            result.add("checkpoints/s", n_threads * per_thread / elapsed)
            for t in range(n_threads):
                got = await saver.aget_tuple(_config(f"{prefix}-{t}"))
                check(
                    got is not None and got.metadata.get("step") == per_thread - 1,
                    f"thread {t}: latest is not step {per_thread - 1}",
                )
                values = got.checkpoint["channel_values"].get("messages", [])
                check(len(values) == per_thread, f"thread {t}: {len(values)} messages")
    result.checks.append(
        f"every thread's latest is step {per_thread - 1} with {per_thread} messages"
    )
    return result


# -- 6. Redis round trips --------------------------------------------------------


class _SendCounter:
    """Counts redis-py socket writes (one per command or pipeline = one round
    trip) by wrapping `send_packed_command` of the sync and asyncio connections."""

    def __init__(self) -> None:
        self.count = 0
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> _SendCounter:
        import redis.asyncio.connection as aconn
        import redis.connection as sconn

        counter = self
        for module in (aconn, sconn):
            cls = module.AbstractConnection
            original = cls.send_packed_command
            if asyncio.iscoroutinefunction(original):

                async def wrapped_async(
                    self: Any, *a: Any, _o: Any = original, **k: Any
                ) -> Any:
                    counter.count += 1
                    return await _o(self, *a, **k)

                cls.send_packed_command = wrapped_async  # type: ignore[method-assign]
            else:

                def wrapped(self: Any, *a: Any, _o: Any = original, **k: Any) -> Any:
                    counter.count += 1
                    return _o(self, *a, **k)

                cls.send_packed_command = wrapped  # type: ignore[method-assign]
            self._undo.append(
                lambda c=cls, o=original: setattr(c, "send_packed_command", o)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in self._undo:
            undo()


async def _server_calls(url: str) -> int:
    """Total calls in INFO commandstats (commands run inside scripts included),
    less the INFO calls themselves."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return sum(
        int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "info")
    )


class _ThreadOps:
    """The four measured operations on one growing thread."""

    def __init__(self, saver: Any, thread: str) -> None:
        self.saver = saver
        self.thread = thread
        self.config: Any = _config(thread)
        self.version: Any = None
        self.msgs: list[dict[str, str]] = []
        self.i = 0

    async def put(self) -> None:
        self.i += 1
        self.msgs = [*self.msgs, {"role": "ai", "content": CONTENT_100}]
        self.version = self.saver.get_next_version(self.version, None)
        cp = empty_checkpoint()
        cp["channel_values"] = {"messages": self.msgs}
        cp["channel_versions"] = {"messages": self.version}
        meta: Any = {"source": "loop", "step": self.i, "parents": {}}
        versions = {"messages": self.version}
        self.config = await self.saver.aput(self.config, cp, meta, versions)

    async def put_writes(self) -> None:
        self.i += 1
        writes = [("messages", self.msgs[-1:])]
        await self.saver.aput_writes(self.config, writes, f"task-{self.i}")

    async def get_tuple(self) -> None:
        got = await self.saver.aget_tuple(_config(self.thread))
        check(got is not None, "get_tuple returned None")

    async def list10(self) -> None:
        got = await _collect(self.saver.alist(_config(self.thread), limit=10))
        check(len(got) == 10, f"list(limit=10) returned {len(got)}")


async def round_trips(
    spec: SaverSpec, ctx: Context, params: dict[str, Any], repeats: int
) -> Result:
    """Client round trips and server commands per put, put_writes, get_tuple
    (latest) and list(limit=10), on a thread that already has 20 checkpoints."""
    url = ctx.redis_url(spec)
    result = Result()
    if url is None:
        result.notes["skipped"] = "not a Redis-backed saver"
        return result
    ops = params["rt_ops"]
    async with open_saver(spec, ctx) as opened:
        saver = opened.saver
        for _ in range(repeats):
            thread = f"rt-{uuid.uuid4().hex[:6]}"
            ops_on = _ThreadOps(saver, thread)
            for _ in range(20):
                await ops_on.put()
                await ops_on.put_writes()
            for _ in range(3):
                await ops_on.get_tuple()
                await ops_on.list10()
            measured: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("put", ops_on.put),
                ("put_writes", ops_on.put_writes),
                ("get_tuple", ops_on.get_tuple),
                ("list(limit=10)", ops_on.list10),
            ]
            for label, op in measured:
                before = await _server_calls(url)
                with _SendCounter() as counter:
                    for _ in range(ops):
                        await op()
                after = await _server_calls(url)
                result.add(f"{label}: round trips/op", counter.count / ops)
                result.add(f"{label}: server commands/op", (after - before) / ops)
    result.checks.append("get_tuple finds the thread; list(limit=10) returns 10")
    return result


# -- 7. prebuilt agents ----------------------------------------------------------


def _scripted_model() -> Any:
    """A chat model that asks for one tool call per human turn, then answers."""
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    answer = ("Here is what the lookup returned, summarised for the user. " * 4)[:200]

    class ScriptedChatModel(BaseChatModel):
        """Tool call after a human message, final answer after a tool result."""

        @property
        def _llm_type(self) -> str:
            return "scripted"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(
            self,
            messages: list[BaseMessage],
            stop: Any = None,
            run_manager: Any = None,
            **kwargs: Any,
        ) -> ChatResult:
            turn = sum(isinstance(m, HumanMessage) for m in messages)
            if isinstance(messages[-1], HumanMessage):
                message = AIMessage(
                    content="",
                    id=f"ai-{turn}-call",
                    tool_calls=[
                        {
                            "name": "lookup",
                            "args": {"query": f"q{turn}"},
                            "id": f"call-{turn}",
                            "type": "tool_call",
                        }
                    ],
                )
            else:
                message = AIMessage(
                    content=f"[{turn}] {answer}", id=f"ai-{turn}-answer"
                )
            return ChatResult(generations=[ChatGeneration(message=message)])

        async def _agenerate(
            self,
            messages: list[BaseMessage],
            stop: Any = None,
            run_manager: Any = None,
            **kwargs: Any,
        ) -> ChatResult:
            return self._generate(messages, stop, run_manager, **kwargs)

    return ScriptedChatModel()


def _lookup_tool() -> Any:
    from langchain_core.tools import tool

    @tool
    async def lookup(query: str) -> str:
        """Look something up."""
        return f"result for {query}: " + "x" * 180

    return lookup


def build_agent(variant: str, saver: Any) -> Any:
    model, tools = _scripted_model(), [_lookup_tool()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant in ("react-v2", "react-v1"):
            from langgraph.prebuilt import create_react_agent

            return create_react_agent(
                model, tools, checkpointer=saver, version=variant.split("-")[1]
            )
        from langchain.agents import create_agent

        return create_agent(model, tools, checkpointer=saver)


def prebuilt(variant: str) -> Callable[..., Awaitable[Result]]:
    async def run(
        spec: SaverSpec, ctx: Context, params: dict[str, Any], repeats: int
    ) -> Result:
        """`turns` ainvokes of a prebuilt agent (scripted tool-calling model)."""
        from langchain_core.messages import HumanMessage

        turns = params["turns"]
        tenth = max(1, turns // 10)
        result = Result()
        async with open_saver(spec, ctx) as opened:
            agent = build_agent(variant, opened.saver)
            for _ in range(repeats):
                gc.collect()
                thread = f"agent-{uuid.uuid4().hex[:6]}"
                config: Any = {"configurable": {"thread_id": thread}}
                before = await storage_snapshot(spec, ctx, opened)
                conversation: list[Any] = []
                timings = []
                for turn in range(turns):
                    human = HumanMessage(
                        content=f"question {turn} " + "q" * 100, id=f"h-{turn}"
                    )
                    start = time.perf_counter()
                    if opened.saver is None:
                        out = await agent.ainvoke({"messages": [*conversation, human]})
                        conversation = out["messages"]
                    else:
                        await agent.ainvoke({"messages": [human]}, config)
                    timings.append(time.perf_counter() - start)
                if opened.saver is not None:
                    conversation = (await agent.aget_state(config)).values["messages"]
                    after = await storage_snapshot(spec, ctx, opened)
                    for key, value in storage_delta(before, after).items():
                        label = "keys stored" if key == "keys" else f"stored: {key}"
                        result.add(label, value)
                check(
                    len(conversation) == 4 * turns,
                    f"final state holds {len(conversation)} messages, "
                    f"expected {4 * turns}",
                )
                result.add("ms/turn (all turns)", _ms(_mean(timings)))
                result.add("ms/turn (last 10%)", _ms(_mean(timings[-tenth:])))
        result.checks.append(f"final state: {4 * turns} messages")
        return result

    return run


# -- 8. filtered thread listing --------------------------------------------------


async def list_threads(
    spec: SaverSpec, ctx: Context, params: dict[str, Any], repeats: int
) -> Result:
    """A filtered page that matches no thread, at each size in `list_sizes`
    threads (one checkpoint each, metadata user_id = user-<i % 20>): ours'
    `alist_threads(filter=..., limit=20)`, and every saver's nearest equivalent
    `alist(None, filter=..., limit=20)` (checkpoints of all threads)."""
    calls = params["list_calls"]
    result = Result()
    ours = spec.key.startswith("ours-")
    async with open_saver(spec, ctx) as opened:
        saver = opened.saver
        made = 0
        for size in params["list_sizes"]:
            for t in range(made, size):
                cp = empty_checkpoint()
                version = saver.get_next_version(None, None)
                cp["channel_values"] = {"step": t}
                cp["channel_versions"] = {"step": version}
                meta: Any = {
                    "source": "input",
                    "step": -1,
                    "parents": {},
                    "user_id": f"user-{t % 20}",
                }
                await saver.aput(_config(f"lt-{t}"), cp, meta, {"step": version})
            made = size
            match = min(20, len(range(1, size, 20)))
            variants: list[
                tuple[str, Callable[[dict[str, Any]], Awaitable[list[Any]]]]
            ] = []
            if ours:
                variants.append(
                    ("list_threads", lambda f: saver.alist_threads(filter=f, limit=20))
                )
            variants.append(
                (
                    "alist(None)",
                    lambda f: _collect(saver.alist(None, filter=f, limit=20)),
                )
            )
            for label, call in variants:
                try:
                    got = await call({"user_id": "user-1"})
                except Exception as error:
                    result.notes[f"{label} @ {size:,}"] = f"unsupported: {error!r}"[
                        :200
                    ]
                    continue
                check(
                    len(got) == match,
                    f"{label} user-1 @ {size}: {len(got)}, expected {match}",
                )
                for _ in range(repeats):
                    gc.collect()
                    samples = []
                    for _ in range(calls):
                        t0 = time.perf_counter()
                        page = await call({"user_id": "nobody"})
                        samples.append(time.perf_counter() - t0)
                        check(
                            page == [],
                            f"{label}: a non-matching filter returned {len(page)}",
                        )
                    result.add(
                        f"{label} non-matching ms @ {size:,}",
                        _ms(statistics.median(samples)),
                    )
    result.checks.append(
        "matching filter returns min(20, threads/20); non-matching returns []"
    )
    return result


# -- 9. archive drain ------------------------------------------------------------


async def archive_drain(
    spec: SaverSpec, ctx: Context, params: dict[str, Any], repeats: int
) -> Result:
    """`benchmarks/archive.py`'s drain part: a burst of checkpoints on the memory
    store with the archive, worker as is and held off; rows/s and checkpoints/s."""
    result = Result()
    if ctx.clickhouse is None:
        result.notes["skipped"] = "no ClickHouse front"
        return result
    from benchmarks import archive as A  # uses internals; see its docstring

    ch = ctx.clickhouse
    target = A.ClickHouseTarget(
        ch["host"], ch["port"], ch["user"], ch["password"], "chdb front"
    )
    burst, thread_len = params["burst"], params["thread_len"]
    for _ in range(repeats):
        plain = await asyncio.to_thread(A.plain_burst_us, burst, thread_len)
        for mode in A.DRAIN_MODES:
            run = await asyncio.to_thread(
                A.run_drain, target, mode, burst, thread_len, plain
            )
            check(
                run.flushed and run.dropped == 0 and run.written == run.rows,
                f"drain {mode}: flushed={run.flushed} written={run.written} "
                f"rows={run.rows}",
            )
            tag = "worker as is" if mode == A.AS_IS else "worker held off"
            result.add(f"drain rows/s ({tag})", run.rows_per_s)
            result.add(f"drain checkpoints/s ({tag})", run.checkpoints_per_s)
            result.add(f"put+put_writes µs with archive ({tag})", run.put_us_archive)
        result.add("put+put_writes µs without archive", plain)
    result.checks.append("every burst row written, none dropped")
    return result


WORKLOADS: dict[str, Callable[..., Awaitable[Result]]] = {
    "agent_loop": agent_loop,
    "raw_rounds": raw_rounds,
    "history": history,
    "lookup": lookup,
    "many_threads": many_threads,
    "round_trips": round_trips,
    "react_v2": prebuilt("react-v2"),
    "react_v1": prebuilt("react-v1"),
    "create_agent": prebuilt("create-agent"),
    "list_threads": list_threads,
    "archive_drain": archive_drain,
}
