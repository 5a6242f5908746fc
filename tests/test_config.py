"""AIECS_* settings: original defaults, strict parsing, errors naming the variable."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiecs_checkpoint import ContextEngine, ContextEngineSaver, TaskContext, config
from aiecs_checkpoint.config import Settings, TaskSettings, validate_config
from aiecs_checkpoint.errors import InvalidConfigError


def test_defaults_are_those_of_the_original_system() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.task_dir == Path("./tasks")
    assert s.max_context_size == 1000
    assert s.enable_persistence is True
    assert s.log_level == "INFO"


def test_every_variable_is_read() -> None:
    s = Settings.from_env(
        {
            "AIECS_TASK_DIR": "/var/lib/aiecs/tasks",
            "AIECS_MAX_CONTEXT_SIZE": "5000",
            "AIECS_ENABLE_PERSISTENCE": "false",
            "AIECS_LOG_LEVEL": "DEBUG",
        }
    )
    assert s == Settings(Path("/var/lib/aiecs/tasks"), 5000, False, "DEBUG")


def test_blank_variables_take_the_defaults() -> None:
    env = {
        "AIECS_TASK_DIR": "",
        "AIECS_MAX_CONTEXT_SIZE": "  ",
        "AIECS_ENABLE_PERSISTENCE": "",
        "AIECS_LOG_LEVEL": " ",
    }
    assert Settings.from_env(env) == Settings()


def test_from_env_without_a_mapping_reads_os_environ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIECS_MAX_CONTEXT_SIZE", "77")
    monkeypatch.delenv("AIECS_LOG_LEVEL", raising=False)
    assert Settings.from_env().max_context_size == 77
    assert validate_config().max_context_size == 77


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "1.5", "1e3"])
def test_bad_max_context_size_names_the_variable_and_value(bad: str) -> None:
    with pytest.raises(InvalidConfigError, match="AIECS_MAX_CONTEXT_SIZE") as info:
        validate_config({"AIECS_MAX_CONTEXT_SIZE": bad})
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
    ],
)
def test_persistence_flag_spellings(text: str, expected: bool) -> None:
    assert Settings.from_env({"AIECS_ENABLE_PERSISTENCE": text}).enable_persistence is (
        expected
    )


def test_unrecognised_persistence_flag_is_an_error_not_false() -> None:
    with pytest.raises(InvalidConfigError, match=r"AIECS_ENABLE_PERSISTENCE.*'maybe'"):
        validate_config({"AIECS_ENABLE_PERSISTENCE": "maybe"})


def test_log_level_is_case_insensitive_and_normalised() -> None:
    assert Settings.from_env({"AIECS_LOG_LEVEL": "warning"}).log_level == "WARNING"


def test_bad_log_level_names_the_variable_and_value() -> None:
    with pytest.raises(InvalidConfigError, match=r"AIECS_LOG_LEVEL.*'LOUD'"):
        validate_config({"AIECS_LOG_LEVEL": "LOUD"})


def test_task_dir_with_a_nul_byte_is_rejected() -> None:
    with pytest.raises(InvalidConfigError, match="AIECS_TASK_DIR"):
        validate_config({"AIECS_TASK_DIR": "a\x00b"})


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(InvalidConfigError) as info:
        validate_config(
            {
                "AIECS_MAX_CONTEXT_SIZE": "-1",
                "AIECS_ENABLE_PERSISTENCE": "perhaps",
                "AIECS_LOG_LEVEL": "chatty",
            }
        )
    message = str(info.value)
    for name in (
        "AIECS_MAX_CONTEXT_SIZE",
        "AIECS_ENABLE_PERSISTENCE",
        "AIECS_LOG_LEVEL",
    ):
        assert name in message


def test_invalid_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        validate_config({"AIECS_MAX_CONTEXT_SIZE": "0"})


def test_validate_config_creates_no_directory(tmp_path: Path) -> None:
    target = tmp_path / "not" / "yet"
    s = validate_config({"AIECS_TASK_DIR": str(target)})
    assert s.task_dir == target
    assert not (tmp_path / "not").exists()


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_context_size = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_context_size": 0}, "max_context_size"),
        ({"max_context_size": True}, "max_context_size"),
        ({"enable_persistence": "yes"}, "enable_persistence"),
        ({"log_level": "TRACE"}, "log_level"),
        ({"task_dir": ""}, "task_dir"),
    ],
)
def test_direct_construction_is_validated(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidConfigError, match=field):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_task_dir_given_as_string_becomes_a_path() -> None:
    assert Settings(task_dir="x/y").task_dir == Path("x/y")  # type: ignore[arg-type]


def test_log_level_number_matches_logging() -> None:
    assert Settings(log_level="ERROR").log_level_number == 40


def test_task_settings_is_the_same_class() -> None:
    assert TaskSettings is Settings


# -- AIECS_LOG_LEVEL is applied, to the package's loggers only -----------------------


@pytest.fixture
def package_logger() -> Iterator[logging.Logger]:
    """The package logger, its level and the root's restored afterwards."""
    logger = logging.getLogger("aiecs_checkpoint")
    root = logging.getLogger()
    levels = (logger.level, root.level)
    config._applied.clear()
    yield logger
    logger.setLevel(levels[0])
    root.setLevel(levels[1])
    config._applied.clear()


def test_an_engine_applies_the_log_level_to_the_package_loggers_only(
    monkeypatch: pytest.MonkeyPatch, package_logger: logging.Logger
) -> None:
    root_level = logging.getLogger().level
    monkeypatch.setenv("AIECS_LOG_LEVEL", "debug")
    ContextEngine()
    assert package_logger.level == logging.DEBUG
    archive = logging.getLogger("aiecs_checkpoint.archive")
    assert archive.getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger().level == root_level
    monkeypatch.setenv("AIECS_LOG_LEVEL", "ERROR")
    ContextEngineSaver()
    assert package_logger.level == logging.ERROR
    package_logger.setLevel(logging.WARNING)  # the application decides in code
    ContextEngine()
    assert package_logger.level == logging.WARNING


def test_without_the_variable_the_package_logger_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, package_logger: logging.Logger
) -> None:
    monkeypatch.delenv("AIECS_LOG_LEVEL", raising=False)
    package_logger.setLevel(logging.CRITICAL)
    ContextEngine()
    assert package_logger.level == logging.CRITICAL
    assert config.apply_log_level({}) is None


def test_a_bad_log_level_fails_where_it_is_applied_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, package_logger: logging.Logger
) -> None:
    monkeypatch.setenv("AIECS_LOG_LEVEL", "LOUD")
    with pytest.raises(InvalidConfigError, match=r"AIECS_LOG_LEVEL.*'LOUD'"):
        ContextEngine()
    with pytest.raises(InvalidConfigError, match="AIECS_LOG_LEVEL"):
        ContextEngineSaver()


def test_a_bad_log_level_does_not_break_task_contexts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AIECS_LOG_LEVEL", raising=False)
    saver = ContextEngineSaver()
    monkeypatch.setenv("AIECS_LOG_LEVEL", "LOUD")
    monkeypatch.setenv("AIECS_ENABLE_PERSISTENCE", "false")
    assert saver.get_task_context("t").model_tracker == []
    monkeypatch.setenv("AIECS_ENABLE_PERSISTENCE", "true")
    monkeypatch.setenv("AIECS_TASK_DIR", str(tmp_path))
    ctx = TaskContext({"user_id": "u", "chat_id": "c"})
    assert ctx.enable_persistence and ctx.task_dir == tmp_path
    with pytest.raises(InvalidConfigError, match="AIECS_LOG_LEVEL"):
        validate_config()  # still reports every bad variable
