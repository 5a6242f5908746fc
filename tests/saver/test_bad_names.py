"""Task ids, task paths and channel names every store can keep, and a typed
error for the ones none can: a lone surrogate (not valid Unicode text) or a
non-str name raises `InvalidConfigError` before anything is written, on every
store; any other text (`:`, `{}`, NUL, empty, emoji) makes a round trip."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import ContextEngineSaver, InvalidConfigError

LONE = "\ud800"


def cfg(cid: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": "t", "checkpoint_ns": ""}
    if cid is not None:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def checkpoint(channel: Any) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = {channel: 1}
    cp["channel_versions"] = {channel: "1"}
    return cp


@pytest.mark.parametrize("bad", [LONE, "a" + LONE, 7])
def test_bad_task_id_or_write_channel_is_refused_before_writing(
    sync_saver: ContextEngineSaver, bad: Any
) -> None:
    stored = sync_saver.put(cfg(), checkpoint("v"), {}, {"v": "1"})
    with pytest.raises(InvalidConfigError, match="task_id"):
        sync_saver.put_writes(stored, [("v", 2)], bad)
    with pytest.raises(InvalidConfigError, match="task_path"):
        sync_saver.put_writes(stored, [("v", 2)], "task", bad)
    with pytest.raises(InvalidConfigError, match="channel"):
        sync_saver.put_writes(stored, [("v", 2), (bad, 3)], "task")
    got = sync_saver.get_tuple(stored)
    assert got is not None and got.pending_writes == []


@pytest.mark.parametrize("bad", [LONE, "x" + LONE])
def test_bad_channel_name_in_put_is_refused_before_writing(
    sync_saver: ContextEngineSaver, bad: str
) -> None:
    with pytest.raises(InvalidConfigError, match="channel"):
        sync_saver.put(cfg(), checkpoint(bad), {}, {bad: "1"})
    assert sync_saver.get_tuple(cfg()) is None


@pytest.mark.parametrize("name", ["", ":", "{x}", "a\0b", "🙂", "*?["])
def test_awkward_task_ids_and_channel_names_round_trip(
    sync_saver: ContextEngineSaver, name: str
) -> None:
    stored = sync_saver.put(cfg(), checkpoint(name), {}, {name: "1"})
    sync_saver.put_writes(stored, [(name, 2)], name)
    got = sync_saver.get_tuple(stored)
    assert got is not None
    assert got.checkpoint["channel_values"] == {name: 1}
    assert got.pending_writes == [(name, name, 2)]
