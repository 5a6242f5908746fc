"""The portable export format: exact round trips of store-level threads, and a
typed error (never another exception) for anything malformed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langgraph.types import Command

from aiecs_checkpoint import ContextEngineSaver, InvalidExportError
from aiecs_checkpoint.cli import storage
from aiecs_checkpoint.stores import portable
from aiecs_checkpoint.stores import thread_model as model
from tests.cli import graphs
from tests.saver.test_graphs import build_delta_graph, counted
from tests.saver.test_rewrites import latest_msgs, put_list


def through_json(thread_id: str, thread: model.Thread) -> tuple[str, model.Thread]:
    line = json.loads(json.dumps(portable.thread_line(thread_id, thread)))
    parsed = portable.parse_line(line, 2)
    assert not isinstance(parsed, int)
    return parsed


@pytest.fixture(scope="module")
def populated() -> ContextEngineSaver:
    """Threads with list logs, interrupts, tracking records and a frozen delta
    base (a DeltaChannel thread pruned to its latest checkpoint)."""
    saver = ContextEngineSaver()
    graphs.populate(saver)
    delta = build_delta_graph().compile(checkpointer=saver)
    delta.invoke({"n": 0, "stop": 10}, graphs.config("delta"))
    delta.invoke({"stop": 11}, graphs.config("delta"))
    saver.prune(["delta"], strategy="keep_latest")
    return saver


def test_every_stored_thread_round_trips_exactly(populated: ContextEngineSaver) -> None:
    engine = populated.engine
    seen_base = seen_list = seen_record = seen_interrupt = False
    for thread_id in ["approval", "delta", *graphs.TICKETS]:
        thread = engine.run(engine.checkpoints.export_thread(thread_id))
        assert thread
        assert through_json(thread_id, thread) == (thread_id, thread)
        for ns in thread.values():
            seen_base |= any(r.delta_base for r in ns.rows.values())
            seen_list |= bool(ns.logs)
            writes = [w for by in ns.writes.values() for w in by.values()]
            seen_record |= any(w.channel == "__aiecs_record__" for w in writes)
            seen_interrupt |= any(w.channel == "__interrupt__" for w in writes)
    assert seen_base and seen_list and seen_record and seen_interrupt


def test_an_imported_thread_reads_and_resumes_like_the_original(
    populated: ContextEngineSaver,
) -> None:
    target = ContextEngineSaver()
    for thread_id in ("approval", "delta"):
        _, thread = through_json(
            thread_id,
            populated.engine.run(populated.engine.checkpoints.export_thread(thread_id)),
        )
        target.engine.run(target.engine.checkpoints.import_thread(thread_id, thread))
    assert graphs.history(target, "approval") == graphs.history(populated, "approval")
    delta = build_delta_graph().compile(checkpointer=target)
    assert delta.get_state(graphs.config("delta")).values == counted(11)
    assert delta.invoke({"stop": 12}, graphs.config("delta")) == counted(12)
    final = graphs.build(target).invoke(
        Command(resume="yes"), graphs.config("approval")
    )
    assert final["log"] == ["agent", "answer yes", "done"]


def test_the_header_names_the_format_and_unknown_versions_are_refused() -> None:
    head = portable.header("test")
    assert portable.check_header(json.loads(json.dumps(head)))["version"] == 1
    with pytest.raises(InvalidExportError, match="not an aiecs-checkpoint-export"):
        portable.check_header({"format": "something-else", "version": 1})
    with pytest.raises(InvalidExportError, match="version 2 is not supported"):
        portable.check_header({**head, "version": 2})
    assert portable.parse_line(portable.end_line(3), 9) == 3
    with pytest.raises(InvalidExportError, match="unknown line kind"):
        portable.parse_line({"kind": "threads"}, 2)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def _replaced(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = _replaced(node[path[0]], path[1:], value)
    return copy


@pytest.mark.parametrize("thread_id", ["delta", "approval"])
def test_any_malformed_field_raises_the_typed_error(
    populated: ContextEngineSaver, thread_id: str
) -> None:
    thread = populated.engine.run(populated.engine.checkpoints.export_thread(thread_id))
    line = json.loads(json.dumps(portable.thread_line(thread_id, thread)))
    checked = 0
    for path in _paths(line):
        for junk in (None, -1, "x", [], {}, ["a"], [1, 2]):
            try:
                portable.parse_line(_replaced(line, path, junk), 2)
            except InvalidExportError as exc:
                assert str(exc).startswith("line 2"), exc
            checked += 1
    assert checked > 500


def test_list_values_must_point_into_their_element_logs(
    populated: ContextEngineSaver,
) -> None:
    thread = populated.engine.run(
        populated.engine.checkpoints.export_thread("approval")
    )
    line = json.loads(json.dumps(portable.thread_line("approval", thread)))
    ns = line["namespaces"][0]
    with pytest.raises(InvalidExportError, match="no element log"):
        portable.parse_line(_replaced(line, ("namespaces", 0, "logs"), []), 2)
    log = ns["logs"][0]
    short = {**log, "items": log["items"][:1]}
    with pytest.raises(InvalidExportError, match="beyond the element log"):
        portable.parse_line(_replaced(line, ("namespaces", 0, "logs", 0), short), 2)


async def test_importing_an_old_export_over_its_thread_never_reads_stale_elements(
    saver: ContextEngineSaver,
) -> None:
    """An export restored over the thread it came from, after the thread grew:
    a reader that cached the longer history must read what was written since."""
    thread_id = f"restored-{uuid.uuid4()}"
    reader = ContextEngineSaver(saver.engine)
    await put_list(saver, thread_id, ["a"], 0)
    await put_list(saver, thread_id, ["b"], 1)
    backup = through_json(
        thread_id, saver.engine.run(saver.engine.checkpoints.export_thread(thread_id))
    )[1]
    await put_list(saver, thread_id, ["c"], 2)
    assert await latest_msgs(reader, thread_id) == ["a", "b", "c"]

    await saver.adelete_thread(thread_id)
    await asyncio.to_thread(storage.import_thread, saver, thread_id, backup)
    await put_list(saver, thread_id, ["d"], 3)

    assert await latest_msgs(reader, thread_id) == ["a", "b", "d"]
    assert await latest_msgs(saver, thread_id) == ["a", "b", "d"]
