"""Typed errors raised by aiecs_checkpoint.

Every error derives from `AiecsCheckpointError`, and each also derives from the
built-in exception a caller would naturally catch (`ValueError`, `TypeError`,
`ConnectionError`, `RuntimeError`), so existing handlers keep working.
"""

from __future__ import annotations


class AiecsCheckpointError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidConfigError(AiecsCheckpointError, ValueError):
    """A RunnableConfig, option or environment variable is missing or malformed."""


class InvalidThreadIdError(InvalidConfigError):
    """A thread id is missing, empty or not a string."""


class InvalidNamespaceError(InvalidConfigError):
    """A checkpoint namespace is not a string."""


class InvalidCursorError(InvalidConfigError):
    """A `before` cursor of `list_threads` was not made by `list_threads`."""


class InvalidExportError(InvalidConfigError):
    """An export file is malformed, truncated, or of an unknown format or version."""


class InvalidPruneStrategyError(InvalidConfigError):
    """`prune` was called with a strategy other than keep_latest or delete."""


class SerializationError(AiecsCheckpointError, TypeError):
    """A value could not be serialized; nothing was stored."""


class StoreError(AiecsCheckpointError, ConnectionError):
    """The storage backend failed; the message names the server, never a password."""


class TrackingError(AiecsCheckpointError, RuntimeError):
    """A tracking helper was called outside a graph node run by ContextEngineSaver.

    Set `AIECS_TRACKING=optional` (or use `optional_tracking()`) to make the
    helpers do nothing there instead, so node code runs under any checkpointer.
    """


class InvalidRecordError(AiecsCheckpointError, ValueError):
    """A tracking helper got a malformed field (empty name, negative token count)."""


__all__ = [
    "AiecsCheckpointError",
    "InvalidConfigError",
    "InvalidCursorError",
    "InvalidExportError",
    "InvalidNamespaceError",
    "InvalidPruneStrategyError",
    "InvalidRecordError",
    "InvalidThreadIdError",
    "SerializationError",
    "StoreError",
    "TrackingError",
]
