"""What a filtered `list_threads` page costs as the number of threads grows.

What is measured
----------------
For each size (default 400 and 4,000 threads) a fresh saver holds that many
threads of one checkpoint each, with ``user_id`` spread over 100 users. The
script reports the median time (ms) of a 20-thread page for:

* ``no match``: a ``user_id`` nobody has (the thread index: the target is at
  most 2x from 400 to 4,000 threads);
* ``match``: one user's threads (4 at 400 threads, 40 at 4,000: a full page);
* ``unindexed``: a filter on ``source``, which has no index, so the page visits
  every thread, as every filter did before the index (the baseline);
* ``unfiltered``: the first page of all threads.

Stores: the embedded memory store and a standalone Redis (a redis-server is
started on a free loopback port unless ``--redis-url`` names one);
``--cluster-url`` adds a Redis Cluster. Each size is built in a fresh key
prefix; the first filtered listing (which loads scripts and, on Redis, marks
the index built) is not timed.

Run: ``python benchmarks/thread_index.py [--sizes 400,4000] [--repeat 101]
[--redis-url URL] [--cluster-url URL]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from benchmarks.cache_memory import redis_server

PAGE = 20
USERS = 100

CASES: dict[str, dict[str, Any] | None] = {
    "no match": {"user_id": "nobody"},
    "match": {"user_id": "u7"},
    "unindexed": {"source": "nobody"},
    "unfiltered": None,
}


def engine_for(store: str, url: str | None) -> ContextEngine:
    if store == "memory":
        return ContextEngine()
    prefix = f"bix{uuid.uuid4().hex[:8]}"
    return ContextEngine(redis_url=url, key_prefix=prefix)


def fill(saver: ContextEngineSaver, n: int) -> None:
    for i in range(n):
        config = {"configurable": {"thread_id": f"t{i:05d}", "checkpoint_ns": ""}}
        metadata = {"source": "input", "step": -1, "user_id": f"u{i % USERS}"}
        saver.put(config, empty_checkpoint(), metadata, {})  # type: ignore[arg-type]


def median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(store: str, url: str | None, n: int, repeat: int) -> dict[str, float]:
    with ContextEngineSaver(engine_for(store, url)) as saver:
        fill(saver, n)
        out: dict[str, float] = {}
        for name, filter in CASES.items():
            saver.list_threads(filter, limit=PAGE)  # warm up
            out[name] = median_ms(
                lambda f=filter: saver.list_threads(f, limit=PAGE), repeat
            )
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="400,4000")
    parser.add_argument("--repeat", type=int, default=101)
    parser.add_argument("--redis-url")
    parser.add_argument("--cluster-url")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with redis_server(args.redis_url) as url:
        stores: list[tuple[str, str | None]] = [("memory", None), ("redis", url)]
        if args.cluster_url:
            stores.append(("cluster", args.cluster_url))
        print(f"median ms of a {PAGE}-thread page ({args.repeat} runs)")
        header = "store    case        " + "".join(f"{n:>10}" for n in sizes)
        print(header + "   ratio")
        for store, store_url in stores:
            results = [measure(store, store_url, n, args.repeat) for n in sizes]
            for case in CASES:
                row = [r[case] for r in results]
                ratio = row[-1] / row[0] if row[0] else float("nan")
                cells = "".join(f"{v:>10.3f}" for v in row)
                print(f"{store:<8} {case:<11} {cells}   {ratio:5.2f}x")


if __name__ == "__main__":
    main()
