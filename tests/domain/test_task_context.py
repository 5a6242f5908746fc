"""TaskContext: tracking, optimisation, lossless round trip, resources, persistence."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiecs_checkpoint.config import Settings
from aiecs_checkpoint.domain import (
    ContextUpdate,
    TaskContext,
    build_context,
    history_file_name,
    task_context,
)
from aiecs_checkpoint.errors import InvalidConfigError, SerializationError

UTC = timezone.utc
LOGGER = "aiecs_checkpoint.domain.task_context"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Defaults point into the test's tmp dir, never at ./tasks."""
    for name in (
        "AIECS_TASK_DIR",
        "AIECS_MAX_CONTEXT_SIZE",
        "AIECS_ENABLE_PERSISTENCE",
        "AIECS_LOG_LEVEL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIECS_TASK_DIR", str(tmp_path / "default-tasks"))
    yield


def make(tmp_path: Path, persist: bool = True, **data: Any) -> TaskContext:
    data.setdefault("user_id", "u1")
    data.setdefault("chat_id", "chat_1")
    return TaskContext(data, tmp_path / "tasks", enable_persistence=persist)


class Closable:
    """Records its closing in a shared log; may fail."""

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def close(self) -> None:
        self.log.append(self.name)
        if self.fail:
            raise OSError(f"{self.name} failed to close")


class AsyncClosable(Closable):
    async def close(self) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        super().close()


class ACloseOnly:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def aclose(self) -> None:
        await asyncio.sleep(0)
        self.log.append("aclose")


class Opaque:
    """A non-JSON object with an identity repr."""


# -- construction and tracking ---------------------------------------------------------


def test_missing_ids_default_to_anonymous_and_none() -> None:
    ctx = TaskContext({}, enable_persistence=False)
    assert (ctx.user_id, ctx.chat_id) == ("anonymous", "none")
    assert ctx.context_history == [] and ctx.resources == {}


def test_ai_preference_goes_into_metadata_without_touching_the_callers_dict(
    tmp_path: Path,
) -> None:
    meta = {"task_type": "analysis"}
    ctx = make(tmp_path, False, metadata=meta, aiPreference={"model": "gpt-4"})
    assert ctx.metadata == {"task_type": "analysis", "aiPreference": {"model": "gpt-4"}}
    assert meta == {"task_type": "analysis"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"user_id": 5}, "user_id"),
        ({"chat_id": ["x"]}, "chat_id"),
        ({"metadata": "x"}, "metadata"),
        ({"metadata_toggles": {"a": "yes"}}, "metadata_toggles"),
    ],
)
def test_malformed_data_raises_naming_the_field(
    data: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        TaskContext(data, enable_persistence=False)


def test_context_update_is_stamped_with_an_aware_utc_time(tmp_path: Path) -> None:
    ctx = make(tmp_path, False)
    before = datetime.now(UTC)
    update = ctx.add_context_update("message", "hi", {"source": "user"})
    assert update is ctx.context_history[-1]
    assert update.timestamp.tzinfo is UTC
    assert before <= update.timestamp <= datetime.now(UTC)
    assert (update.update_type, update.data, update.metadata) == (
        "message",
        "hi",
        {"source": "user"},
    )


def test_context_update_accepts_the_originals_epoch_seconds() -> None:
    update = ContextUpdate(1_700_000_000.5, "message", "x", {})  # type: ignore[arg-type]
    assert update.timestamp == datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)


def test_add_resource_registers_it_and_records_its_type(tmp_path: Path) -> None:
    ctx = make(tmp_path, False)
    res = Closable("r", [])
    ctx.add_resource("pdf_file", res)
    assert ctx.resources == {"pdf_file": res}
    last = ctx.context_history[-1]
    assert (last.update_type, last.data, last.metadata) == (
        "resource",
        {"name": "pdf_file"},
        {"type": "Closable"},
    )


def test_file_operation_updates_the_tracker_and_the_history(tmp_path: Path) -> None:
    ctx = make(tmp_path, False)
    ctx.track_file_operation("input.pdf", "read", "user")
    ctx.track_file_operation(Path("input.pdf"), "write")
    entry = ctx.file_tracker["input.pdf"]
    assert (entry["operation"], entry["source"], entry["state"]) == (
        "write",
        "task",
        "active",
    )
    assert entry["timestamp"].tzinfo is UTC
    assert [u.data for u in ctx.context_history] == [
        {"path": "input.pdf", "operation": "read"},
        {"path": "input.pdf", "operation": "write"},
    ]


def test_repeat_of_last_identical_model_usage_is_skipped(tmp_path: Path) -> None:
    ctx = make(tmp_path, False)
    assert ctx.track_model_usage("gpt-4", "openai", "chat") is True
    assert ctx.track_model_usage("gpt-4", "openai", "chat") is False
    assert len(ctx.model_tracker) == 1
    assert len(ctx.context_history) == 1


def test_model_usage_repeated_after_another_model_is_recorded(tmp_path: Path) -> None:
    ctx = make(tmp_path, False)
    ctx.track_model_usage("gpt-4", "openai", "chat")
    ctx.track_model_usage("gpt-4", "openai", "extraction")
    ctx.track_model_usage("gpt-4", "openai", "chat")
    assert [m["mode"] for m in ctx.model_tracker] == ["chat", "extraction", "chat"]


def test_active_metadata_hides_keys_toggled_off(tmp_path: Path) -> None:
    ctx = make(
        tmp_path,
        False,
        metadata={"a": 1, "b": 2, "c": 3},
        metadata_toggles={"a": False, "b": True},
    )
    assert ctx.get_active_metadata() == {"b": 2, "c": 3}


# -- optimize_context ------------------------------------------------------------------


def test_optimize_removes_older_duplicates_keeping_order(tmp_path: Path) -> None:
    ctx = make(tmp_path, False)
    for data in ["a", "b", "a", "c", "b"]:
        ctx.add_context_update("message", data)
    newest = list(ctx.context_history)
    assert ctx.optimize_context(max_size=1000) is True
    assert ctx.context_history == [newest[2], newest[3], newest[4]]
    assert [u.data for u in ctx.context_history] == ["a", "c", "b"]


def test_same_data_with_different_update_types_is_not_a_duplicate(
    tmp_path: Path,
) -> None:
    ctx = make(tmp_path, False)
    ctx.add_context_update("message", "x")
    ctx.add_context_update("error", "x")
    assert ctx.optimize_context(1000) is False
    assert len(ctx.context_history) == 2


def test_optimize_returns_false_when_nothing_is_removed(tmp_path: Path) -> None:
    ctx = make(tmp_path, False)
    for i in range(5):
        ctx.add_context_update("message", f"m{i}")
    before = list(ctx.context_history)
    assert ctx.optimize_context(max_size=1000) is False
    assert ctx.context_history == before


def test_size_limit_keeps_the_newest_entries_that_fit(tmp_path: Path) -> None:
    ctx = make(tmp_path, False)
    for i in range(100):
        ctx.add_context_update("test", f"data_{i:02d}")
    assert ctx.optimize_context(max_size=50) is True
    assert [u.data for u in ctx.context_history] == [
        f"data_{i}" for i in range(93, 100)
    ]


def test_default_optimize_limit_is_max_context_size(tmp_path: Path) -> None:
    ctx = TaskContext({}, tmp_path, enable_persistence=False, max_context_size=10)
    for i in range(5):
        ctx.add_context_update("m", f"abcd{i}")
    assert ctx.optimize_context() is True
    assert [u.data for u in ctx.context_history] == ["abcd3", "abcd4"]


def test_optimize_handles_non_json_data(tmp_path: Path) -> None:
    ctx = make(tmp_path, False)
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    first, second = Opaque(), Opaque()
    for data in [
        b"\x00\xff",
        b"\x00\xff",
        {"when": datetime(2024, 1, 1), "ids": {3, 1, 2}},
        {"ids": {1, 2, 3}, "when": datetime(2024, 1, 1)},
        first,
        second,
        cyclic,
        ("t", 1),
    ]:
        ctx.add_context_update("data", data)
    assert ctx.optimize_context(max_size=10_000) is True
    kept = [u.data for u in ctx.context_history]
    assert kept.count(b"\x00\xff") == 1
    assert sum(isinstance(d, dict) for d in kept) == 1
    assert first in kept and second in kept
    assert cyclic in kept and ("t", 1) in kept


def test_optimize_survives_data_nested_too_deeply_to_walk(tmp_path: Path) -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    ctx = make(tmp_path, False)
    ctx.add_context_update("deep", deep)
    ctx.add_context_update("deep", deep)
    ctx.add_context_update("flat", "x")
    ctx.optimize_context(max_size=10**9)
    assert [u.update_type for u in ctx.context_history][-1] == "flat"


def test_values_equal_in_json_but_of_different_types_are_not_merged(
    tmp_path: Path,
) -> None:
    ctx = make(tmp_path, False)
    for data in [1, 1.0, True, "1", b"1", [1], (1,)]:
        ctx.add_context_update("v", data)
    assert ctx.optimize_context(1000) is False
    assert len(ctx.context_history) == 7


def test_negative_max_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_size"):
        make(tmp_path, False).optimize_context(-1)


# -- to_dict / from_dict ---------------------------------------------------------------


def test_to_dict_has_every_part_of_the_context(tmp_path: Path) -> None:
    ctx = make(tmp_path, False, metadata={"a": 1}, metadata_toggles={"a": False})
    ctx.track_file_operation("f.csv", "read", "pandas")
    ctx.track_model_usage("kmeans", "sklearn", "clustering")
    d = ctx.to_dict()
    assert set(d) == {
        "user_id",
        "chat_id",
        "metadata",
        "metadata_toggles",
        "start_time",
        "context_history",
        "file_tracker",
        "model_tracker",
    }
    assert d["metadata"] == {"a": 1}
    assert d["metadata_toggles"] == {"a": False}
    assert set(d["file_tracker"]["f.csv"]) == {
        "operation",
        "source",
        "timestamp",
        "state",
    }
    assert set(d["model_tracker"][0]) == {
        "model_id",
        "provider_id",
        "mode",
        "timestamp",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "latency_ms",
        "error",
        "stamp",
    }
    assert set(d["context_history"][0]) == {
        "timestamp",
        "update_type",
        "data",
        "metadata",
    }
    json.dumps(d)


def test_round_trip_keeps_trackers_toggles_metadata_and_history(tmp_path: Path) -> None:
    ctx = make(tmp_path, False, metadata={"a": 1}, metadata_toggles={"a": False})
    with ctx:
        ctx.add_context_update("message", {"text": "hi"}, {"source": "user"})
        ctx.track_file_operation("f.csv", "read", "pandas")
        ctx.track_model_usage("kmeans", "sklearn", "clustering")
    back = TaskContext.from_dict(ctx.to_dict(), enable_persistence=False)
    assert back.to_dict() == ctx.to_dict()
    assert back.file_tracker == ctx.file_tracker
    assert back.model_tracker == ctx.model_tracker
    assert back.context_history == ctx.context_history
    assert back.metadata_toggles == {"a": False}
    assert back.start_time == ctx.start_time


def test_to_dict_keeps_non_json_data_as_it_is(tmp_path: Path) -> None:
    ctx = make(tmp_path, False)
    blob, when, obj = b"\x00", datetime(2024, 1, 1, tzinfo=UTC), Opaque()
    ctx.add_context_update("data", {"blob": blob, "when": when, "obj": obj})
    data = ctx.to_dict()["context_history"][0]["data"]
    assert data["blob"] is blob and data["when"] is when and data["obj"] is obj
    back = TaskContext.from_dict(ctx.to_dict(), enable_persistence=False)
    assert back.to_dict() == ctx.to_dict()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("update"),
            st.text(max_size=8),
            _json,
            st.dictionaries(st.text(max_size=4), _json, max_size=2),
        ),
        st.tuples(
            st.just("file"),
            st.text(max_size=10),
            st.sampled_from(["read", "write"]),
            st.text(max_size=5),
        ),
        st.tuples(
            st.just("model"),
            st.sampled_from(["a", "b"]),
            st.sampled_from(["p", "q"]),
            st.sampled_from(["x", "y"]),
        ),
    ),
    max_size=12,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    ops=_operations,
    chat_id=st.text(max_size=20),
    meta=st.dictionaries(st.text(max_size=5), _json, max_size=3),
    toggles=st.dictionaries(st.text(max_size=5), st.booleans(), max_size=3),
    optimize=st.none() | st.integers(0, 200),
)
def test_from_dict_of_to_dict_loses_nothing(
    tmp_path: Path,
    ops: list[tuple[Any, ...]],
    chat_id: str,
    meta: dict[str, Any],
    toggles: dict[str, bool],
    optimize: int | None,
) -> None:
    ctx = TaskContext(
        {
            "user_id": "u",
            "chat_id": chat_id,
            "metadata": meta,
            "metadata_toggles": toggles,
        },
        tmp_path,
        enable_persistence=False,
    )
    for op in ops:
        if op[0] == "update":
            ctx.add_context_update(op[1], op[2], op[3])
        elif op[0] == "file":
            ctx.track_file_operation(op[1], op[2], op[3])
        else:
            ctx.track_model_usage(op[1], op[2], op[3])
    if optimize is not None:
        ctx.optimize_context(optimize)
    d = ctx.to_dict()
    assert TaskContext.from_dict(d, enable_persistence=False).to_dict() == d
    via_json = json.loads(json.dumps(d))
    assert TaskContext.from_dict(via_json, enable_persistence=False).to_dict() == d


def test_from_dict_reads_the_original_systems_dict() -> None:
    original = {
        "user_id": "analyst_001",
        "chat_id": "analysis_session_001",
        "metadata": {"pipeline_type": "sales_analysis"},
        "context_history": [
            {
                "timestamp": 1_700_000_000.0,
                "update_type": "message",
                "data": "Starting data loading",
                "metadata": {"step": "data_loading"},
            }
        ],
        "file_tracker": {
            "sales.csv": {
                "operation": "read",
                "source": "pandas",
                "timestamp": 1_700_000_001.0,
                "state": "active",
            }
        },
        "model_tracker": [
            {
                "model_id": "pandas",
                "provider_id": "python",
                "mode": "data_processing",
                "timestamp": 1_700_000_002.0,
            }
        ],
    }
    ctx = TaskContext.from_dict(original, enable_persistence=False)
    assert ctx.context_history[0].timestamp == datetime.fromtimestamp(
        1_700_000_000, UTC
    )
    assert ctx.file_tracker["sales.csv"]["timestamp"].tzinfo is UTC
    assert ctx.model_tracker[0]["model_id"] == "pandas"
    assert ctx.metadata_toggles == {}


def test_from_dict_never_takes_task_dir_from_the_data(tmp_path: Path) -> None:
    ctx = TaskContext.from_dict(
        {"chat_id": "c", "task_dir": "/etc"}, tmp_path, enable_persistence=True
    )
    assert ctx.task_dir == tmp_path


def test_from_dict_ignores_a_saved_history_file(tmp_path: Path) -> None:
    saved = make(tmp_path)
    saved.add_context_update("message", "on disk")
    saved.save_history()
    restored = TaskContext.from_dict(
        {"chat_id": "chat_1", "context_history": []},
        tmp_path / "tasks",
        enable_persistence=True,
    )
    assert restored.context_history == []


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"context_history": [{"update_type": "m", "data": 1}]}, "timestamp"),
        ({"context_history": "x"}, "context_history"),
        ({"file_tracker": {"f": {"operation": "r", "source": "s"}}}, "state"),
        ({"model_tracker": [{"model_id": "m"}]}, "provider_id"),
    ],
)
def test_from_dict_rejects_malformed_parts_naming_them(
    data: dict[str, Any], where: str
) -> None:
    with pytest.raises(ValueError, match=where):
        TaskContext.from_dict(data, enable_persistence=False)


# -- settings --------------------------------------------------------------------------


def test_defaults_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIECS_TASK_DIR", str(tmp_path / "env-dir"))
    monkeypatch.setenv("AIECS_MAX_CONTEXT_SIZE", "42")
    monkeypatch.setenv("AIECS_ENABLE_PERSISTENCE", "false")
    ctx = TaskContext({})
    assert ctx.task_dir == tmp_path / "env-dir"
    assert ctx.max_context_size == 42
    assert ctx.enable_persistence is False


def test_explicit_arguments_override_settings(tmp_path: Path) -> None:
    s = Settings(task_dir=tmp_path / "a", max_context_size=5, enable_persistence=False)
    ctx = TaskContext({}, tmp_path / "b", settings=s, enable_persistence=True)
    assert ctx.task_dir == tmp_path / "b"
    assert ctx.enable_persistence is True
    assert ctx.max_context_size == 5


def test_bad_environment_fails_construction_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIECS_MAX_CONTEXT_SIZE", "lots")
    with pytest.raises(InvalidConfigError, match="AIECS_MAX_CONTEXT_SIZE"):
        TaskContext({})


# -- resources -------------------------------------------------------------------------


def test_sync_with_closes_every_resource_newest_first_past_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    with caplog.at_level(logging.ERROR, logger=LOGGER), make(tmp_path, False) as ctx:
        for name, fail in [("a", False), ("b", True), ("c", False)]:
            ctx.add_resource(name, Closable(name, log, fail))
    assert log == ["c", "b", "a"]
    assert ctx.resources == {}
    assert any("'b'" in r.getMessage() for r in caplog.records)


async def test_async_with_awaits_async_close_and_aclose(tmp_path: Path) -> None:
    log: list[str] = []
    async with make(tmp_path, False) as ctx:
        ctx.add_resource("sync", Closable("sync", log))
        ctx.add_resource("async", AsyncClosable("async", log))
        ctx.add_resource("aclose", ACloseOnly(log))
    assert log == ["aclose", "async", "sync"]


async def test_async_with_continues_past_a_failing_async_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        async with make(tmp_path, False) as ctx:
            ctx.add_resource("first", AsyncClosable("first", log))
            ctx.add_resource("broken", AsyncClosable("broken", log, fail=True))
            ctx.add_resource("last", Closable("last", log))
    assert log == ["last", "broken", "first"]
    assert [r.levelno for r in caplog.records if "broken" in r.getMessage()] == [
        logging.ERROR
    ]


def test_sync_with_runs_an_async_only_close_when_no_loop_runs(tmp_path: Path) -> None:
    log: list[str] = []
    with make(tmp_path, False) as ctx:
        ctx.add_resource("a", ACloseOnly(log))
    assert log == ["aclose"]


async def test_sync_with_on_a_running_loop_reports_an_async_close_it_cannot_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    ctx = make(tmp_path, False)
    ctx.add_resource("a", ACloseOnly(log))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            assert ctx.close_resources() == ["a"]
    assert log == []
    [record] = [r for r in caplog.records if "'a'" in r.getMessage()]
    assert record.exc_info is not None
    assert "async with" in str(record.exc_info[1])


def test_a_resource_registered_twice_is_closed_once(tmp_path: Path) -> None:
    log: list[str] = []
    res = Closable("r", log)
    with make(tmp_path, False) as ctx:
        ctx.add_resource("one", res)
        ctx.add_resource("two", res)
    assert log == ["r"]


def test_a_resource_replaced_under_the_same_name_is_still_closed(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    with make(tmp_path, False) as ctx:
        ctx.add_resource("db", Closable("old", log))
        ctx.add_resource("db", Closable("new", log))
    assert log == ["new", "old"]


def test_resources_put_directly_in_the_dict_are_closed_too(tmp_path: Path) -> None:
    log: list[str] = []
    with make(tmp_path, False) as ctx:
        ctx.resources["raw"] = Closable("raw", log)
    assert log == ["raw"]


def test_exception_in_body_propagates_after_cleanup_and_save(tmp_path: Path) -> None:
    log: list[str] = []
    ctx = make(tmp_path)
    with pytest.raises(KeyError), ctx:
        ctx.add_resource("r", Closable("r", log))
        raise KeyError("boom")
    assert log == ["r"]
    assert ctx.history_path.is_file()


def test_enter_sets_an_aware_start_time(tmp_path: Path) -> None:
    with make(tmp_path, False) as ctx:
        assert ctx.start_time is not None
        assert ctx.start_time.tzinfo is UTC


async def test_task_context_helper_closes_resources_and_saves(tmp_path: Path) -> None:
    log: list[str] = []
    async with task_context(
        {"chat_id": "c1"}, tmp_path, enable_persistence=True
    ) as ctx:
        assert isinstance(ctx, TaskContext)
        ctx.add_resource("r", AsyncClosable("r", log))
        ctx.add_context_update("message", "hello")
    assert log == ["r"]
    again = TaskContext({"chat_id": "c1"}, tmp_path, enable_persistence=True)
    assert [u.data for u in again.context_history] == [{"name": "r"}, "hello"]


def test_build_context_returns_the_to_dict_form() -> None:
    d = build_context({"user_id": "u", "chat_id": "c", "metadata": {"k": 1}})
    assert (d["user_id"], d["chat_id"], d["metadata"]) == ("u", "c", {"k": 1})
    assert d["context_history"] == []


# -- persistence -----------------------------------------------------------------------


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_no_filesystem_side_effect_when_persistence_is_off(tmp_path: Path) -> None:
    ctx = TaskContext({"chat_id": "c"}, tmp_path / "tasks", enable_persistence=False)
    with ctx:
        ctx.add_context_update("m", 1)
    assert ctx.save_history() is None
    assert _tree(tmp_path) == set()


def test_creating_a_context_writes_nothing_even_with_persistence_on(
    tmp_path: Path,
) -> None:
    TaskContext({"chat_id": "c"}, tmp_path / "tasks", enable_persistence=True)
    assert _tree(tmp_path) == set()


def test_saved_history_is_loaded_by_the_next_context(tmp_path: Path) -> None:
    ctx = make(tmp_path)
    ctx.add_context_update(
        "blob", b"\x00\x01", {"when": datetime(2024, 1, 1, tzinfo=UTC)}
    )
    ctx.add_context_update("message", {"nested": [1, "two", None]})
    path = ctx.save_history()
    assert path == ctx.history_path and path is not None and path.is_file()
    again = make(tmp_path)
    assert again.context_history == ctx.context_history


def test_history_files_of_different_chats_are_separate(tmp_path: Path) -> None:
    a, b = make(tmp_path, chat_id="a"), make(tmp_path, chat_id="A")
    a.add_context_update("m", "for a")
    a.save_history()
    b.save_history()
    assert [u.data for u in make(tmp_path, chat_id="a").context_history] == ["for a"]
    assert make(tmp_path, chat_id="A").context_history == []


def test_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make(tmp_path)
    ctx.add_context_update("m", "old")
    path = ctx.save_history()
    assert path is not None
    before = path.read_bytes()
    ctx.add_context_update("m", "new")

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        ctx.save_history()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_unserializable_history_raises_and_keeps_the_old_file(tmp_path: Path) -> None:
    ctx = make(tmp_path)
    ctx.add_context_update("m", "old")
    path = ctx.save_history()
    assert path is not None
    before = path.read_bytes()
    ctx.add_context_update("m", Opaque())
    with pytest.raises(SerializationError, match="chat_1"):
        ctx.save_history()
    assert path.read_bytes() == before


def test_exit_logs_a_failed_save_instead_of_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger=LOGGER), make(tmp_path) as ctx:
        ctx.add_context_update("m", Opaque())
    assert any("save" in r.getMessage() for r in caplog.records)


HOSTILE_CHAT_IDS = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "",
    "a/../../b",
    "a\\..\\..\\b",
    "C:\\Windows\\system.ini",
    "nul\x00byte",
    "x" * 10_000,
    "é" * 300,
    "\udcff-lone-surrogate",
    "~" + "0" * 64,
]


@pytest.mark.parametrize("chat_id", HOSTILE_CHAT_IDS)
def test_hostile_chat_id_cannot_escape_task_dir(tmp_path: Path, chat_id: str) -> None:
    task_dir = tmp_path / "tasks"
    ctx = TaskContext({"chat_id": chat_id}, task_dir, enable_persistence=True)
    ctx.add_context_update("m", "saved")
    path = ctx.save_history()
    assert path is not None
    assert path.parent == task_dir.resolve()
    assert _tree(tmp_path) == {"tasks", f"tasks/{path.name}"}
    again = TaskContext({"chat_id": chat_id}, task_dir, enable_persistence=True)
    assert [u.data for u in again.context_history] == ["saved"]


@settings(max_examples=500, deadline=None)
@given(st.text(), st.text())
def test_history_file_name_is_one_safe_component_and_injective(a: str, b: str) -> None:
    name = history_file_name(a)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in (".", "..") and len(name.encode()) <= 255
    if a != b:
        assert name.casefold() != history_file_name(b).casefold()


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_ids_differing_only_in_case_get_different_file_names(chat_id: str) -> None:
    other = chat_id.swapcase()
    if other != chat_id:
        assert (
            history_file_name(chat_id).casefold() != history_file_name(other).casefold()
        )


def test_a_long_id_is_hashed_into_a_short_name() -> None:
    name = history_file_name("x" * 10_000)
    assert name.startswith("context_history_~") and len(name) < 100
    assert name != history_file_name("x" * 10_001)


def test_symlinked_history_file_pointing_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    (task_dir / history_file_name("c")).symlink_to(outside)
    ctx = TaskContext({"chat_id": "c"}, task_dir, enable_persistence=True)
    with pytest.raises(ValueError, match="outside"):
        ctx.save_history()
    assert outside.read_text() == "precious"


def test_the_original_systems_json_history_is_loaded(tmp_path: Path) -> None:
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    (task_dir / "context_history_Chat_42.json").write_text(
        json.dumps(
            [
                {
                    "timestamp": 1_700_000_000.0,
                    "update_type": "m",
                    "data": "x",
                    "metadata": {},
                }
            ]
        )
    )
    ctx = TaskContext({"chat_id": "Chat_42"}, task_dir, enable_persistence=True)
    assert [u.data for u in ctx.context_history] == ["x"]
    assert ctx.context_history[0].timestamp.tzinfo is UTC


def test_corrupt_history_file_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    (task_dir / history_file_name("c")).write_bytes(b"garbage")
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        ctx = TaskContext({"chat_id": "c"}, task_dir, enable_persistence=True)
    assert ctx.context_history == []
    assert any("'c'" in r.getMessage() for r in caplog.records)


async def test_truncate_drops_newer_entries_and_saves(tmp_path: Path) -> None:
    ctx = make(tmp_path)
    old = ctx.add_context_update("m", "old")
    ctx.add_context_update("m", "new")
    object.__setattr__(
        ctx.context_history[1], "timestamp", old.timestamp + timedelta(1)
    )
    assert await ctx.truncate_context_history(old.timestamp) == 1
    assert [u.data for u in make(tmp_path).context_history] == ["old"]


async def test_async_exit_saves_only_when_persistence_is_on(tmp_path: Path) -> None:
    async with make(tmp_path, persist=False) as off:
        off.add_context_update("m", 1)
    assert not (tmp_path / "tasks").exists()
    async with make(tmp_path, persist=True) as on:
        on.add_context_update("m", 1)
    assert on.history_path.is_file()
