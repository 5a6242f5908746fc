"""`saver.cache.Known`: the per-generation lookups a put uses agree with a
plain scan, for few and for many edited marks, duplicates and fragmented runs."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from aiecs_checkpoint.saver.cache import FEW_MARKS, Known
from aiecs_checkpoint.stores.records import compress_positions


@st.composite
def generations(draw: Any) -> tuple[list[Any], list[int]]:
    """A list of objects (some standing more than once) and their positions."""
    pool = [object() for _ in range(draw(st.integers(1, 12)))]
    picks = draw(st.lists(st.integers(0, len(pool) - 1), max_size=40))
    elements = [pool[i] for i in picks]
    positions = draw(st.permutations(range(len(elements) + 5)))[: len(elements)]
    return elements, list(positions)


@given(generations(), st.data())
def test_dirty_at_finds_every_index_of_every_marked_object(
    generation: tuple[list[Any], list[int]], data: st.DataObject
) -> None:
    elements, positions = generation
    known = Known("e", elements, compress_positions(positions), 0)
    others = [object() for _ in range(3)]
    marked = data.draw(
        st.sets(st.sampled_from(elements + others), max_size=2 * FEW_MARKS + 2)
        if elements
        else st.sets(st.sampled_from(others))
    )
    dirty = {id(x) for x in marked}
    value = [*elements, object()]
    expected = [i for i, e in enumerate(elements) if id(e) in dirty]
    assert known.dirty_at(value, dirty) == expected
    if elements:  # a list that does not start with them: None
        assert known.dirty_at(value[:-2], dirty) is None


@given(generations(), st.data())
def test_positions_at_agrees_with_the_expanded_positions(
    generation: tuple[list[Any], list[int]], data: st.DataObject
) -> None:
    elements, positions = generation
    known = Known("e", elements, compress_positions(positions), 0)
    indexes = data.draw(
        st.lists(st.integers(0, max(len(elements) - 1, 0)), max_size=2 * FEW_MARKS)
        if elements
        else st.just([])
    )
    assert known.positions_at(indexes) == [positions[i] for i in indexes]


@given(generations(), st.integers(0, 5))
def test_ids_extended_from_the_generation_grown_from_are_the_ids(
    generation: tuple[list[Any], list[int]], grown: int
) -> None:
    elements, positions = generation
    head = Known("e", elements, compress_positions(positions), 0)
    assert head.ids == [id(e) for e in elements]
    longer = [*elements, *(object() for _ in range(grown))]
    runs = compress_positions([*positions, *range(100, 100 + grown)])
    assert Known("e", longer, runs, 0, head).ids == [id(e) for e in longer]
