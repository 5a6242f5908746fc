"""Hot-path latency while the ClickHouse archive is down (issue 13, section 4).

What is measured
----------------
``--runs`` graph runs at once (asyncio tasks on one loop), each invoking its
own thread ``--invokes`` times (the fault tests' graph: 6 chained nodes plus two
parallel ones, tracking records in every node), with the archive on:

* ``baseline``: ClickHouse up for the whole run;
* ``outage``: ClickHouse stopped once a quarter of all invokes have completed
  and started again once three quarters have (same workload otherwise).

For each configuration the script reports the median and p95 latency of one
``ainvoke`` over the whole run and over the outage window (the invokes that
completed between the stop and the start; the same invoke indices for the
baseline), the hot-path errors (must be 0), the archive's counters and the
time ``flush()`` then needs to deliver the backlog. The two configurations
alternate ``--repeat`` times; the ratio outage / baseline is computed within
each repeat and its median reported. The requirement is ratio <= 1.2.

The ClickHouse front (``tests/chfront.py``) runs on the same cores as the
benchmark, and its restart (a Python process importing chdb) happens inside
the outage run, so both are part of what is measured. Nothing is asserted.

Run: ``python benchmarks/archive_outage.py [--runs N] [--invokes K]
[--repeat R] [--redis-url URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiecs_checkpoint import ContextEngine, ContextEngineSaver  # noqa: E402
from tests.faults._support import (  # noqa: E402
    GraphSpec,
    archive_settings_for,
    build_graph,
    cfg,
)
from tests.servers_clickhouse import ClickHouseServer  # noqa: E402

SPEC = GraphSpec(steps=6)


@dataclass
class Result:
    label: str
    latencies: list[tuple[int, float]] = field(default_factory=list)
    errors: int = 0
    window: tuple[int, int] = (0, 0)
    archive: dict[str, Any] = field(default_factory=dict)
    flush_s: float = 0.0

    def median(self, only_window: bool = False) -> float:
        return statistics.median(self._pick(only_window))

    def p95(self, only_window: bool = False) -> float:
        values = sorted(self._pick(only_window))
        return values[min(len(values) - 1, int(len(values) * 0.95))]

    def _pick(self, only_window: bool) -> list[float]:
        low, high = self.window
        return [s for i, s in self.latencies if not only_window or low <= i < high] or [
            0.0
        ]


async def workload(
    front: ClickHouseServer, args: argparse.Namespace, outage: bool
) -> Result:
    settings = archive_settings_for(front.host, front.port)
    options: dict[str, Any] = {"archive": settings}
    if args.redis_url:
        options.update(redis_url=args.redis_url, key_prefix=f"b{uuid.uuid4().hex[:8]}")
    engine = ContextEngine(**options)
    result = Result("outage" if outage else "baseline")
    total = args.runs * args.invokes
    result.window = (total // 4, 3 * total // 4)
    completed = 0
    async with ContextEngineSaver(engine) as saver:
        graph = build_graph(saver, SPEC, "bench")
        archive = engine.archive
        assert archive is not None
        await graph.ainvoke({"log": [], "marks": []}, cfg("warm-up"))
        await asyncio.to_thread(archive.flush, 30)

        async def one(i: int) -> None:
            nonlocal completed
            for _ in range(args.invokes):
                started = time.perf_counter()
                try:
                    await graph.ainvoke({"log": [], "marks": []}, cfg(f"r{i}"))
                except Exception:
                    result.errors += 1
                result.latencies.append((completed, time.perf_counter() - started))
                completed += 1

        async def control() -> None:
            if not outage:
                return
            while completed < result.window[0]:
                await asyncio.sleep(0.001)
            await asyncio.to_thread(front.stop)
            while completed < result.window[1]:
                await asyncio.sleep(0.001)
            await asyncio.to_thread(front.start)

        await asyncio.gather(control(), *(one(i) for i in range(args.runs)))
        if not front.is_running:
            front.start()
        began = time.perf_counter()
        await asyncio.to_thread(archive.flush, 120)
        result.flush_s = time.perf_counter() - began
        result.archive = archive.metrics()
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--invokes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args(argv)
    front = ClickHouseServer().start()
    ratios: list[tuple[float, float, float, float]] = []
    try:
        for r in range(args.repeat):
            base = asyncio.run(workload(front, args, outage=False))
            down = asyncio.run(workload(front, args, outage=True))
            for res in (base, down):
                a = res.archive
                print(
                    f"repeat {r + 1} {res.label:8}: median {res.median() * 1000:6.1f} "
                    f"ms, p95 {res.p95() * 1000:6.1f} ms; window median "
                    f"{res.median(True) * 1000:6.1f} ms, p95 "
                    f"{res.p95(True) * 1000:6.1f} ms; errors {res.errors}; "
                    f"enqueued {a['enqueued']} written {a['written']} dropped "
                    f"{a['dropped']} retried {a['retried']}; flush {res.flush_s:.2f}s"
                )
            ratios.append(
                (
                    down.median() / base.median(),
                    down.p95() / base.p95(),
                    down.median(True) / base.median(True),
                    down.p95(True) / base.p95(True),
                )
            )
    finally:
        front.close()
    names = ("median", "p95", "window median", "window p95")
    store = "redis" if args.redis_url else "memory"
    print(
        f"\noutage / baseline ({store} hot store, {args.runs} runs x "
        f"{args.invokes} invokes, median of {args.repeat} repeats):"
    )
    for k, name in enumerate(names):
        print(f"  {name:14}: {statistics.median(r[k] for r in ratios):.2f}x")


if __name__ == "__main__":
    main()
