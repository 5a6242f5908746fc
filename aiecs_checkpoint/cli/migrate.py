"""Copy threads out of another LangGraph saver (SQLite, Postgres, any saver).

Sources: `sqlite:PATH` or SQLAlchemy's `sqlite:///relative.db` /
`sqlite:////absolute.db` (`langgraph-checkpoint-sqlite`; opened read-only),
`postgresql://...` / `postgres://...` (`langgraph-checkpoint-postgres`), or
`module:attribute` naming a saver object (the official Redis saver, a saver
with a custom serde, ...). The SQLite and Postgres readers need the `migrate`
extra: `pip install 'aiecs-checkpoint[migrate]'`.

A thread is read through the source's public `list` (every namespace, newest
first) and written oldest first through the target saver's `put` and
`put_writes`, so ids, parents, metadata, channel values and pending writes
(interrupts included) come across, and the graph resumes where it stopped.
The sources' `CheckpointTuple`s do not carry a write's task path, so imported
writes have none (parallel tasks' writes then apply in task id order).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

from aiecs_checkpoint.cli.storage import load_object
from aiecs_checkpoint.errors import InvalidConfigError, StoreError

EXTRA = "pip install 'aiecs-checkpoint[migrate]'"


@contextmanager
def open_source(source: str) -> Iterator[BaseCheckpointSaver[Any]]:
    """The saver `source` names, opened for reading and closed afterwards."""
    if source.startswith("sqlite:"):
        with _sqlite(source) as saver:
            yield saver
    elif source.startswith(("postgresql://", "postgres://")):
        with _postgres(source) as saver:
            yield saver
    else:
        found = load_object(source, "--from")
        if callable(found) and not isinstance(found, BaseCheckpointSaver):
            found = found()
        if not isinstance(found, BaseCheckpointSaver):
            raise InvalidConfigError(
                f"--from {source!r} is a {type(found).__name__}, not a LangGraph "
                "checkpoint saver (use sqlite:///file.db, postgresql://... or "
                "module:attribute)"
            )
        yield found


@contextmanager
def _sqlite(source: str) -> Iterator[BaseCheckpointSaver[Any]]:
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError as exc:
        raise InvalidConfigError(f"reading SQLite needs the extra: {EXTRA}") from exc
    raw = source.removeprefix("sqlite:")
    path = raw[3:] if raw.startswith("///") else raw
    if not path or not Path(path).is_file():
        raise InvalidConfigError(
            f"--from {source!r}: no SQLite file at {path!r} (use sqlite:PATH, "
            "or sqlite:///relative.db and sqlite:////absolute.db as SQLAlchemy does)"
        )
    try:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open SQLite file {path!r}: {exc}") from exc
    with ExitStack() as stack:
        stack.callback(conn.close)
        yield SqliteSaver(conn)


@contextmanager
def _postgres(source: str) -> Iterator[BaseCheckpointSaver[Any]]:
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError as exc:
        raise InvalidConfigError(f"reading Postgres needs the extra: {EXTRA}") from exc
    try:
        with PostgresSaver.from_conn_string(source) as saver:
            yield saver
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            raise StoreError(f"Postgres failed: {_first_line(exc)}") from exc
        raise


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def source_threads(source: BaseCheckpointSaver[Any]) -> list[str]:
    """Every thread id the source holds, in first-seen order."""
    return list(
        dict.fromkeys(t.config["configurable"]["thread_id"] for t in source.list(None))
    )


def read_thread(
    source: BaseCheckpointSaver[Any], thread_id: str
) -> list[CheckpointTuple]:
    """The thread's checkpoints of every namespace, oldest first."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    found = list(source.list(config))
    return sorted(found, key=lambda t: t.config["configurable"]["checkpoint_id"])


def write_thread(
    target: BaseCheckpointSaver[Any], thread_id: str, tuples: list[CheckpointTuple]
) -> int:
    """Write `tuples` (oldest first) into `target`; returns how many."""
    by_id: dict[tuple[str, str], CheckpointTuple] = {}
    for tup in tuples:
        conf = tup.config["configurable"]
        ns = conf.get("checkpoint_ns", "")
        parent_id = ((tup.parent_config or {}).get("configurable") or {}).get(
            "checkpoint_id"
        )
        parent = by_id.get((ns, parent_id)) if parent_id else None
        versions = dict(tup.checkpoint["channel_versions"])
        if parent is not None:
            before = parent.checkpoint["channel_versions"]
            versions = {c: v for c, v in versions.items() if before.get(c) != v}
        put_config: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                **({"checkpoint_id": parent_id} if parent_id else {}),
            }
        }
        saved = target.put(put_config, tup.checkpoint, tup.metadata, versions)
        by_id[(ns, conf["checkpoint_id"])] = tup
        tasks: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in tup.pending_writes or ():
            tasks.setdefault(task_id, []).append((channel, value))
        for task_id, writes in tasks.items():
            target.put_writes(saved, writes, task_id)
    return len(tuples)
