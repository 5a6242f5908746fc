"""The application-wide ContextEngine (the original's infrastructure helpers)."""

from __future__ import annotations

import threading
from typing import Any

from aiecs_checkpoint.engine.engine import ContextEngine

_engine: ContextEngine | None = None
_lock = threading.Lock()


async def initialize_context_engine(
    engine: ContextEngine | None = None, **options: Any
) -> ContextEngine:
    """Create (from the environment, or `options`) and start the shared engine.

    Idempotent: a later or concurrent call gets the engine that won; a losing
    candidate is closed. Raises like `ContextEngine.initialize()` when Redis
    is configured and unreachable (and no engine is installed then).
    """
    global _engine
    if _engine is not None:
        return _engine
    candidate = engine if engine is not None else ContextEngine.from_env(**options)
    await candidate.initialize()
    with _lock:
        winner = _engine = _engine or candidate
    if winner is not candidate:
        await candidate.close()
    return winner


def get_context_engine() -> ContextEngine | None:
    """The shared engine, or None before `initialize_context_engine()`."""
    return _engine


async def close_context_engine() -> None:
    """Close and forget the shared engine (safe to call when none is running)."""
    global _engine
    with _lock:
        engine, _engine = _engine, None
    if engine is not None:
        await engine.close()
