"""What the fault tests share: the graph they run, a saver that records what it
acknowledged, drivers that run a thread to completion, the checks, child
processes and a ClickHouse reader.

The package is used through its public API only. The one internal name the
archive needs, `ArchiveSettings`, is imported here and nowhere else in
`tests/faults`, so a move of its module touches one line.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import os
import random
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, track_model_usage
from aiecs_checkpoint.stores.clickhouse.archive import ArchiveSettings

__all__ = [
    "CALL_BOUND_S",
    "ROOT",
    "ArchiveSettings",
    "CallLog",
    "Child",
    "GraphSpec",
    "RecordingSaver",
    "Ticker",
    "acked_missing",
    "archive_settings_for",
    "aresume_to_completion",
    "build_graph",
    "cfg",
    "check_history",
    "clickhouse_client",
    "expected_log",
    "fresh_prefix",
    "next_input",
    "repeated_runs",
    "resume_to_completion",
    "seeded",
]

ROOT = Path(__file__).resolve().parents[2]
"""The repository root (child processes run from there)."""

CALL_BOUND_S = 10.0
"""The bound the fault tests hold every store call to: a call returns or raises
`StoreError` within this many seconds whatever the server does (crashed,
frozen, unreachable). The package's bound with its default timeouts is
9.05 s (`stores.redis.client.call_bound`); see `test_redis_crash.py`."""


def seeded(name: str) -> random.Random:
    """A random generator seeded from `FAULT_SEED` (or a fixed default), printed
    so that a failure can be replayed with the same seed."""
    seed = int(os.environ.get("FAULT_SEED", "20240613"))
    print(f"[{name}] FAULT_SEED={seed}")
    return random.Random(f"{name}:{seed}")


def fresh_prefix(tag: str) -> str:
    """A Redis key prefix no other test uses."""
    return f"{tag}{uuid.uuid4().hex[:10]}"


def cfg(thread: str, checkpoint_id: str | None = None, ns: str = "") -> Any:
    """A run config for `thread` (at `checkpoint_id` when given)."""
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


# -- the graph ---------------------------------------------------------------------


class RunState(TypedDict):
    log: Annotated[list[str], operator.add]
    marks: Annotated[list[str], operator.add]


@dataclass(frozen=True)
class GraphSpec:
    """A chain of `steps` nodes, with two parallel nodes after the first, and an
    `interrupt()` node in the middle when `ask` is set.

    Every node records its model usage (`mode` = node@attempt) with the
    tracking helpers, appends its name to `log` and node@attempt to `marks`,
    and sleeps `pause_s` (so a run is still going when a fault hits).
    """

    steps: int = 6
    ask: bool = False
    pause_s: float = 0.0

    def __post_init__(self) -> None:
        assert self.steps >= 2, "the chain needs a node after the parallel pair"

    def nodes(self) -> list[str]:
        names = ["n0", "pa", "pb"] + [f"n{i}" for i in range(1, self.steps)]
        if self.ask:
            names.insert(len(names) // 2 + 1, "ask")
        return names


def build_graph(saver: ContextEngineSaver, spec: GraphSpec, attempt: str) -> Any:
    """The graph of `spec`, compiled with `saver`; `attempt` names this process
    (or try) in the records and marks, so a test can tell attempts apart."""

    def node(name: str) -> Any:
        def run(state: RunState) -> dict[str, Any]:
            if spec.pause_s:
                time.sleep(spec.pause_s)
            track_model_usage("model", "provider", f"{name}@{attempt}")
            return {"log": [name], "marks": [f"{name}@{attempt}"]}

        return run

    def ask(state: RunState) -> dict[str, Any]:
        answer = interrupt("answer?")
        track_model_usage("model", "provider", f"ask@{attempt}")
        return {"log": [f"ask:{answer}"], "marks": [f"ask@{attempt}"]}

    g = StateGraph(RunState)
    chain = [n for n in spec.nodes() if n not in ("pa", "pb")]
    for name in spec.nodes():
        g.add_node(name, ask if name == "ask" else node(name))
    g.add_edge(START, chain[0])
    g.add_edge(chain[0], "pa")
    g.add_edge(chain[0], "pb")
    g.add_edge("pa", chain[1])
    g.add_edge("pb", chain[1])
    for a, b in itertools.pairwise(chain[1:]):
        g.add_edge(a, b)
    g.add_edge(chain[-1], END)
    return g.compile(checkpointer=saver)


ANSWER = "yes"


def expected_log(spec: GraphSpec) -> list[str]:
    """The `log` of a completed run of `spec`, from a reference run in memory."""
    with ContextEngineSaver() as saver:
        graph = build_graph(saver, spec, "ref")
        resume_to_completion(graph, "ref")
        state = graph.get_state(cfg("ref"))
        return list(state.values["log"])


_DONE = object()


def repeated_runs(spec: GraphSpec, invokes: int) -> tuple[list[str], int]:
    """(`log`, number of checkpoints) of a thread after `invokes` complete runs of
    `spec` (no interrupt), from a reference run in memory."""
    assert not spec.ask
    with ContextEngineSaver() as saver:
        graph = build_graph(saver, spec, "ref")
        for _ in range(invokes):
            graph.invoke({"log": [], "marks": []}, cfg("ref"))
        history = list(saver.list(cfg("ref")))
        return list(history[0].checkpoint["channel_values"]["log"]), len(history)


def next_input(state: Any) -> Any:
    """What to invoke a thread in `state` (a StateSnapshot) with: the input of a
    new run, `Command(resume=...)` at an interrupt, None to go on from the last
    checkpoint, or `_DONE` when the run has ended."""
    if state.created_at is None:
        return {"log": [], "marks": []}
    if any(task.interrupts for task in state.tasks):
        return Command(resume=ANSWER)
    if state.tasks:  # `next` leaves out tasks whose writes were saved
        return None
    return _DONE


def resume_to_completion(graph: Any, thread: str, **kwargs: Any) -> dict[str, Any]:
    """Invoke (or resume) `thread` until it ends, through interrupts; its values."""
    for _ in range(20):
        state = graph.get_state(cfg(thread))
        todo = next_input(state)
        if todo is _DONE:
            return dict(state.values)
        graph.invoke(todo, cfg(thread), **kwargs)
    raise AssertionError(f"thread {thread!r} did not finish in 20 invokes")


async def aresume_to_completion(
    graph: Any, thread: str, **kwargs: Any
) -> dict[str, Any]:
    """Async `resume_to_completion`."""
    for _ in range(20):
        state = await graph.aget_state(cfg(thread))
        todo = next_input(state)
        if todo is _DONE:
            return dict(state.values)
        await graph.ainvoke(todo, cfg(thread), **kwargs)
    raise AssertionError(f"thread {thread!r} did not finish in 20 invokes")


# -- a saver that records what it acknowledged ---------------------------------------


@dataclass
class Call:
    """One saver call: its name, thread, start, duration and error (if any)."""

    op: str
    thread: str
    started: float
    seconds: float
    error: BaseException | None


@dataclass
class CallLog:
    """Every saver call (duration, error) and every put / put_writes that returned."""

    calls: list[Call] = field(default_factory=list)
    acked: list[tuple[str, str, str]] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    acked_writes: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def errors(self) -> list[BaseException]:
        with self.lock:
            return [c.error for c in self.calls if c.error is not None]

    def slowest(self, op_prefix: str = "") -> float:
        with self.lock:
            times = [c.seconds for c in self.calls if c.op.startswith(op_prefix)]
        return max(times, default=0.0)


def _thread_of(config: Any) -> str:
    return str((config.get("configurable") or {}).get("thread_id", "?"))


class RecordingSaver(ContextEngineSaver):
    """`ContextEngineSaver` that logs each call's duration and outcome, and the
    checkpoints (and writes) whose `put` (`put_writes`) returned."""

    def __init__(self, engine: ContextEngine, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self.log = CallLog()

    @contextmanager
    def timed(self, op: str, config: Any) -> Iterator[None]:
        """Log the duration and outcome of the block as one call `op`."""
        started = time.monotonic()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            seconds = time.monotonic() - started
            self.log.add(Call(op, _thread_of(config), started, seconds, error))

    def _ack(self, stored: RunnableConfig) -> None:
        conf = stored["configurable"]
        with self.log.lock:
            self.log.acked.append(
                (conf["thread_id"], conf["checkpoint_ns"], conf["checkpoint_id"])
            )
            self.log.acked_at.append(time.monotonic())

    def _ack_writes(self, config: Any, writes: Sequence[Any], task_id: str) -> None:
        conf = config["configurable"]
        with self.log.lock:
            self.log.acked_writes.append(
                (
                    conf["thread_id"],
                    conf.get("checkpoint_ns", ""),
                    conf["checkpoint_id"],
                    task_id,
                    len(writes),
                )
            )

    def put(self, config: Any, checkpoint: Any, metadata: Any, versions: Any) -> Any:
        with self.timed("put", config):
            stored = super().put(config, checkpoint, metadata, versions)
        self._ack(stored)
        return stored

    async def aput(
        self, config: Any, checkpoint: Any, metadata: Any, versions: Any
    ) -> Any:
        with self.timed("aput", config):
            stored = await super().aput(config, checkpoint, metadata, versions)
        self._ack(stored)
        return stored

    def put_writes(
        self, config: Any, writes: Sequence[Any], task_id: str, task_path: str = ""
    ) -> None:
        with self.timed("put_writes", config):
            super().put_writes(config, writes, task_id, task_path)
        self._ack_writes(config, writes, task_id)

    async def aput_writes(
        self, config: Any, writes: Sequence[Any], task_id: str, task_path: str = ""
    ) -> None:
        with self.timed("aput_writes", config):
            await super().aput_writes(config, writes, task_id, task_path)
        self._ack_writes(config, writes, task_id)

    def get_tuple(self, config: Any) -> CheckpointTuple | None:
        with self.timed("get_tuple", config):
            return super().get_tuple(config)

    async def aget_tuple(self, config: Any) -> CheckpointTuple | None:
        with self.timed("aget_tuple", config):
            return await super().aget_tuple(config)


# -- checks --------------------------------------------------------------------------


def acked_missing(
    saver: ContextEngineSaver,
    acked: Sequence[tuple[str, str, str]],
    unreadable: list[tuple[str, str, str]] | None = None,
) -> list[tuple[str, str, str]]:
    """Acknowledged checkpoints `saver` cannot read back. With `unreadable`, a
    read that raises is collected there (else it propagates)."""
    missing = []
    for t, ns, cid in dict.fromkeys(acked):
        try:
            found = saver.get_tuple(cfg(t, cid, ns))
        except Exception:
            if unreadable is None:
                raise
            unreadable.append((t, ns, cid))
            continue
        if found is None:
            missing.append((t, ns, cid))
    return missing


def check_history(
    saver: ContextEngineSaver,
    thread: str,
    spec: GraphSpec,
    done: Sequence[str],
    *,
    complete: bool = True,
) -> list[CheckpointTuple]:
    """Assert that every checkpoint of `thread` is whole: readable by id with the
    same values, its parent readable, its `log` a prefix of the completed log
    `done`, its `marks` naming the same nodes; with `complete`, also that the
    latest holds all of `done`. Returns the history, newest first."""
    history = list(saver.list(cfg(thread)))
    assert history or not complete, f"{thread}: no checkpoint"
    ids = {t.checkpoint["id"] for t in history}
    for tup in history:
        cid = tup.checkpoint["id"]
        again = saver.get_tuple(cfg(thread, cid))
        assert again is not None, f"{thread}/{cid}: listed but not readable"
        assert again.checkpoint == tup.checkpoint, f"{thread}/{cid}: reads differ"
        values = tup.checkpoint["channel_values"]
        log, marks = values.get("log", []), values.get("marks", [])
        assert log == list(done[: len(log)]), f"{thread}/{cid}: log {log}"
        names = [m.partition("@")[0] for m in marks]
        assert sorted(names) == sorted(x.partition(":")[0] for x in log), (
            f"{thread}/{cid}: marks {marks} do not match log {log}"
        )
        if tup.parent_config is not None:
            parent = tup.parent_config["configurable"]["checkpoint_id"]
            assert parent in ids, f"{thread}/{cid}: parent {parent} missing"
    if complete:
        latest = history[0].checkpoint["channel_values"]
        assert latest.get("log") == list(done), f"{thread}: ended with {latest}"
    return history


# -- child processes -----------------------------------------------------------------


class Child:
    """A `python -m tests.faults.graph_child ...` process; it prints READY when its
    saver is connected, then JSON lines."""

    def __init__(
        self, *args: str, env: Mapping[str, str] | None = None, gated: bool = False
    ) -> None:
        command = [sys.executable, "-m", "tests.faults.graph_child", *args]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.PIPE if gated else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the child prints READY (its saver is connected)."""
        self.wait_for("READY", timeout)

    def wait_for(self, token: str, timeout: float = 60.0) -> None:
        """Block until the child prints a line `token`."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.process.stdout], [], [], min(left, 1.0))[0]:
                continue
            line = self.process.stdout.readline()
            if line.strip() == token:
                return
            if not line:
                break
        self.kill()
        raise AssertionError(f"child never printed {token}:\n{self.stderr()}")

    def go(self) -> None:
        """Let a `gated` child start its work (it waits for a line on stdin)."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)

    def finish(self, timeout: float) -> str:
        """Wait for a clean exit; its remaining stdout."""
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"child did not finish in {timeout}s") from None
        assert self.process.returncode == 0, f"child failed:\n{err}"
        return out

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(running)"
        assert self.process.stderr is not None
        return self.process.stderr.read()


# -- the event-loop ticker -----------------------------------------------------------


class Ticker:
    """An asyncio task that wakes every `interval` seconds and keeps the longest
    gap between two wake-ups: how long the loop was kept from running it."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.max_gap = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last - self.interval)
            self.ticks += 1
            last = now

    def start(self) -> Ticker:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


# -- ClickHouse ----------------------------------------------------------------------


def archive_settings_for(host: str, port: int, **options: Any) -> ArchiveSettings:
    """Archive settings on `host:port`, in a fresh database unless one is given."""
    options.setdefault("database", f"f{uuid.uuid4().hex[:12]}")
    options.setdefault("flush_interval", 0.05)
    return ArchiveSettings(host=host, port=port, **options)


def clickhouse_client(settings: ArchiveSettings) -> Any:
    """A sync clickhouse-connect client on the archive's database."""
    import clickhouse_connect

    return clickhouse_connect.get_client(
        host=settings.host,
        port=settings.port,
        username=settings.user,
        password=settings.password,
        database=settings.database,
        autogenerate_session_id=False,
        compress=False,
    )
