"""`replica_acks` and `replica_acks_timeout` are validated before anything
connects or is written: a bad value, or acknowledgements no store could give
(memory store, custom store, a fallback to memory), is `InvalidConfigError`."""

from __future__ import annotations

from typing import Any

import pytest

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, InvalidConfigError
from aiecs_checkpoint.stores.memory.checkpoints import MemoryStore

URL = "redis://127.0.0.1:1/0"
"""Never contacted: validation happens before any connection."""


@pytest.mark.parametrize("value", [-1, True, 1.0, "1", None])
def test_a_replica_acks_that_is_not_an_int_of_at_least_0_is_refused(
    value: Any,
) -> None:
    with pytest.raises(InvalidConfigError, match="replica_acks must be an int >= 0"):
        ContextEngine(redis_url=URL, replica_acks=value)


@pytest.mark.parametrize("value", [0, -0.5, float("inf"), float("nan"), "1", True])
def test_a_replica_acks_timeout_that_is_not_positive_seconds_is_refused(
    value: Any,
) -> None:
    with pytest.raises(InvalidConfigError, match="replica_acks_timeout"):
        ContextEngine(redis_url=URL, replica_acks=1, replica_acks_timeout=value)


def test_replica_acks_on_the_memory_store_are_refused() -> None:
    with pytest.raises(InvalidConfigError, match="memory store"):
        ContextEngine(replica_acks=1)
    with pytest.raises(InvalidConfigError, match="memory store"):
        ContextEngineSaver(ContextEngine(replica_acks=2))


def test_replica_acks_on_a_custom_store_are_refused() -> None:
    with pytest.raises(InvalidConfigError, match="custom store"):
        ContextEngine(store=MemoryStore(), replica_acks=1)


def test_replica_acks_with_a_fallback_to_memory_are_refused() -> None:
    with pytest.raises(InvalidConfigError, match="fallback"):
        ContextEngine(redis_url=URL, replica_acks=1, fallback=True)


def test_replica_acks_pass_through_from_conn_string_and_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(InvalidConfigError, match="replica_acks"):
        ContextEngineSaver.from_conn_string(URL, replica_acks=-1)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_HOST", raising=False)
    with pytest.raises(InvalidConfigError, match="memory store"):
        ContextEngine.from_env(replica_acks=1)
    ContextEngineSaver.from_conn_string(URL, replica_acks=1, replica_acks_timeout=0.5)


def test_the_default_is_no_replica_acks_on_every_store() -> None:
    ContextEngine()
    ContextEngine(redis_url=URL, fallback=True)
    ContextEngine(replica_acks=0, replica_acks_timeout=2)
