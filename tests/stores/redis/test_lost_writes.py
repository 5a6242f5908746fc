"""A server that lost writes it had acknowledged (a failover to a lagging
replica, a restart from an older snapshot) is simulated by cutting the tail off
a thread's element log with a plain client (issue 13 §1-2). Puts that would
point past the log store the list whole instead; a read of a list pointing past
the log raises `CorruptDataError`, never a raw error or a wrong list."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import ContextEngineSaver
from aiecs_checkpoint.errors import CorruptDataError
from aiecs_checkpoint.stores.encoding import enc
from tests.conftest import REDIS_INSTALLED, redis_url

pytestmark = pytest.mark.skipif(
    not REDIS_INSTALLED and not os.environ.get("CI"),
    reason="redis-server not installed (apt-get install redis-server redis-tools)",
)

THREAD = "lost"


@pytest.fixture
def prefix() -> str:
    return f"lw{uuid.uuid4().hex[:8]}"


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url())
    yield client
    client.close()


def _put(saver: ContextEngineSaver, items: list[str], parent: Any) -> Any:
    checkpoint = empty_checkpoint()
    version = f"{len(items):032}.0"
    checkpoint["channel_values"] = {"items": items}
    checkpoint["channel_versions"] = {"items": version}
    config = parent or {"configurable": {"thread_id": THREAD, "checkpoint_ns": ""}}
    return saver.put(config, checkpoint, {"step": len(items)}, {"items": version})


def _logs(raw: redis.Redis, prefix: str) -> dict[bytes, int]:
    pattern = f"{prefix}:{{{enc(THREAD)}}}:log:*"
    return {k: int(raw.llen(k)) for k in raw.scan_iter(match=pattern)}


def _lose_tail(raw: redis.Redis, prefix: str, keep: int) -> None:
    """Keep only the first `keep` elements of the thread's (one) element log."""
    (log,) = _logs(raw, prefix)
    raw.ltrim(log, 0, keep - 1)


def _latest(saver: ContextEngineSaver) -> list[str]:
    tup = saver.get_tuple({"configurable": {"thread_id": THREAD}})
    assert tup is not None
    return list(tup.checkpoint["channel_values"]["items"])


def test_a_put_reusing_positions_the_log_lost_stores_the_whole_list(
    prefix: str, raw: redis.Redis
) -> None:
    items = [f"item-{i}" for i in range(8)]
    with ContextEngineSaver.from_conn_string(redis_url(), key_prefix=prefix) as saver:
        parent = _put(saver, items[:5], None)
        _lose_tail(raw, prefix, keep=2)
        _put(saver, items, parent)  # the cache would reuse positions 0-4
        assert _latest(saver) == items
        assert sorted(_logs(raw, prefix).values()) == [2, 8]  # a fresh log, whole
    with ContextEngineSaver.from_conn_string(redis_url(), key_prefix=prefix) as fresh:
        assert _latest(fresh) == items


def test_a_list_pointing_past_its_log_raises_corrupt_data_error(
    prefix: str, raw: redis.Redis
) -> None:
    with ContextEngineSaver.from_conn_string(redis_url(), key_prefix=prefix) as saver:
        _put(saver, [f"item-{i}" for i in range(5)], None)
    _lose_tail(raw, prefix, keep=2)
    with ContextEngineSaver.from_conn_string(redis_url(), key_prefix=prefix) as fresh:
        with pytest.raises(CorruptDataError, match="lost writes"):
            fresh.get_tuple({"configurable": {"thread_id": THREAD}})
        with pytest.raises(CorruptDataError, match="lost writes"):
            list(fresh.list({"configurable": {"thread_id": THREAD}}))


def test_elements_a_reader_kept_at_positions_the_log_hands_out_again_are_dropped(
    prefix: str, raw: redis.Redis
) -> None:
    """The reader kept positions 0-4; the log lost 2-4 and a put of a new list
    gets them again: a later read must not serve the old elements from cache."""
    fresh = [f"new-{i}" for i in range(3)]
    with ContextEngineSaver.from_conn_string(redis_url(), key_prefix=prefix) as saver:
        parent = _put(saver, [f"item-{i}" for i in range(5)], None)
        assert len(_latest(saver)) == 5  # kept, decoded, by this process
        _lose_tail(raw, prefix, keep=2)
        _put(saver, fresh, parent)  # no reuse: appended at positions 2-4
        assert _latest(saver) == fresh
