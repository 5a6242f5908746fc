"""The socket timeouts of the Redis clients the engine builds (issue 13 §1):
validated options, applied to every client built from a URL, never to a
client the user passed. The bound itself is proven against a frozen server by
`tests/faults/test_redis_crash.py`."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from aiecs_checkpoint import ContextEngine, InvalidConfigError
from aiecs_checkpoint.stores.redis.client import RedisSettings, call_bound
from tests.conftest import REDIS_INSTALLED

pytestmark = pytest.mark.skipif(not REDIS_INSTALLED, reason="needs redis-server")

URL = "redis://127.0.0.1:6399/0"


def _kwargs(engine: ContextEngine) -> dict[str, Any]:
    client = engine._redis.client  # built lazily, without connecting
    return dict(client.connection_pool.connection_kwargs)


def test_clients_built_from_a_url_get_the_default_timeouts_and_retry_nothing() -> None:
    kwargs = _kwargs(ContextEngine(redis_url=URL))
    assert kwargs["socket_timeout"] == 1.5
    assert kwargs["socket_connect_timeout"] == 0.5
    assert kwargs["retry"].get_retries() == 0


def test_the_timeout_options_and_the_urls_query_reach_the_client() -> None:
    kwargs = _kwargs(
        ContextEngine(redis_url=URL, socket_timeout=0.7, socket_connect_timeout=0.2)
    )
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.7, 0.2)
    engine = ContextEngine(redis_url=URL + "?socket_timeout=0.9")
    assert _kwargs(engine)["socket_timeout"] == 0.9
    assert engine._redis.settings.socket_timeout_s == 0.9


def test_the_default_bound_is_within_ten_seconds() -> None:
    assert call_bound(RedisSettings()) == pytest.approx(4 * 2.0 + 1.05)


@pytest.mark.parametrize(
    "options",
    [
        {"socket_timeout": 0},
        {"socket_timeout": -1},
        {"socket_timeout": float("inf")},
        {"socket_timeout": True},
        {"socket_timeout": "1"},
        {"socket_connect_timeout": 0},
        {"replica_acks": 1, "replica_acks_timeout": 2.0, "socket_timeout": 2.0},
    ],
)
def test_bad_timeouts_raise_invalid_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfigError):
        ContextEngine(redis_url=URL, **options)


def test_a_timeout_set_in_the_url_and_as_an_option_is_refused() -> None:
    with pytest.raises(InvalidConfigError, match="set it once"):
        ContextEngine(redis_url=URL + "?socket_timeout=1", socket_timeout=1)
    with pytest.raises(InvalidConfigError, match="socket_timeout in redis_url"):
        ContextEngine(redis_url=URL + "?socket_timeout=0")


def test_replica_acks_raise_the_default_reply_timeout_above_the_wait() -> None:
    engine = ContextEngine(redis_url=URL, replica_acks=1, replica_acks_timeout=3)
    assert _kwargs(engine)["socket_timeout"] == 3.5


def test_a_client_the_user_passes_keeps_its_own_timeouts() -> None:
    mine = redis.Redis.from_url(URL, socket_timeout=7)
    engine = ContextEngine(redis_client=mine)
    assert engine._redis.client is mine
    assert mine.connection_pool.connection_kwargs["socket_timeout"] == 7
    with pytest.raises(InvalidConfigError, match="keep their own"):
        ContextEngine(redis_client=mine, socket_timeout=1)
