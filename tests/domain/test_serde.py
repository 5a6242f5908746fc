"""CheckedSerializer: the allowlist holds at every depth and under every inner
serializer, explicit opt-ins work, damaged values raise typed errors naming
where they were, and programming errors are never disguised."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ormsgpack
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from aiecs_checkpoint.domain.serde import CheckedSerializer, checked, load, unwrap
from aiecs_checkpoint.errors import BlockedTypeError, CorruptDataError


@dataclasses.dataclass
class Point:
    x: int


POINT = (Point.__module__, "Point")


def system_ext(marker: Path) -> ormsgpack.Ext:
    return ormsgpack.Ext(0, ormsgpack.packb(["os", "system", f"touch {marker}"]))


def test_a_blocked_type_nested_in_an_allowed_one_still_raises(tmp_path: Path) -> None:
    """LangGraph swallows a failure inside a nested value (it returns the raw
    payload); the refusal is still raised, and nothing ran."""
    marker = tmp_path / "ran"
    kwargs = {"content": "hi", "additional_kwargs": {"x": system_ext(marker)}}
    message = ormsgpack.Ext(
        5, ormsgpack.packb(["langchain_core.messages.human", "HumanMessage", kwargs])
    )
    for serde in (CheckedSerializer(), CheckedSerializer(JsonPlusSerializer())):
        with pytest.raises(BlockedTypeError, match=r"os\.system"):
            serde.loads_typed(("msgpack", ormsgpack.packb([message])))
    assert not marker.exists()


def test_safe_types_round_trip_and_others_need_an_explicit_opt_in() -> None:
    value = {"m": [HumanMessage("hi"), AIMessage("yo")], "p": Point(1)}
    strict = CheckedSerializer()
    stored = strict.dumps_typed(value)
    with pytest.raises(BlockedTypeError, match=r"test_serde\.Point") as info:
        strict.loads_typed(stored)
    assert "with_allowlist([('tests.domain.test_serde', 'Point')])" in str(info.value)
    assert strict.loads_typed(strict.dumps_typed(value["m"])) == value["m"]
    assert strict.with_msgpack_allowlist([POINT]).loads_typed(stored) == value
    assert CheckedSerializer(allowed_modules=[Point]).loads_typed(stored) == value
    assert CheckedSerializer(allowed_modules=True).loads_typed(stored) == value
    permissive_inner = CheckedSerializer(JsonPlusSerializer(), allowed_modules=[Point])
    assert permissive_inner.loads_typed(stored) == value


def test_with_msgpack_allowlist_returns_self_when_nothing_is_added() -> None:
    serde = CheckedSerializer().with_msgpack_allowlist([POINT])
    assert serde.with_msgpack_allowlist([POINT]) is serde
    assert serde.with_msgpack_allowlist([]) is serde
    anything = CheckedSerializer(allowed_modules=True)
    assert anything.with_msgpack_allowlist([POINT]) is anything


def test_load_names_where_the_value_was_in_the_error() -> None:
    serde = CheckedSerializer()
    where = "thread 't1' checkpoint 'c1' channel 'messages' item 3"
    with pytest.raises(CorruptDataError, match="channel 'messages' item 3") as info:
        load(serde, ("msgpack", b"\xc1"), where)
    assert isinstance(info.value, ValueError)
    with pytest.raises(CorruptDataError, match="unknown-tag"):
        load(serde, ("unknown-tag", b""), where)
    with pytest.raises(CorruptDataError, match="not a \\(type, bytes\\) pair"):
        load(serde, b"just bytes", where)  # type: ignore[arg-type]


class Broken(JsonPlusSerializer):
    """A serializer with a bug (a programming error while decoding)."""

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        raise AttributeError("bug in a custom serializer")


def test_programming_errors_of_the_inner_serializer_are_not_disguised() -> None:
    serde = CheckedSerializer(Broken())
    with pytest.raises(AttributeError, match="bug in a custom serializer"):
        serde.loads_typed(("msgpack", ormsgpack.packb(1)))


def test_wrapping_is_idempotent_and_unwrap_gives_the_inner_serializer() -> None:
    inner = JsonPlusSerializer()
    serde = checked(inner)
    assert checked(serde) is serde and unwrap(serde) is inner is serde.inner
    assert unwrap(inner) is inner
    with pytest.raises(TypeError):
        CheckedSerializer(serde)


def test_the_allowlist_applies_only_inside_a_checked_decode(tmp_path: Path) -> None:
    """Other serializers in the process keep LangGraph's own behaviour."""
    stored = JsonPlusSerializer().dumps_typed(Point(1))
    with pytest.raises(BlockedTypeError):
        CheckedSerializer().loads_typed(stored)
    assert JsonPlusSerializer().loads_typed(stored) == Point(1)


def test_a_fast_path_decoding_with_the_inner_serializer_keeps_every_check(
    tmp_path: Path,
) -> None:
    """`guarded()`: how a caller that decodes with `.inner` directly (or below
    it) keeps the allowlist and the typed errors."""
    marker = tmp_path / "ran"
    serde = CheckedSerializer(JsonPlusSerializer())
    crafted = ("msgpack", ormsgpack.packb([system_ext(marker)]))
    with pytest.raises(BlockedTypeError, match=r"\(channel 'x'\)"):
        with serde.guarded(crafted, "channel 'x'"):
            serde.inner.loads_typed(crafted)
    assert not marker.exists()
    with pytest.raises(CorruptDataError, match=r"\(channel 'y'\)"):
        with serde.guarded(("msgpack", b"\xc1"), "channel 'y'"):
            ormsgpack.unpackb(b"\xc1")
    good = serde.dumps_typed([HumanMessage("hi")])
    with serde.guarded(good):
        assert serde.inner.loads_typed(good) == [HumanMessage("hi")]
