"""A stored message a task edits in place and writes back is stored as edited."""

from __future__ import annotations

import uuid
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

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


class _CountingSerde(JsonPlusSerializer):
    """Counts how often each `text` of a dict is serialized on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.dumped: list[str] = []

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if isinstance(obj, dict) and "text" in obj:
            self.dumped.append(obj["text"])
        return super().dumps_typed(obj)


def _rounds(edit: bool) -> tuple[ContextEngineSaver, list[Any], list[str]]:
    """Three rounds of a caller's own list: put, read, write its newest element
    back (edited in place first when `edit`)."""
    serde = _CountingSerde()
    saver = ContextEngineSaver(serde=serde)
    config: Any = {"configurable": {"thread_id": "w", "checkpoint_ns": ""}}
    msgs: list[dict[str, str]] = []
    configs = []
    for i in range(3):
        msgs = [*msgs, {"text": f"m{i}"}]
        config = put(saver, config, {"msgs": msgs}, {"msgs": f"{i + 1:032}.0"})
        configs.append(config)
        msgs_of(saver, config)
        if edit:
            msgs[-1]["text"] += "-edited"
        saver.put_writes(config, [("msgs", [msgs[-1]])], f"task-{i}")
    return saver, configs, serde.dumped


def test_element_written_back_unchanged_is_not_stored_again() -> None:
    saver, configs, dumped = _rounds(edit=False)
    assert dumped == ["m0", "m1", "m2"]
    cold = ContextEngineSaver(saver.engine)
    assert msgs_of(cold, configs[-1]) == [
        {"text": "m0"},
        {"text": "m1"},
        {"text": "m2"},
    ]


def test_element_edited_in_place_and_written_back_is_stored_again() -> None:
    saver, configs, dumped = _rounds(edit=True)
    assert dumped == ["m0", "m0-edited", "m1", "m1-edited", "m2"]
    cold = ContextEngineSaver(saver.engine)
    assert msgs_of(cold, configs[0]) == [{"text": "m0"}]
    assert msgs_of(cold, configs[-1]) == [
        {"text": "m0-edited"},
        {"text": "m1-edited"},
        {"text": "m2"},
    ]


def _edit_written_back_and_grow(
    saver: ContextEngineSaver, msgs: list[dict[str, str]], edited: list[Any]
) -> tuple[Any, list[dict[str, str]]]:
    """Put `msgs`; edit `edited` (objects of it) in place and write them back
    as a task; put the list grown by one. That put's config and the list."""
    config: Any = {
        "configurable": {"thread_id": f"w-{uuid.uuid4()}", "checkpoint_ns": ""}
    }
    config = put(saver, config, {"msgs": msgs}, {"msgs": f"{1:032}.0"})
    for m in edited:
        m["text"] += "-edited"
    saver.put_writes(config, [("msgs", edited)], "task-edit")
    msgs = [*msgs, {"text": "next"}]
    return put(saver, config, {"msgs": msgs}, {"msgs": f"{2:032}.0"}), msgs


def test_many_elements_edited_in_place_and_written_back_are_all_stored_again(
    sync_saver: ContextEngineSaver,
) -> None:
    # more marks than the few looked up one by one (saver.cache.FEW_MARKS), and
    # one object standing twice in the list: every edited position is stored
    shared = {"text": "shared"}
    msgs = [shared, *({"text": f"m{i}"} for i in range(20)), shared]
    config, msgs = _edit_written_back_and_grow(sync_saver, msgs, msgs[::2])
    expected = [dict(m) for m in msgs]
    assert sum(m["text"].endswith("-edited") for m in expected) == 12  # shared twice
    assert msgs_of(ContextEngineSaver(sync_saver.engine), config) == expected
    assert msgs_of(sync_saver, config) == expected


def test_one_element_edited_among_few_marks_is_stored_again_at_every_copy(
    sync_saver: ContextEngineSaver,
) -> None:
    twice = {"text": "twice"}
    msgs = [twice, {"text": "a"}, twice, {"text": "b"}]
    config, _ = _edit_written_back_and_grow(sync_saver, msgs, [twice])
    expected = [
        {"text": "twice-edited"},
        {"text": "a"},
        {"text": "twice-edited"},
        {"text": "b"},
        {"text": "next"},
    ]
    assert msgs_of(ContextEngineSaver(sync_saver.engine), config) == expected
