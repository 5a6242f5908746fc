"""Lookup cost against thread length: latest checkpoint and checkpoint by id.

Builds threads of 10, 1,000 and 10,000 checkpoints on ContextEngineSaver (memory
store) and on InMemorySaver in the same process, then prints the median
microseconds of `get_tuple` (latest, and by the id of a middle checkpoint) and
the 10,000/10 ratio per saver. Ours should stay ~1x; InMemorySaver's latest
lookup scans the thread.

    python benchmarks/lookup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiecs_checkpoint import ContextEngineSaver

SIZES = (10, 1_000, 10_000)


def build(saver: BaseCheckpointSaver[Any], thread: str, n: int) -> str:
    """A thread of n checkpoints; returns the id of the middle one."""
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    middle = ""
    for i in range(n):
        cp = empty_checkpoint()
        version = f"{i + 1:032}.0"
        cp["channel_values"] = {"step": i}
        cp["channel_versions"] = {"step": version}
        config = saver.put(config, cp, {"source": "loop", "step": i}, {"step": version})
        if i == n // 2:
            middle = config["configurable"]["checkpoint_id"]
    return middle


def median_us(saver: BaseCheckpointSaver[Any], config: Any, repeat: int) -> float:
    """Median microseconds of one `get_tuple(config)` (after one warm-up call)."""
    assert saver.get_tuple(config) is not None
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        saver.get_tuple(config)
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    savers: dict[str, BaseCheckpointSaver[Any]] = {
        "ours(memory)": ContextEngineSaver(),
        "InMemorySaver": InMemorySaver(),
    }
    print(f"median of {args.repeat} get_tuple calls, microseconds")
    print(f"{'saver':<14} {'checkpoints':>11} {'latest us':>10} {'by id us':>10}")
    ratios: dict[str, tuple[float, float]] = {}
    for name, saver in savers.items():
        results = {}
        for n in SIZES:
            thread = f"{name}-{n}"
            middle = build(saver, thread, n)
            latest = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
            by_id = {
                "configurable": {**latest["configurable"], "checkpoint_id": middle}
            }
            results[n] = (
                median_us(saver, latest, args.repeat),
                median_us(saver, by_id, args.repeat),
            )
            print(f"{name:<14} {n:>11} {results[n][0]:>10.1f} {results[n][1]:>10.1f}")
        lo, hi = results[SIZES[0]], results[SIZES[-1]]
        ratios[name] = (hi[0] / lo[0], hi[1] / lo[1])
    print()
    print(f"{'ratio 10k/10':<14} {'latest':>11} {'by id':>10}")
    for name, (latest_ratio, by_id_ratio) in ratios.items():
        print(f"{name:<14} {latest_ratio:>10.1f}x {by_id_ratio:>9.1f}x")


if __name__ == "__main__":
    main()
