"""One (saver, workload) run, in its own process so peak RSS is per saver:
`python -m benchmarks.peers.worker REQUEST.json RESULT.json`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import sys
import time
import traceback
from typing import Any

from benchmarks.peers.savers import BY_KEY, Context, new_tmpdir
from benchmarks.peers.servers import Endpoints, reset
from benchmarks.peers.workloads import WORKLOADS, CheckFailed


def run_request(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the request's workloads in order, each on a fresh saver."""
    return [
        _run_one(request, workload, repeats) for workload, repeats in request["runs"]
    ]


def _run_one(request: dict[str, Any], name: str, repeats: int) -> dict[str, Any]:
    """Run one workload; failures become an `error` entry, never an exception."""
    spec = BY_KEY[request["saver"]]
    context = dict(request["context"])
    admin = context.pop("postgres_admin", None)
    endpoints = Endpoints(context["redis"], context["redis_stack"], admin)
    ctx = Context(**context, tmpdir=new_tmpdir())
    workload = WORKLOADS[name]
    started = time.perf_counter()
    try:
        for kind in spec.servers:
            reset(kind, endpoints)
        result = asyncio.run(workload(spec, ctx, request["params"], repeats))
        outcome: dict[str, Any] = dataclasses.asdict(result)
    except CheckFailed as error:
        outcome = {"error": f"check failed: {error}"}
    except Exception as error:
        outcome = {"error": f"{type(error).__name__}: {error}"[:500]}
        outcome["traceback"] = traceback.format_exc()[-3000:]
    finally:
        shutil.rmtree(ctx.tmpdir, ignore_errors=True)
    outcome["seconds"] = time.perf_counter() - started
    return outcome


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    with open(sys.argv[1]) as source:
        request = json.load(source)
    outcome = run_request(request)
    with open(sys.argv[2], "w") as sink:
        json.dump(outcome, sink)


if __name__ == "__main__":
    main()
