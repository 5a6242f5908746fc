"""The application-wide ContextEngine (the original's infrastructure helpers).

`initialize_context_engine()` installs one engine per process. Calling it again
returns that engine when nothing asked for is different; asking for other
options, or passing another engine, raises `InvalidConfigError` instead of
quietly handing back an engine configured otherwise (call
`close_context_engine()` first to replace it). When two calls race, one
engine wins; an engine the caller passed in is never closed by this module,
only one it built itself.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from aiecs_checkpoint.engine.engine import ContextEngine
from aiecs_checkpoint.errors import InvalidConfigError

_engine: ContextEngine | None = None
_options: dict[str, Any] = {}
_lock = threading.Lock()


def _check_same(
    current: ContextEngine,
    options: Mapping[str, Any],
    engine: ContextEngine | None,
) -> ContextEngine:
    """The installed engine, if the call asks for nothing else."""
    if engine is not None and engine is not current:
        raise InvalidConfigError(
            "initialize_context_engine(engine) was given a different engine than "
            "the one already installed; call close_context_engine() first"
        )
    if options and dict(options) != _options:
        raise InvalidConfigError(
            f"the context engine is already initialized with options {_options!r}, "
            f"not {dict(options)!r}; call close_context_engine() first"
        )
    return current


async def initialize_context_engine(
    engine: ContextEngine | None = None, **options: Any
) -> ContextEngine:
    """Create (from the environment, or `options`) and start the shared engine.

    Raises like `ContextEngine.initialize()` when Redis is configured and
    unreachable (and no engine is installed then), and `InvalidConfigError`
    when an engine with other options (or another engine) is installed.
    """
    global _engine, _options
    if engine is not None and options:
        raise InvalidConfigError("pass either an engine or options, not both")
    with _lock:
        current = _engine
    if current is not None:
        return _check_same(current, options, engine)
    candidate = engine if engine is not None else ContextEngine.from_env(**options)
    await candidate.initialize()
    with _lock:
        if _engine is None:
            _engine, _options = candidate, dict(options)
            return candidate
        winner = _engine
    if engine is None:
        await candidate.close()
    return _check_same(winner, options, engine)


def get_context_engine() -> ContextEngine | None:
    """The shared engine, or None before `initialize_context_engine()`."""
    return _engine


async def close_context_engine() -> None:
    """Close and forget the shared engine (safe to call when none is running)."""
    global _engine, _options
    with _lock:
        engine, _engine, _options = _engine, None, {}
    if engine is not None:
        await engine.close()
