"""Acknowledged checkpoints lost in a Redis Cluster failover (issue 13, section 2).

What is measured
----------------
Each trial starts a fresh cluster of 3 masters with one replica each, runs
``--runs`` graph runs at once (the fault tests' graph, sync and async, some
with ``interrupt()``), kills a master with SIGKILL once 120 checkpoints were
acknowledged, waits for its replica to take over, then counts the
acknowledged checkpoints (``put`` returned) that the cluster no longer has.
Two settings:

* ``healthy``: the replica is in sync when its master dies (it follows the
  replication stream on the same machine);
* ``lag``: the replica is cut off ``--lag`` seconds before the kill (frozen
  with SIGSTOP and its link dropped by the master), as a slow or partitioned
  replica would be.

Reported per setting: checkpoints lost per trial, acknowledged per trial, the
loss window (time from the oldest lost acknowledgement to the kill), the
failover time and the runs that failed. With the default ``replica_acks=0``
this is what a failover may cost; ``replica_acks=1`` (``WAIT``) is meant to
make it zero. Pass ``--replica-acks N`` to measure that once it exists.

Run: ``python benchmarks/failover_loss.py [--trials N] [--runs R] [--lag S]
[--replica-acks N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults._support import seeded  # noqa: E402
from tests.faults.scenarios import FailoverResult, failover_trial  # noqa: E402
from tests.servers import RedisCluster  # noqa: E402


async def trial(args: argparse.Namespace, lag: float, k: int) -> FailoverResult:
    options: dict[str, Any] = {}
    if args.replica_acks:
        options["replica_acks"] = args.replica_acks
    with RedisCluster(replicas=1) as cluster:
        return await failover_trial(
            cluster,
            seeded(f"failover-loss-{lag}-{k}"),
            runs=args.runs,
            lag_s=lag,
            engine_options=options,
            check=False,
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--lag", type=float, default=0.5)
    parser.add_argument("--replica-acks", type=int, default=0)
    args = parser.parse_args(argv)
    for name, lag in (("healthy", 0.0), ("lag", args.lag)):
        results = []
        for k in range(args.trials):
            r = asyncio.run(trial(args, lag, k))
            results.append(r)
            print(
                f"{name} trial {k + 1}: lost {len(r.lost)} of {r.acked} acknowledged, "
                f"window {r.window_s * 1000:.0f} ms, failover {r.failover_s:.1f}s, "
                f"{len(r.failed_runs)} runs failed, {len(r.unreadable)} checkpoints "
                f"unreadable, slowest call {r.slowest_call_s:.2f}s"
            )
        lost = [len(r.lost) for r in results]
        windows = [r.window_s * 1000 for r in results]
        print(
            f"== {name}: lost per trial {lost} (median {statistics.median(lost)}), "
            f"window max {max(windows):.0f} ms, failover median "
            f"{statistics.median(r.failover_s for r in results):.1f}s\n"
        )


if __name__ == "__main__":
    main()
