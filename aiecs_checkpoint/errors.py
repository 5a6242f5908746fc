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


class InvalidArgumentError(AiecsCheckpointError, TypeError):
    """An argument has the wrong type: for example a `str` where a sequence of
    ids is expected (it would be iterated one character at a time)."""


class SerializationError(AiecsCheckpointError, TypeError):
    """A value could not be serialized; nothing was stored."""


class CorruptDataError(AiecsCheckpointError, ValueError):
    """A stored value could not be decrypted or decoded (tampered, written with
    another key or serializer, or not encrypted while encryption is on); the
    message says which value and why."""


class BlockedTypeError(CorruptDataError):
    """A stored value names a type outside the deserialization allowlist; the
    message names the type and how to allow it. Nothing of it was imported."""


class StoreError(AiecsCheckpointError, ConnectionError):
    """The storage backend failed; the message names the server, never a password."""


class TrackingError(AiecsCheckpointError, RuntimeError):
    """A tracking helper was called outside a graph node run by ContextEngineSaver.

    Set `AIECS_TRACKING=optional` (or use `optional_tracking()`) to make the
    helpers do nothing there instead, so node code runs under any checkpointer.
    """


class InvalidRecordError(AiecsCheckpointError, ValueError):
    """A record or model got a malformed field: a tracking helper (empty name,
    negative token count), a session, message or TaskContext (a bad type,
    an unknown conversation-session type, too few participants)."""


__all__ = [
    "AiecsCheckpointError",
    "BlockedTypeError",
    "CorruptDataError",
    "InvalidArgumentError",
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
