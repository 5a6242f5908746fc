"""How much memory one saver's caches hold: RSS growth while reading many threads.

What is measured
----------------
``--threads`` (default 1,200) threads each hold one message of ``--kib``
(default 200) KiB. They are written by one saver, then read once each
(``aget_tuple``) by a second, fresh saver on the same Redis, the way a worker
reads the threads it resumes. The script reports that reader's RSS growth
(VmRSS, after a garbage collection) and what its cache accounts for
(``cache_bytes`` budget, default 64 MiB). Without a byte budget the reader
would keep every decoded message: about 1,200 x 200 KiB = 234 MiB. The target
is at most 96 MB of growth with the default budget. Each read is checked to
return the message exactly.

A redis-server is started on a free loopback port (``redis-server`` on PATH)
unless ``--redis-url`` names one.

Run: ``python benchmarks/cache_memory.py [--threads N] [--kib K]
[--cache-bytes B] [--redis-url URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from aiecs_checkpoint.saver.cache import DEFAULT_CACHE_BYTES


def rss_bytes() -> int:
    """This process's resident set size (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """The given URL, or a redis-server started on a free port for the run."""
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: pass --redis-url")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="cache-memory-")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", workdir]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


async def write(url: str, prefix: str, threads: int, kib: int) -> None:
    engine = ContextEngine(redis_url=url, key_prefix=prefix)
    async with ContextEngineSaver(engine) as writer:
        for t in range(threads):
            text = f"thread {t} " + "x" * (kib * 1024)
            cp = empty_checkpoint()
            cp["id"] = str(uuid6())
            cp["channel_values"] = {"messages": [HumanMessage(text, id=f"m{t}")]}
            cp["channel_versions"] = {"messages": "1"}
            config = {"configurable": {"thread_id": f"t{t}", "checkpoint_ns": ""}}
            metadata = {"source": "input", "step": -1}
            await writer.aput(config, cp, metadata, {"messages": "1"})


async def read(url: str, prefix: str, threads: int, kib: int, budget: int) -> None:
    engine = ContextEngine(redis_url=url, key_prefix=prefix)
    async with ContextEngineSaver(engine, cache_bytes=budget) as reader:
        gc.collect()
        before = rss_bytes()
        start = time.perf_counter()
        for t in range(threads):
            got = await reader.aget_tuple({"configurable": {"thread_id": f"t{t}"}})
            assert got is not None
            message = got.checkpoint["channel_values"]["messages"][0]
            assert message.content.startswith(f"thread {t} ")
            assert len(message.content) == len(f"thread {t} ") + kib * 1024
            del got, message
        elapsed = time.perf_counter() - start
        gc.collect()
        grown = rss_bytes() - before
        cache = reader._ctx.cache
    mib = 1024 * 1024
    print(f"threads {threads} x {kib} KiB, cache budget {budget / mib:.0f} MiB")
    print(f"reads: {threads / elapsed:.0f}/s")
    print(f"cache accounts for {cache.used / mib:.1f} MiB in {len(cache._lru)} entries")
    verdict = "met" if grown <= 96 * 1000 * 1000 else "NOT met"
    print(
        f"RSS growth of the reader: {grown / 1e6:.1f} MB [target <= 96 MB: {verdict}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1200)
    parser.add_argument("--kib", type=int, default=200)
    parser.add_argument("--cache-bytes", type=int, default=DEFAULT_CACHE_BYTES)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    prefix = f"mem{uuid.uuid4().hex[:8]}"
    with redis_server(args.redis_url) as url:
        asyncio.run(write(url, prefix, args.threads, args.kib))
        asyncio.run(read(url, prefix, args.threads, args.kib, args.cache_bytes))


if __name__ == "__main__":
    main()
