"""A stored message a task edits in place and writes back is stored as edited."""

from __future__ import annotations

import uuid
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint

from aiecs_checkpoint import ContextEngineSaver


def put(
    saver: ContextEngineSaver,
    parent: Any,
    values: dict[str, Any],
    versions: dict[str, str],
) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    new = {k: v for k, v in versions.items() if k in values}
    return saver.put(parent, cp, {"source": "loop"}, new)


def msgs_of(saver: ContextEngineSaver, config: Any) -> Any:
    tup = saver.get_tuple(config)
    assert tup is not None
    return tup.checkpoint["channel_values"].get("msgs")


def test_edit_is_stored_even_when_the_list_changes_only_checkpoints_later(
    sync_saver: ContextEngineSaver,
) -> None:
    saver = sync_saver
    root: Any = {
        "configurable": {"thread_id": f"e-{uuid.uuid4()}", "checkpoint_ns": ""}
    }
    v1, v2, v3 = (f"{i:032}.0" for i in (1, 2, 3))
    c1 = put(
        saver, root, {"msgs": [{"text": "original"}], "n": 0}, {"msgs": v1, "n": v1}
    )
    message = msgs_of(saver, c1)[0]
    message["text"] = "edited"
    saver.put_writes(c1, [("msgs", message)], "task-edit")
    c2 = put(saver, c1, {"n": 1}, {"msgs": v1, "n": v2})
    c3 = put(saver, c2, {"msgs": [message, {"text": "next"}]}, {"msgs": v3, "n": v2})
    cold = ContextEngineSaver(saver.engine)
    assert msgs_of(cold, c1) == [{"text": "original"}]
    assert msgs_of(cold, c3) == [{"text": "edited"}, {"text": "next"}]
    assert msgs_of(saver, c1) == [{"text": "original"}]
