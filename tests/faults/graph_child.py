"""Child process of the fault tests: graph runs another process can kill.

`python -m tests.faults.graph_child crash --url URL --prefix P --threads N ...`
connects a saver, prints READY, then runs (or resumes) threads t0..tN-1 of the
fault graph to completion, one after the other, and prints DONE. The parent
kills it with SIGKILL at a random moment and starts another one, which resumes.

With `--hold-put-step N` (durability "async"), the put of thread t0's step-N
checkpoint waits, once a task's writes for that checkpoint are stored, and the
child prints WINDOW: killed then, the writes are stored and their checkpoint
is not. With `--hold-writes-node NAME`, the round trip of that node's
put_writes stalls (redis-py's `evalsha` waits, as a slow network would) until a
checkpoint holding the node's output is stored, then the child prints WINDOW:
killed then, the output is stored and the task's writes (with its records)
are not.

`python -m tests.faults.graph_child concurrency --url URL --prefix P ...`
prints READY, waits for a line on stdin (so every process starts together),
then writes its own threads from OS threads and asyncio tasks while reading a
shared thread, and prints one JSON line with what it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from tests.faults._support import (
    ArchiveSettings,
    GraphSpec,
    aresume_to_completion,
    build_graph,
    cfg,
    resume_to_completion,
)


def _engine(args: argparse.Namespace) -> ContextEngine:
    archive = None
    if args.archive:
        host, port, database = args.archive.split(":")
        archive = ArchiveSettings(
            host=host,
            port=int(port),
            database=database,
            flush_interval=args.flush_interval,
            batch_size=50,
        )
    return ContextEngine(redis_url=args.url, key_prefix=args.prefix, archive=archive)


class HoldingSaver(ContextEngineSaver):
    """Holds one store call of thread t0 (see the module docstring). Nothing of
    the package is changed: the public methods wait and print, and the stalled
    round trip is redis-py's."""

    def __init__(
        self, engine: ContextEngine, hold_step: int | None, hold_node: str | None
    ) -> None:
        super().__init__(engine)
        self.hold_step, self.hold_node = hold_step, hold_node
        self.written: set[str] = set()
        self.cond = threading.Condition()
        self.output_stored = False
        self.stalled = threading.local()
        if hold_node:
            self._stall_evalsha()

    def _stall_evalsha(self) -> None:
        import redis

        evalsha = redis.Redis.evalsha
        saver = self

        def stalled(client: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(saver.stalled, "on", False):
                with saver.cond:
                    saver.cond.wait_for(lambda: saver.output_stored, 30)
                saver._window()
            return evalsha(client, *args, **kwargs)

        redis.Redis.evalsha = stalled  # type: ignore[method-assign]

    @staticmethod
    def _t0(config: Any) -> bool:
        return bool(config["configurable"]["thread_id"] == "t0")

    def _window(self) -> None:
        print("WINDOW", flush=True)
        time.sleep(120)  # killed here

    def put(self, config: Any, checkpoint: Any, metadata: Any, versions: Any) -> Any:
        if self._t0(config) and metadata.get("step") == self.hold_step:
            with self.cond:
                self.cond.wait_for(lambda: checkpoint["id"] in self.written, 30)
            self._window()
        stored = super().put(config, checkpoint, metadata, versions)
        log = checkpoint["channel_values"].get("log", [])
        if self._t0(config) and self.hold_node in log:
            with self.cond:
                self.output_stored = True
                self.cond.notify_all()
        return stored

    def put_writes(
        self, config: Any, writes: Sequence[Any], task_id: str, task_path: str = ""
    ) -> None:
        self.stalled.on = self._t0(config) and ("log", [self.hold_node]) in writes
        try:
            super().put_writes(config, writes, task_id, task_path)
        finally:
            self.stalled.on = False
        with self.cond:
            self.written.add(config["configurable"]["checkpoint_id"])
            self.cond.notify_all()


def crash(args: argparse.Namespace) -> None:
    spec = GraphSpec(steps=args.steps)
    threads = [f"t{i}" for i in range(args.threads)]
    if args.hold_put_step is not None or args.hold_writes_node:
        saver = HoldingSaver(_engine(args), args.hold_put_step, args.hold_writes_node)
        with saver:
            graph = build_graph(saver, spec, args.attempt)
            print("READY", flush=True)
            resume_to_completion(graph, "t0", durability="async")
    elif args.mode == "sync":
        with ContextEngineSaver(_engine(args)) as saver:
            graph = build_graph(saver, spec, args.attempt)
            print("READY", flush=True)
            for thread in threads:
                resume_to_completion(graph, thread, durability=args.durability)
    else:

        async def main() -> None:
            async with ContextEngineSaver(_engine(args)) as saver:
                graph = build_graph(saver, spec, args.attempt)
                print("READY", flush=True)
                for thread in threads:
                    await aresume_to_completion(
                        graph, thread, durability=args.durability
                    )

        asyncio.run(main())
    print("DONE", flush=True)


def _log_length(tup: Any) -> int:
    return len(tup.checkpoint["channel_values"].get("log", []))


def concurrency(args: argparse.Namespace) -> None:
    spec = GraphSpec(steps=args.steps)
    seen_sync: list[int] = []
    seen_async: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    async def main() -> None:
        async with ContextEngineSaver(_engine(args)) as saver:
            graph = build_graph(saver, spec, args.tag)
            print("READY", flush=True)
            sys.stdin.readline()

            def write_sync(thread: str) -> None:
                for _ in range(args.invokes):
                    graph.invoke({"log": [], "marks": []}, cfg(thread))

            async def write_async(thread: str) -> None:
                for _ in range(args.invokes):
                    await graph.ainvoke({"log": [], "marks": []}, cfg(thread))

            def read_sync() -> None:
                while not stop.is_set():
                    tup = saver.get_tuple(cfg(args.shared))
                    if tup is not None:
                        seen_sync.append(_log_length(tup))
                    time.sleep(0.002)

            async def read_async() -> None:
                while not stop.is_set():
                    tup = await saver.aget_tuple(cfg(args.shared))
                    if tup is not None:
                        seen_async.append(_log_length(tup))
                    await asyncio.sleep(0.002)

            names = [f"{args.tag}-w{i}" for i in range(args.writers)]
            readers = [asyncio.create_task(read_async())]
            reader_threads = [threading.Thread(target=read_sync)]
            for t in reader_threads:
                t.start()
            try:
                await asyncio.gather(
                    *(
                        asyncio.to_thread(write_sync, n)
                        if i % 2 == 0
                        else write_async(n)
                        for i, n in enumerate(names)
                    )
                )
            except Exception as exc:
                errors.append(repr(exc))
            stop.set()
            await asyncio.gather(*readers)
            for t in reader_threads:
                t.join()

    started = time.monotonic()
    asyncio.run(main())
    result: dict[str, Any] = {
        "reads": len(seen_sync) + len(seen_async),
        "monotonic": all(
            a <= b
            for seen in (seen_sync, seen_async)
            for a, b in itertools.pairwise(seen)
        ),
        "errors": errors,
        "seconds": time.monotonic() - started,
    }
    print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("crash", "concurrency"):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True)
        p.add_argument("--prefix", required=True)
        p.add_argument("--archive", default="", help="host:port:database")
        p.add_argument("--flush-interval", type=float, default=0.02)
        p.add_argument("--steps", type=int, default=5)
    p = sub.choices["crash"]
    p.add_argument("--threads", type=int, default=10)
    p.add_argument("--attempt", required=True)
    p.add_argument("--mode", choices=("sync", "async"), default="sync")
    p.add_argument("--durability", choices=("sync", "async"), default="async")
    p.add_argument("--hold-put-step", type=int, default=None)
    p.add_argument("--hold-writes-node", default="")
    p = sub.choices["concurrency"]
    p.add_argument("--tag", required=True)
    p.add_argument("--shared", required=True)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--invokes", type=int, default=5)
    args = parser.parse_args(argv)
    crash(args) if args.command == "crash" else concurrency(args)


if __name__ == "__main__":
    main()
