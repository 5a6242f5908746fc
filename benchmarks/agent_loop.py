"""Per-invoke cost of an agent loop as the conversation grows, per checkpointer.

What is measured
----------------
One thread runs an agent loop of ``--invokes`` (default 200) ``ainvoke`` calls.
Each call adds one HumanMessage and then runs ``STEPS_PER_INVOKE`` (7)
supersteps that alternate between an ``agent`` node (an AIMessage that asks for
a tool call) and a ``tool`` node (the ToolMessage answering it), ending on a
final ``agent`` answer.  Every node appends exactly one ~500-byte message with a
stable, unique id, so after ``k`` invokes the thread holds ``8 * k`` messages.
Nothing calls an LLM; the workload is fully deterministic.

Every ``ainvoke`` is timed with ``time.perf_counter()``.  For each
configuration the script reports the mean time of the first and of the last
``--window`` (default 20) invokes, the growth between them (last / first), the
median of the last window, and the ratio of the last-window mean to the same
figure of the run without a checkpointer.  That ratio is the headline number:
it says how much a checkpointer adds on top of the work the graph has to do
anyway once the conversation is long.  The targets for ``ContextEngineSaver``
are at most 2.5x on its embedded memory store and 3x on Redis (where a get
fetches only the messages the saver has not decoded yet); ``InMemorySaver``,
which re-serializes the whole message list at every superstep, is expected
near 12x.

Why the baseline passes the whole conversation
----------------------------------------------
Without a checkpointer no state survives between invokes, so the "none" run
keeps the conversation on the caller side and passes the whole accumulated
message list (plus the new HumanMessage) as input on every invoke.  The graph
therefore processes the same growing list as in the checkpointed runs (the
``add_messages`` reducer and the routing scan it at every superstep); only
persistence is missing.  Checkpointed runs compile the graph with
``checkpointer=saver``, use one ``thread_id`` and pass only the new
HumanMessage.

Configurations
--------------
``build_registry`` returns a list of (name, async context manager factory)
entries; another store is measured by adding an entry there.  ``none``,
``InMemorySaver`` and ``ours(memory)`` (``ContextEngineSaver()``) are always
available; ``ours(redis)`` (``ContextEngineSaver.from_conn_string(url)``) only
when ``--redis-url`` or the ``REDIS_URL`` environment variable is given.
``aiecs_checkpoint`` is imported only when one of its configurations runs (from
the repository root when the package is not installed).  Each configuration
runs with a fresh graph and saver, after a short warm-up on another thread of
that same saver.  With ``--repeat R`` every figure is the median over the R
repeats.  At the end the final state of every run is checked to hold exactly
``8 * invokes`` messages with distinct ids.

Run: ``python benchmarks/agent_loop.py [--invokes N] [--repeat R]
[--only NAME[,NAME]] [--window W] [--redis-url URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import re
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

STEPS_PER_INVOKE = 7
MESSAGES_PER_INVOKE = STEPS_PER_INVOKE + 1
MESSAGE_BYTES = 500
WARMUP_INVOKES = 5
BASELINE = "none"
INMEMORY = "InMemorySaver"
OURS_MEMORY = "ours(memory)"
OURS_REDIS = "ours(redis)"
OURS_MEMORY_TARGET = 2.5
OURS_REDIS_TARGET = 3.0
TARGETS = {OURS_MEMORY: OURS_MEMORY_TARGET, OURS_REDIS: OURS_REDIS_TARGET}

_FILLER = (
    "The quick brown fox jumps over the lazy dog while the agent loop keeps "
    "appending deterministic messages to one long-running thread. "
)


class AgentState(TypedDict):
    """Message-only state, like ``MessagesState``."""

    messages: Annotated[list[AnyMessage], add_messages]


Graph = CompiledStateGraph[AgentState, None, AgentState, AgentState]
SaverFactory = Callable[[], AbstractAsyncContextManager[BaseCheckpointSaver | None]]


@dataclass(frozen=True)
class Configuration:
    """One benchmarked setup: a name and a factory for its checkpointer."""

    name: str
    factory: SaverFactory | None
    skip_reason: str = ""


@dataclass(frozen=True)
class RunResult:
    """Timings of one measured run and the final size of its thread."""

    name: str
    timings_ms: list[float]
    final_messages: int
    unique_ids: int


@dataclass(frozen=True)
class Figures:
    """Summary figures of one run (or medians over repeated runs)."""

    first_mean: float
    last_mean: float
    last_median: float
    growth: float
    vs_baseline: float | None


def _content(message_id: str, role: str) -> str:
    """Deterministic text of exactly ``MESSAGE_BYTES`` ASCII characters."""
    head = f"[{role} {message_id}] "
    body = _FILLER * (MESSAGE_BYTES // len(_FILLER) + 1)
    return (head + body)[:MESSAGE_BYTES]


def _current_turn(messages: Sequence[BaseMessage]) -> tuple[str, int]:
    """Return the id of the last HumanMessage and how many messages follow it."""
    for steps, message in enumerate(reversed(messages)):
        if isinstance(message, HumanMessage):
            return str(message.id), steps
    raise ValueError("no HumanMessage in state")


async def agent(state: AgentState) -> dict[str, list[AnyMessage]]:
    """Answer with one AIMessage; request a tool call unless this is the last step."""
    human_id, steps = _current_turn(state["messages"])
    message_id = f"{human_id}-s{steps + 1}"
    tool_calls: list[ToolCall] = []
    if steps + 1 < STEPS_PER_INVOKE:
        tool_calls.append(
            ToolCall(
                name="lookup",
                args={"step": steps + 1},
                id=f"{message_id}-call",
                type="tool_call",
            )
        )
    message = AIMessage(
        content=_content(message_id, "ai"), id=message_id, tool_calls=tool_calls
    )
    return {"messages": [message]}


async def tool(state: AgentState) -> dict[str, list[AnyMessage]]:
    """Answer the pending tool call with one ToolMessage."""
    human_id, steps = _current_turn(state["messages"])
    message_id = f"{human_id}-s{steps + 1}"
    call = state["messages"][-1]
    assert isinstance(call, AIMessage) and call.tool_calls, "tool without a call"
    message = ToolMessage(
        content=_content(message_id, "tool"),
        id=message_id,
        tool_call_id=str(call.tool_calls[0]["id"]),
    )
    return {"messages": [message]}


def route(state: AgentState) -> str:
    """Stop after ``STEPS_PER_INVOKE`` node steps, else alternate agent/tool."""
    _, steps = _current_turn(state["messages"])
    if steps >= STEPS_PER_INVOKE:
        return END
    return "tool" if isinstance(state["messages"][-1], AIMessage) else "agent"


def build_graph(checkpointer: BaseCheckpointSaver | None) -> Graph:
    """Build the agent loop graph, with or without a checkpointer."""
    builder = StateGraph(AgentState)
    builder.add_node("agent", agent)
    builder.add_node("tool", tool)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tool", "agent", END])
    builder.add_conditional_edges("tool", route, ["tool", "agent", END])
    return builder.compile(checkpointer=checkpointer)


@asynccontextmanager
async def _no_saver() -> AsyncIterator[None]:
    yield None


@asynccontextmanager
async def _inmemory_saver() -> AsyncIterator[BaseCheckpointSaver]:
    yield InMemorySaver()


def _context_engine_saver() -> type[BaseCheckpointSaver]:
    """Import ``ContextEngineSaver``, from the repository root if not installed."""
    try:
        from aiecs_checkpoint import ContextEngineSaver
    except ModuleNotFoundError as error:
        if error.name != "aiecs_checkpoint":
            raise
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from aiecs_checkpoint import ContextEngineSaver
    return ContextEngineSaver


@asynccontextmanager
async def _ours_memory_saver() -> AsyncIterator[BaseCheckpointSaver]:
    yield _context_engine_saver()()


def _ours_redis_factory(url: str) -> SaverFactory:
    @asynccontextmanager
    async def factory() -> AsyncIterator[BaseCheckpointSaver]:
        saver_class: Any = _context_engine_saver()
        async with saver_class.from_conn_string(url) as saver:
            yield saver

    return factory


def build_registry(redis_url: str | None) -> list[Configuration]:
    """All configurations, in run order; add a store by adding an entry here."""
    registry = [
        Configuration(BASELINE, _no_saver),
        Configuration(INMEMORY, _inmemory_saver),
        Configuration(OURS_MEMORY, _ours_memory_saver),
    ]
    if redis_url:
        registry.append(Configuration(OURS_REDIS, _ours_redis_factory(redis_url)))
    else:
        registry.append(
            Configuration(OURS_REDIS, None, "no --redis-url / REDIS_URL given")
        )
    return registry


def _human(conversation_id: str, turn: int) -> HumanMessage:
    message_id = f"{conversation_id}-h{turn:05d}"
    return HumanMessage(content=_content(message_id, "human"), id=message_id)


async def _drive(
    graph: Graph, persistent: bool, thread_id: str, invokes: int
) -> tuple[list[float], list[AnyMessage]]:
    """Run ``invokes`` turns on one thread; return timings and final messages."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    conversation: list[AnyMessage] = []
    timings_ms: list[float] = []
    for turn in range(invokes):
        human = _human(thread_id, turn)
        if persistent:
            start = time.perf_counter()
            await graph.ainvoke({"messages": [human]}, config)
            timings_ms.append((time.perf_counter() - start) * 1000.0)
        else:
            payload: AgentState = {"messages": [*conversation, human]}
            start = time.perf_counter()
            result = await graph.ainvoke(payload)
            timings_ms.append((time.perf_counter() - start) * 1000.0)
            conversation = result["messages"]
    if persistent:
        snapshot = await graph.aget_state(config)
        conversation = list(snapshot.values.get("messages", []))
    return timings_ms, conversation


async def _delete_thread(saver: BaseCheckpointSaver, thread_id: str) -> None:
    try:
        await saver.adelete_thread(thread_id)
    except NotImplementedError:
        pass


async def run_configuration(configuration: Configuration, invokes: int) -> RunResult:
    """Measure one configuration with a fresh saver and a fresh graph."""
    assert configuration.factory is not None
    gc.collect()
    async with configuration.factory() as saver:
        graph = build_graph(saver)
        persistent = saver is not None
        run_id = uuid.uuid4().hex[:8]
        warmup_thread = f"warmup-{run_id}"
        bench_thread = f"bench-{run_id}"
        await _drive(graph, persistent, warmup_thread, WARMUP_INVOKES)
        timings_ms, messages = await _drive(graph, persistent, bench_thread, invokes)
        if saver is not None:
            await _delete_thread(saver, warmup_thread)
            await _delete_thread(saver, bench_thread)
    return RunResult(
        name=configuration.name,
        timings_ms=timings_ms,
        final_messages=len(messages),
        unique_ids=len({message.id for message in messages}),
    )


def figures_of(result: RunResult, baseline: RunResult | None, window: int) -> Figures:
    first = result.timings_ms[:window]
    last = result.timings_ms[-window:]
    first_mean = statistics.fmean(first)
    last_mean = statistics.fmean(last)
    vs_baseline = None
    if baseline is not None:
        vs_baseline = last_mean / statistics.fmean(baseline.timings_ms[-window:])
    return Figures(
        first_mean=first_mean,
        last_mean=last_mean,
        last_median=statistics.median(last),
        growth=last_mean / first_mean,
        vs_baseline=vs_baseline,
    )


def median_figures(runs: Sequence[Figures]) -> Figures:
    ratios = [run.vs_baseline for run in runs if run.vs_baseline is not None]
    return Figures(
        first_mean=statistics.median(run.first_mean for run in runs),
        last_mean=statistics.median(run.last_mean for run in runs),
        last_median=statistics.median(run.last_median for run in runs),
        growth=statistics.median(run.growth for run in runs),
        vs_baseline=statistics.median(ratios) if ratios else None,
    )


def _normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "n/a"


def print_report(
    figures: dict[str, Figures], args: argparse.Namespace, repeat: int
) -> None:
    window = args.window
    print(
        f"agent loop: {args.invokes} invokes/thread, {STEPS_PER_INVOKE} supersteps "
        f"and {MESSAGES_PER_INVOKE} messages of ~{MESSAGE_BYTES} B per invoke, "
        f"repeat {repeat}" + (" (medians over repeats)" if repeat > 1 else "")
    )
    print(
        f"python {platform.python_version()}, langgraph {_version('langgraph')}, "
        f"langgraph-checkpoint {_version('langgraph-checkpoint')}"
    )
    headers = (
        "configuration",
        f"first-{window} ms",
        f"last-{window} ms",
        "growth",
        f"last-{window} med",
        f"vs {BASELINE}",
    )
    rows = []
    for name, fig in figures.items():
        ratio = "-" if fig.vs_baseline is None else f"{fig.vs_baseline:.1f}x"
        rows.append(
            (
                name,
                f"{fig.first_mean:.2f}",
                f"{fig.last_mean:.2f}",
                f"{fig.growth:.1f}x",
                f"{fig.last_median:.2f}",
                ratio,
            )
        )
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(6)]
    for row in [headers, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    print()
    if BASELINE not in figures:
        print(f"(ratios need the '{BASELINE}' configuration; it was not selected)")
        return
    reference = figures.get(INMEMORY)
    for name, fig in figures.items():
        if name == BASELINE or fig.vs_baseline is None:
            continue
        line = f"{name}: last-{window} = {fig.vs_baseline:.1f}x no-checkpointer"
        if name != INMEMORY and reference and reference.vs_baseline is not None:
            line += f" ({INMEMORY} {reference.vs_baseline:.1f}x)"
        target = TARGETS.get(name)
        if target is not None:
            met = "met" if fig.vs_baseline <= target else "NOT met"
            line += f" [target <= {target}x: {met}]"
        print(line)


def check_results(results: Sequence[RunResult], invokes: int) -> None:
    expected = invokes * MESSAGES_PER_INVOKE
    for result in results:
        assert result.final_messages == expected, (
            f"{result.name}: final state has {result.final_messages} messages, "
            f"expected {expected} ({invokes} invokes x {MESSAGES_PER_INVOKE})"
        )
        assert result.unique_ids == expected, (
            f"{result.name}: final state has {result.unique_ids} distinct message "
            f"ids, expected {expected}"
        )
    names = ", ".join(dict.fromkeys(result.name for result in results))
    print(f"correctness: {expected} messages with unique ids in final state: {names}")


async def main_async(
    configurations: Sequence[Configuration], args: argparse.Namespace
) -> None:
    per_run: dict[str, list[Figures]] = {c.name: [] for c in configurations}
    all_results: list[RunResult] = []
    for repeat in range(args.repeat):
        results: dict[str, RunResult] = {}
        for configuration in configurations:
            start = time.perf_counter()
            results[configuration.name] = await run_configuration(
                configuration, args.invokes
            )
            print(
                f"[repeat {repeat + 1}/{args.repeat}] {configuration.name}: "
                f"{time.perf_counter() - start:.1f} s",
                file=sys.stderr,
            )
        baseline = results.get(BASELINE)
        for name, result in results.items():
            per_run[name].append(figures_of(result, baseline, args.window))
        all_results.extend(results.values())
    figures = {name: median_figures(runs) for name, runs in per_run.items()}
    print_report(figures, args, args.repeat)
    check_results(all_results, args.invokes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invokes", type=int, default=200, help="default 200")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="repeat every configuration R times and report medians (default 1)",
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="NAME[,NAME]",
        help="run only these configurations (case and punctuation are ignored, "
        "so ours-memory selects ours(memory)); ratios need 'none'",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=20,
        help="invokes in the first/last window (default 20)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        metavar="URL",
        help="also run ContextEngineSaver.from_conn_string(URL) (default: $REDIS_URL)",
    )
    return parser


def select(
    registry: Sequence[Configuration], only: str, parser: argparse.ArgumentParser
) -> list[Configuration]:
    """Apply ``--only``; report skipped configurations on stderr."""
    by_key = {_normalize(c.name): c for c in registry}
    if only:
        wanted = [_normalize(name) for name in only.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in by_key]
        if unknown:
            known = ", ".join(c.name for c in registry)
            parser.error(f"unknown configuration(s) {unknown}; known: {known}")
        chosen = [c for c in registry if _normalize(c.name) in wanted]
    else:
        chosen = list(registry)
    selected = []
    for configuration in chosen:
        if configuration.factory is None:
            print(
                f"skipping {configuration.name}: {configuration.skip_reason}",
                file=sys.stderr,
            )
        else:
            selected.append(configuration)
    if not selected:
        parser.error("no configuration left to run")
    return selected


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.window < 1 or args.invokes < 2 * args.window:
        parser.error("--invokes must be at least twice --window (and --window >= 1)")
    configurations = select(build_registry(args.redis_url), args.only, parser)
    asyncio.run(main_async(configurations, args))


if __name__ == "__main__":
    main()
