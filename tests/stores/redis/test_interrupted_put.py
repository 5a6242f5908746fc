"""A put cut short after any of its round trips (the process died) never
leaves a checkpoint that the thread listing misses.

On a Redis Cluster a put is several calls (the thread's script, and the
global indexes in other slots); the process may die between any two. The
engine's executor is replaced by one that performs the first k calls of the
put and then dies (a `BaseException`, as a SIGKILL would stop it), for every
k until the put completes.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from aiecs_checkpoint.stores.ops import Runner
from aiecs_checkpoint.stores.redis.client import Call
from tests.conftest import REDIS_INSTALLED, cluster_url, redis_url

pytestmark = pytest.mark.skipif(
    not REDIS_INSTALLED and not os.environ.get("CI"),
    reason="redis-server not installed (apt-get install redis-server redis-tools)",
)


class Died(BaseException):
    """The process stopped here."""


def checkpoint() -> tuple[Any, Any, Any]:
    cp = empty_checkpoint()
    cp["channel_values"] = {"messages": ["hello"]}
    cp["channel_versions"] = {"messages": f"{1:032}.0"}
    return cp, {"source": "loop", "step": 0}, {"messages": f"{1:032}.0"}


@pytest.mark.parametrize("store", ["redis", "cluster"])
def test_a_put_cut_short_after_any_call_leaves_no_unlisted_checkpoint(
    store: str,
) -> None:
    url = cluster_url() if store == "cluster" else redis_url()
    prefix = f"ip{uuid.uuid4().hex[:8]}"
    engine = ContextEngine(redis_url=url, key_prefix=prefix)
    engine.connect()
    execute = engine._redis.execute
    threads: list[str] = []
    for k in range(1, 10):
        performed = 0

        def dying(call: Call, k: int = k) -> Any:
            nonlocal performed
            if performed == k:
                raise Died
            performed += 1
            return execute(call)

        engine._runner = Runner({Call: dying})
        thread = f"t{k}"
        threads.append(thread)
        config: Any = {
            "configurable": {"thread_id": thread, "checkpoint_ns": "", "run_id": "r1"}
        }
        try:
            ContextEngineSaver(engine).put(config, *checkpoint())
        except Died:
            continue
        break
    else:
        raise AssertionError("the put never completed")
    engine.close_sync()
    with ContextEngineSaver(ContextEngine(redis_url=url, key_prefix=prefix)) as saver:
        stored = {
            t
            for t in threads
            if saver.get_tuple({"configurable": {"thread_id": t}}) is not None
        }
        listed = {info.thread_id for info in saver.list_threads(limit=100)}
        assert stored, "no put went through"
        assert stored <= listed, f"stored but not listed: {stored - listed}"
