"""Which saver the CLI opens, and the few store-level calls it makes.

Configuration, in order: `--saver module:attribute` (a saver the user's code
builds: custom serde, an embedded store populated in-process), `--url` (Redis),
else the library's environment (`REDIS_URL`, else `REDIS_HOST`/`REDIS_PORT`/
`REDIS_DB`/`REDIS_PASSWORD`; `CLICKHOUSE_ENABLED` + `CLICKHOUSE_*` for the
archive) as `ContextEngine.from_env()` reads it. With none of them there is
nothing to inspect: the embedded memory store lives inside one process.

The store-level calls (export / import a whole thread, its stored writes) go
through the small adapter functions at the end of this module, so the rest of
the CLI uses the saver's public API only.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from aiecs_checkpoint.engine import ContextEngine
from aiecs_checkpoint.engine.core import DEFAULT_PREFIX
from aiecs_checkpoint.engine.engine import redis_url_from_env
from aiecs_checkpoint.errors import InvalidConfigError
from aiecs_checkpoint.saver import ContextEngineSaver
from aiecs_checkpoint.stores import thread_model as model
from aiecs_checkpoint.stores.clickhouse.archive import ArchiveSettings
from aiecs_checkpoint.stores.records import WriteRow

NOTHING_CONFIGURED = (
    "no store configured: the embedded memory store lives inside one process, so "
    "there is nothing to inspect from here. Pass --url redis://host:6379/0, set "
    "REDIS_URL (or REDIS_HOST, ...) or CLICKHOUSE_ENABLED=true, or name your "
    "saver with --saver module:attribute"
)


def load_object(ref: str, what: str) -> Any:
    """The object `module:attribute` names (the current directory importable,
    as uvicorn does); `attribute` may be dotted."""
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        raise InvalidConfigError(f"{what} must look like module:attribute, got {ref!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidConfigError(
            f"{what} {ref!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as exc:
            raise InvalidConfigError(
                f"{what} {ref!r}: {module_name!r} has no attribute {attribute!r}"
            ) from exc
    return found


def open_saver(url: str | None, prefix: str | None, saver_ref: str | None) -> Any:
    """The configured `ContextEngineSaver` (not connected yet)."""
    if saver_ref is not None:
        if url is not None or prefix is not None:
            raise InvalidConfigError(
                "--saver names a ready saver: --url and --prefix do not apply to it"
            )
        found = load_object(saver_ref, "--saver")
        if callable(found) and not isinstance(found, ContextEngineSaver):
            found = found()
        if isinstance(found, ContextEngine):
            found = ContextEngineSaver(found)
        if not isinstance(found, ContextEngineSaver):
            raise InvalidConfigError(
                f"--saver {saver_ref!r} is a {type(found).__name__}, not a "
                "ContextEngineSaver or ContextEngine"
            )
        return found
    archive = ArchiveSettings.from_env()
    url = url or redis_url_from_env()
    if url is None and archive is None:
        raise InvalidConfigError(NOTHING_CONFIGURED)
    engine = ContextEngine(
        redis_url=url, key_prefix=prefix or DEFAULT_PREFIX, archive=archive
    )
    return ContextEngineSaver(engine)


# -- adapters: every store-level call the CLI makes ------------------------------


def export_thread(saver: ContextEngineSaver, thread_id: str) -> model.Thread:
    """The whole thread as the store holds it ({} when absent)."""
    engine = saver.engine
    return engine.run(engine.checkpoints.export_thread(thread_id))


def import_thread(
    saver: ContextEngineSaver, thread_id: str, thread: model.Thread
) -> None:
    """Replace the thread with `thread`, exactly as given but for the epochs
    of its element logs, which are new (`model.with_fresh_epochs`)."""
    engine = saver.engine
    fresh = model.with_fresh_epochs(thread, thread_id)
    engine.run(engine.checkpoints.import_thread(thread_id, fresh))


def thread_exists(saver: ContextEngineSaver, thread_id: str) -> bool:
    """Whether the thread has a checkpoint in any namespace (nothing decoded,
    so it works without the serializer's key)."""
    engine = saver.engine
    listing = engine.iterate(engine.checkpoints.list(thread_id, None, None))
    return next(listing, None) is not None


def stored_writes(
    saver: ContextEngineSaver, thread_id: str, checkpoint_ns: str, checkpoint_id: str
) -> tuple[WriteRow, ...]:
    """A checkpoint's pending writes with their task paths (which `get_tuple`
    leaves out), serialized values untouched."""
    engine = saver.engine
    op = engine.checkpoints.get(thread_id, checkpoint_ns, checkpoint_id)
    stored = engine.run(op)
    return () if stored is None else stored.writes
