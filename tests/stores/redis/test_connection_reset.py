"""redis-py's asyncio race where a connection is reset by another task mid-send
(issue 13 §2, seen in Cluster failovers) counts as a lost connection; no other
AttributeError does (issue 12 #14: programming errors are never wrapped)."""

from __future__ import annotations

import pytest
import redis.asyncio.connection as aconnection

from aiecs_checkpoint.stores.redis.client import _connection_reset


async def _reset_mid_send() -> AttributeError:
    """The very error redis-py raises: its connection's writer is gone."""
    conn = aconnection.Connection()
    conn._writer = None
    try:
        await conn._send_packed_command([b"PING\r\n"])
    except AttributeError as exc:
        return exc
    raise AssertionError("redis-py sent on a connection without a writer")


async def test_redis_pys_reset_connection_error_is_a_lost_connection() -> None:
    exc = await _reset_mid_send()
    assert "writelines" in str(exc)
    assert _connection_reset(exc)


def test_an_attribute_error_of_other_code_is_not_wrapped() -> None:
    writer = None
    with pytest.raises(AttributeError) as info:
        writer.writelines([b"x"])  # type: ignore[attr-defined]
    assert not _connection_reset(info.value)
    with pytest.raises(AttributeError) as other:
        _ = object().writelines  # type: ignore[attr-defined]
    assert not _connection_reset(other.value)
