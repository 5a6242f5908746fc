"""Argument checks of the saver's methods that take more than a config.

Each check raises a typed error before anything is read or written: a `str`
where a sequence of ids is expected, a `before` that names no checkpoint, a
`limit` that is not a count.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from aiecs_checkpoint.errors import InvalidArgumentError, InvalidConfigError

T = TypeVar("T")


def check_ids(ids: object, what: str, check: Callable[[object], T]) -> list[T]:
    """The ids of a sequence argument, each checked, before anything is written.

    A `str` (or bytes) is refused with `InvalidArgumentError`, a `TypeError`:
    iterating it would name one id per character (`prune("t1")` would delete
    threads "t" and "1"). So are mappings and anything not iterable.
    """
    if isinstance(ids, (str, bytes, bytearray, memoryview)):
        raise InvalidArgumentError(
            f"{what} must be a sequence of ids, got the {type(ids).__name__} "
            f"{ids!r}: wrap a single id in a list, e.g. [{ids!r}]"
        )
    if isinstance(ids, Mapping) or not isinstance(ids, Iterable):
        raise InvalidArgumentError(
            f"{what} must be a sequence of ids, got {type(ids).__name__} {ids!r}"
        )
    return [check(i) for i in ids]


def check_run_id(run_id: object) -> str:
    """A run id as the saver indexes it: a non-empty str or a UUID."""
    if isinstance(run_id, uuid.UUID):
        return str(run_id)
    if not isinstance(run_id, str):
        raise InvalidArgumentError(
            f"a run id must be a str or UUID, got {type(run_id).__name__} {run_id!r}"
        )
    if not run_id:
        raise InvalidConfigError("a run id must not be empty")
    return run_id


def check_list_args(
    filter: object, before: object, limit: object
) -> tuple[str | None, int | None]:
    """(checkpoint id `before` names, limit) of a `list` call.

    `filter` is None or a mapping of metadata keys (str); `before` None or the
    config of a checkpoint (as `list` and `put` return it); `limit` None or an
    int >= 0 (0 lists nothing). `InvalidConfigError` otherwise.
    """
    if filter is not None and (
        not isinstance(filter, Mapping) or not all(isinstance(k, str) for k in filter)
    ):
        raise InvalidConfigError(
            f"filter must be a dict of metadata key -> value, got {filter!r}"
        )
    before_id: str | None = None
    if before is not None:
        conf = before.get("configurable") if isinstance(before, Mapping) else None
        found = conf.get("checkpoint_id") if isinstance(conf, Mapping) else None
        if not isinstance(found, str) or not found:
            raise InvalidConfigError(
                "before must be the config of a checkpoint, "
                '{"configurable": {"checkpoint_id": "..."}} (as list and put '
                f"return it), got {before!r}"
            )
        before_id = found
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
    ):
        raise InvalidConfigError(f"limit must be None or an int >= 0, got {limit!r}")
    return before_id, limit


__all__ = ["check_ids", "check_list_args", "check_run_id"]
