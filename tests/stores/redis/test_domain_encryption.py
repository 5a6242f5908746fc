"""Under encryption no user id reaches Redis in clear: neither in key names
(the user's session index is named by a keyed digest) nor in values (the
session hash keeps it encrypted). Without encryption the layout is unchanged.

Runs on the session's standalone Redis and Redis Cluster.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from redis.cluster import RedisCluster

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, InvalidConfigError
from tests.conftest import REDIS_INSTALLED, cluster_url, engine_for, redis_url

pytestmark = pytest.mark.skipif(
    not REDIS_INSTALLED and not os.environ.get("CI"),
    reason="redis-server not installed (apt-get install redis-server redis-tools)",
)

USER = "alice@example.com"
SECRETS = (b"alice", b"alice%40example.com")


def aes(key: bytes = b"k" * 16) -> EncryptedSerializer:
    return EncryptedSerializer.from_pycryptodome_aes(key=key)


@pytest.fixture(params=["redis", "cluster"])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def raw(store: str) -> Iterator[Any]:
    client: Any = (
        RedisCluster.from_url(cluster_url())
        if store == "cluster"
        else redis.Redis.from_url(redis_url())
    )
    yield client
    client.close()


def everything(client: Any, prefix: str) -> dict[bytes, list[bytes]]:
    """Every key of the prefix with every byte string stored in it."""
    scan = (
        client.scan_iter(match=f"{prefix}:*", target_nodes="all")
        if isinstance(client, RedisCluster)
        else client.scan_iter(match=f"{prefix}:*")
    )
    out: dict[bytes, list[bytes]] = {}
    for key in scan:
        kind = client.type(key).decode()
        if kind == "string":
            out[key] = [client.get(key)]
        elif kind == "hash":
            out[key] = [x for kv in client.hgetall(key).items() for x in kv]
        elif kind == "zset":
            out[key] = client.zrange(key, 0, -1)
        elif kind == "set":
            out[key] = list(client.smembers(key))
        elif kind == "list":
            out[key] = client.lrange(key, 0, -1)
    return out


def in_clear(stored: dict[bytes, list[bytes]]) -> list[bytes]:
    """Keys whose name or content shows the user id."""
    return [
        key
        for key, values in stored.items()
        if any(s in blob for s in SECRETS for blob in [key, *values])
    ]


async def sessions_of_alice(engine: ContextEngine) -> tuple[Any, Any]:
    await engine.initialize()
    await engine.create_session("s1", USER, {"plan": "pro"})
    await engine.create_session("s2", USER)
    await engine.create_session("s3", "bob")
    await engine.update_session("s1", {"status": "completed"}, increment_requests=True)
    mine = await engine.list_sessions(user_id=USER)
    one = await engine.get_session("s2")
    return mine, one


def test_user_ids_stay_out_of_key_names_and_values_under_encryption(
    store: str, raw: Any
) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}"
    engine = engine_for(store, key_prefix=prefix, serde=aes())
    mine, one = asyncio.run(sessions_of_alice(engine))
    assert sorted(s.session_id for s in mine) == ["s1", "s2"]
    assert one is not None and one.user_id == USER
    stored = everything(raw, prefix)
    assert in_clear(stored) == []
    assert not any(b":sessions:u:" in key for key in stored)
    # another process with the same key finds alice's sessions
    again = engine_for(store, key_prefix=prefix, serde=aes())
    mine, _ = asyncio.run(sessions_of_alice(again))
    assert sorted(s.session_id for s in mine) == ["s1", "s2"]
    # deleting the sessions empties alice's index
    for sid in ("s1", "s2", "s3"):
        assert asyncio.run(engine.delete_session(sid))
    assert [k for k in everything(raw, prefix) if b":sessions:uh:" in k] == []


def test_a_tracked_sessions_user_stays_encrypted(store: str, raw: Any) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}"
    serde = aes()
    engine = engine_for(store, key_prefix=prefix, serde=serde)
    with ContextEngineSaver(engine, serde=serde, track_sessions=True) as saver:
        config = {
            "configurable": {"thread_id": "t1", "checkpoint_ns": "", "user_id": USER}
        }
        cp = empty_checkpoint()
        cp["channel_values"] = {"step": 0}
        cp["channel_versions"] = {"step": "1"}
        saver.put(config, cp, {"source": "loop", "step": 0}, {"step": "1"})
    session = asyncio.run(engine.get_session("t1"))
    assert session is not None and session.user_id == USER
    assert [s.session_id for s in asyncio.run(engine.list_sessions(user_id=USER))] == [
        "t1"
    ]
    assert in_clear(everything(raw, prefix)) == []


def test_without_encryption_the_layout_keeps_user_ids_in_clear(
    store: str, raw: Any
) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}"
    engine = engine_for(store, key_prefix=prefix)
    mine, one = asyncio.run(sessions_of_alice(engine))
    assert sorted(s.session_id for s in mine) == ["s1", "s2"]
    assert one is not None and one.user_id == USER
    stored = everything(raw, prefix)
    assert f"{prefix}:sessions:u:{{alice%40example.com}}".encode() in stored
    assert raw.hget(f"{prefix}:{{s1}}:sess", "u") == USER.encode()


def test_a_process_with_another_key_cannot_use_the_user_index(store: str) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}"
    asyncio.run(sessions_of_alice(engine_for(store, key_prefix=prefix, serde=aes())))
    other = engine_for(store, key_prefix=prefix, serde=aes(b"x" * 16))

    async def list_alice() -> Any:
        await other.initialize()
        return await other.list_sessions(user_id=USER)

    with pytest.raises(InvalidConfigError, match="encryption key"):
        asyncio.run(list_alice())
