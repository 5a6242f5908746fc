"""Redis Cluster failover (issue 13, section 2).

A cluster of 3 masters with one replica each (6 `redis-server` processes). A
master is killed with SIGKILL under 30 graph runs; once its replica has taken
over, every run resumes to completion.

Replication is asynchronous: what a master acknowledged and had not yet sent
to its replica is gone after the failover. The scenario makes that window
visible by freezing the replica for a moment before the kill (as a slow or
briefly partitioned replica would be). `replica_acks=N` (`WAIT` for N replicas
before `put` / `put_writes` return) closes it; the default leaves it open, and
`benchmarks/failover_loss.py` measures it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiecs_checkpoint import StoreError
from tests.conftest import REDIS_INSTALLED
from tests.faults._support import CALL_BOUND_S, seeded
from tests.faults.scenarios import failover_trial
from tests.servers import RedisCluster

pytestmark = [
    pytest.mark.skipif(not REDIS_INSTALLED, reason="needs redis-server"),
    pytest.mark.slow,
]

LAG_S = 0.5
"""How long the replica is frozen before its master is killed."""


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(replicas=1) as c:
        yield c


async def test_after_a_failover_with_the_replica_in_sync_every_run_resumes_whole(
    cluster: RedisCluster,
) -> None:
    """Default settings, replica in sync when its master dies: every store call
    ended within the bound, every run resumes to completion on the promoted
    replica and every checkpoint then visible is whole; every failing call
    raised `StoreError` (redis-py's asyncio "'NoneType' object has no
    attribute 'writelines'" race included)."""
    result = await failover_trial(cluster, seeded("failover-in-sync"))
    assert result.slowest_call_s <= CALL_BOUND_S
    assert result.checked == 30
    print(
        f"in sync: {len(result.lost)} of {result.acked} acknowledged checkpoints "
        f"lost; failover {result.failover_s:.1f}s; slowest call "
        f"{result.slowest_call_s:.1f}s; {len(result.failed_runs)} runs failed"
    )
    failures = [*result.errors, *result.failed_runs.values()]
    untyped = [e for e in failures if not isinstance(e, StoreError)]
    assert not untyped, untyped


async def test_the_default_loss_window_in_a_failover_is_measured_and_calls_are_bounded(
    cluster: RedisCluster,
) -> None:
    """Default settings: what a failover loses of the acknowledged checkpoints
    is counted and printed (the default promises nothing about it; see
    `benchmarks/failover_loss.py` for numbers over many trials). Every store
    call still ended within the bound."""
    result = await failover_trial(
        cluster, seeded("failover-default"), lag_s=LAG_S, check=False
    )
    assert result.slowest_call_s <= CALL_BOUND_S
    print(
        f"default: {len(result.lost)} of {result.acked} acknowledged checkpoints "
        f"lost, window {result.window_s * 1000:.0f} ms; failover "
        f"{result.failover_s:.1f}s; {len(result.failed_runs)} runs failed, "
        f"{len(result.resume_failures)} could not resume, "
        f"{len(result.unreadable)} checkpoints unreadable"
    )


ORPHAN_REASON = (
    "a run that outlives the loss puts its next checkpoint with the parent id "
    "LangGraph holds in memory; when the failover lost that parent, the "
    "checkpoint is stored anyway and the history has an orphan (parent "
    "missing). Lists are whole: with the parent check of `check_history` "
    "skipped, this test passes"
)


@pytest.mark.xfail(strict=True, reason=ORPHAN_REASON)
async def test_after_a_failover_that_lost_acknowledged_writes_runs_resume_whole(
    cluster: RedisCluster,
) -> None:
    """Default settings: every run resumes to completion on the promoted
    replica, every checkpoint then visible is whole, and every failing call
    raised `StoreError`."""
    result = await failover_trial(cluster, seeded("failover-whole"), lag_s=LAG_S)
    untyped = [e for e in result.errors if not isinstance(e, StoreError)]
    assert not untyped, untyped
    assert all(isinstance(e, StoreError) for e in result.failed_runs.values())
    assert result.checked == 30


async def test_with_replica_acks_no_acknowledged_checkpoint_is_lost_in_a_failover(
    cluster: RedisCluster,
) -> None:
    """`replica_acks=1`: put and put_writes return only once a replica holds
    the write (else `StoreError`), so the failover loses nothing acknowledged,
    even with the replica lagging when its master dies."""
    result = await failover_trial(
        cluster,
        seeded("failover-acks"),
        lag_s=LAG_S,
        engine_options={"replica_acks": 1},
    )
    assert not result.lost, f"{len(result.lost)} acknowledged checkpoints lost"
    assert all(isinstance(e, StoreError) for e in result.errors)
    assert result.slowest_call_s <= CALL_BOUND_S
