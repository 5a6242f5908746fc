"""Arguments that are not what a method takes raise a typed error before
anything is read or written, on every store, through the sync and async API:
a `str` where a sequence of ids is expected (it would be read one id per
character), and `list` arguments that are not a filter, a checkpoint config or
a count."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from aiecs_checkpoint import ContextEngineSaver, InvalidConfigError
from aiecs_checkpoint.errors import InvalidArgumentError, InvalidThreadIdError
from tests.saver.test_bad_input import call, cfg, make_checkpoint, run_sync, snapshot

THREADS = ("t", "1", "t1")


async def _put_threads(saver: ContextEngineSaver, use_async: bool) -> list[Any]:
    """One checkpoint in each of "t", "1", "t1" (runs "run-t", "run-1", ...),
    and every thread's state as a reader sees it."""
    for i, thread in enumerate(THREADS):
        meta = {"run_id": f"run-{thread}"}
        checkpoint = make_checkpoint(i + 1, {"a": thread})
        await call(saver, use_async, "put", cfg(thread), checkpoint, meta, {"a": "1"})
    return [await snapshot(saver, use_async, t) for t in THREADS]


async def _str_ids_are_refused(
    saver: ContextEngineSaver, use_async: bool, method: str, ids: Any
) -> None:
    before = await _put_threads(saver, use_async)
    with pytest.raises(InvalidArgumentError, match="sequence of ids") as info:
        kwargs = {"strategy": "delete"} if method == "prune" else {}
        await call(saver, use_async, method, ids, **kwargs)
    assert isinstance(info.value, TypeError)
    assert [await snapshot(saver, use_async, t) for t in THREADS] == before


STR_IDS = {
    "prune_str": ("prune", "t1"),
    "prune_bytes": ("prune", b"t1"),
    "prune_int": ("prune", 7),
    "prune_dict": ("prune", {"t1": 1}),
    "delete_for_runs_str": ("delete_for_runs", "run-1"),
    "delete_for_runs_bytes": ("delete_for_runs", b"run-1"),
    "delete_for_runs_none": ("delete_for_runs", None),
}


@pytest.mark.parametrize("case", sorted(STR_IDS))
def test_a_str_where_ids_are_expected_raises_and_deletes_nothing_sync(
    sync_saver: ContextEngineSaver, case: str
) -> None:
    run_sync(_str_ids_are_refused(sync_saver, False, *STR_IDS[case]))


@pytest.mark.parametrize("case", sorted(STR_IDS))
async def test_a_str_where_ids_are_expected_raises_and_deletes_nothing_async(
    saver: ContextEngineSaver, case: str
) -> None:
    await _str_ids_are_refused(saver, True, *STR_IDS[case])


BAD_ELEMENTS: dict[str, tuple[str, Any, type[Exception]]] = {
    "prune_int_element": ("prune", ["t1", 7], InvalidThreadIdError),
    "prune_empty_element": ("prune", ["t1", ""], InvalidThreadIdError),
    "runs_int_element": ("delete_for_runs", ["run-1", 7], InvalidArgumentError),
    "runs_none_element": ("delete_for_runs", ["run-1", None], InvalidArgumentError),
    "runs_empty_element": ("delete_for_runs", ["run-1", ""], InvalidConfigError),
}


async def _bad_element_is_refused(
    saver: ContextEngineSaver, use_async: bool, case: str
) -> None:
    method, ids, error = BAD_ELEMENTS[case]
    before = await _put_threads(saver, use_async)
    kwargs = {"strategy": "delete"} if method == "prune" else {}
    with pytest.raises(error):
        await call(saver, use_async, method, ids, **kwargs)
    assert [await snapshot(saver, use_async, t) for t in THREADS] == before


@pytest.mark.parametrize("case", sorted(BAD_ELEMENTS))
def test_an_invalid_id_in_the_sequence_raises_before_anything_is_deleted_sync(
    sync_saver: ContextEngineSaver, case: str
) -> None:
    run_sync(_bad_element_is_refused(sync_saver, False, case))


@pytest.mark.parametrize("case", sorted(BAD_ELEMENTS))
async def test_an_invalid_id_in_the_sequence_raises_before_anything_is_deleted_async(
    saver: ContextEngineSaver, case: str
) -> None:
    await _bad_element_is_refused(saver, True, case)


async def _sequences_of_every_kind_work(
    saver: ContextEngineSaver, use_async: bool
) -> None:
    await _put_threads(saver, use_async)
    await call(saver, use_async, "delete_for_runs", ("run-t",))
    await call(saver, use_async, "prune", iter(["1"]), strategy="delete")
    left = {t for t in THREADS if await call(saver, use_async, "get_tuple", cfg(t))}
    assert left == {"t1"}
    run = uuid.uuid4()
    meta = {"run_id": str(run)}
    checkpoint = make_checkpoint(9, {"a": "u"})
    await call(saver, use_async, "put", cfg("u"), checkpoint, meta, {"a": "9"})
    await call(saver, use_async, "delete_for_runs", {run})  # a UUID, in a set
    assert await call(saver, use_async, "get_tuple", cfg("u")) is None


def test_tuples_sets_iterators_and_uuid_run_ids_are_accepted_sync(
    sync_saver: ContextEngineSaver,
) -> None:
    run_sync(_sequences_of_every_kind_work(sync_saver, False))


async def test_tuples_sets_iterators_and_uuid_run_ids_are_accepted_async(
    saver: ContextEngineSaver,
) -> None:
    await _sequences_of_every_kind_work(saver, True)


# -- list(filter=..., before=..., limit=...) -------------------------------------------

BAD_LIST_ARGS: dict[str, tuple[dict[str, Any], str]] = {
    "before_str": ({"before": "garbage"}, "before must be the config of a checkpoint"),
    "before_list": ({"before": [cfg("t")]}, "before must be the config"),
    "before_dict": ({"before": {"x": 1}}, "before must be the config"),
    "before_no_id": ({"before": cfg("t")}, "before must be the config"),
    "before_int_id": ({"before": cfg("t", 7)}, "before must be the config"),  # type: ignore[arg-type]
    "limit_str": ({"limit": "3"}, "limit must be None or an int >= 0, got '3'"),
    "limit_bool": ({"limit": True}, "limit must be None or an int >= 0, got True"),
    "limit_negative": ({"limit": -1}, "got -1"),
    "limit_float": ({"limit": 2.0}, "got 2.0"),
    "filter_str": ({"filter": "step"}, "filter must be a dict"),
    "filter_int_key": ({"filter": {1: 2}}, "filter must be a dict"),
}


async def _bad_list_args_raise(
    saver: ContextEngineSaver, use_async: bool, case: str
) -> None:
    await _put_threads(saver, use_async)
    kwargs, text = BAD_LIST_ARGS[case]
    for config in (cfg("t"), None):
        with pytest.raises(InvalidConfigError, match=text):
            await call(saver, use_async, "list", config, **kwargs)


@pytest.mark.parametrize("case", sorted(BAD_LIST_ARGS))
def test_bad_list_arguments_raise_invalid_config_error_sync(
    sync_saver: ContextEngineSaver, case: str
) -> None:
    run_sync(_bad_list_args_raise(sync_saver, False, case))


@pytest.mark.parametrize("case", sorted(BAD_LIST_ARGS))
async def test_bad_list_arguments_raise_invalid_config_error_async(
    saver: ContextEngineSaver, case: str
) -> None:
    await _bad_list_args_raise(saver, True, case)


async def _limit_zero_lists_nothing(saver: ContextEngineSaver, use_async: bool) -> None:
    await _put_threads(saver, use_async)
    assert await call(saver, use_async, "list", None, limit=0) == []
    newest = await call(saver, use_async, "list", cfg("t1"), limit=1)
    assert len(newest) == 1
    older = await call(saver, use_async, "list", cfg("t1"), before=newest[0].config)
    assert older == []


def test_limit_zero_lists_nothing_and_a_listed_config_is_a_valid_before_sync(
    sync_saver: ContextEngineSaver,
) -> None:
    run_sync(_limit_zero_lists_nothing(sync_saver, False))


async def test_limit_zero_lists_nothing_and_a_listed_config_is_a_valid_before_async(
    saver: ContextEngineSaver,
) -> None:
    await _limit_zero_lists_nothing(saver, True)
