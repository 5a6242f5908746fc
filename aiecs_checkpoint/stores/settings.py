"""Store options every backend reads the same way (pure parsing, no I/O).

`ttl` is accepted, validated and honoured alike by the memory and the Redis
store: `{"default_ttl": minutes, "refresh_on_read": bool}`; off by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiecs_checkpoint.errors import InvalidConfigError


def parse_ttl(ttl: Mapping[str, Any] | None) -> tuple[int, bool]:
    """`{"default_ttl": minutes, "refresh_on_read": bool}` -> (ms, refresh);
    (0, refresh) when no TTL. `InvalidConfigError` naming a bad option."""
    if ttl is None:
        return 0, False
    if not isinstance(ttl, Mapping):
        raise InvalidConfigError(f"ttl must be a mapping, got {ttl!r}")
    unknown = set(ttl) - {"default_ttl", "refresh_on_read"}
    if unknown:
        raise InvalidConfigError(f"unknown ttl option(s): {sorted(unknown, key=str)}")
    refresh = ttl.get("refresh_on_read", False)
    if not isinstance(refresh, bool):
        raise InvalidConfigError(
            f"ttl['refresh_on_read'] must be a bool, got {refresh!r}"
        )
    minutes = ttl.get("default_ttl")
    if minutes is None:
        return 0, refresh
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
        raise InvalidConfigError(f"ttl['default_ttl'] must be minutes, got {minutes!r}")
    if not 0 < minutes < float("inf"):
        raise InvalidConfigError(
            f"ttl['default_ttl'] must be > 0 and finite, got {minutes!r}"
        )
    return max(1, round(minutes * 60_000)), refresh


__all__ = ["parse_ttl"]
