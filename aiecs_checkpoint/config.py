"""Task-context settings read from the environment the original system documented.

Variables (defaults as in the original): `AIECS_TASK_DIR` ("./tasks"),
`AIECS_MAX_CONTEXT_SIZE` (1000), `AIECS_ENABLE_PERSISTENCE` ("true") and
`AIECS_LOG_LEVEL` ("INFO"). Unlike the original, a bad value is an error naming
the variable and the value (the original read "yes" or "1" as *false*), and
validating creates no directory.

Each variable is read where it is used, so a bad value fails only there:
task contexts read the first three; `AIECS_LOG_LEVEL`, when set, is applied
by `apply_log_level()` (every `ContextEngine` calls it) to the package's own
loggers, the `aiecs_checkpoint` hierarchy, never to the root logger.
`validate_config()` checks them all at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiecs_checkpoint.errors import InvalidConfigError

ENV_TASK_DIR = "AIECS_TASK_DIR"
ENV_MAX_CONTEXT_SIZE = "AIECS_MAX_CONTEXT_SIZE"
ENV_ENABLE_PERSISTENCE = "AIECS_ENABLE_PERSISTENCE"
ENV_LOG_LEVEL = "AIECS_LOG_LEVEL"

DEFAULT_TASK_DIR = "./tasks"
DEFAULT_MAX_CONTEXT_SIZE = 1000
DEFAULT_ENABLE_PERSISTENCE = True
DEFAULT_LOG_LEVEL = "INFO"

VALID_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class Settings:
    """Validated task-context settings; construct directly or with `from_env`."""

    task_dir: Path = field(default_factory=lambda: Path(DEFAULT_TASK_DIR))
    max_context_size: int = DEFAULT_MAX_CONTEXT_SIZE
    enable_persistence: bool = DEFAULT_ENABLE_PERSISTENCE
    log_level: str = DEFAULT_LOG_LEVEL

    def __post_init__(self) -> None:
        errors: list[str] = []
        task_dir: object = self.task_dir
        if isinstance(task_dir, str) and task_dir.strip():
            task_dir = Path(task_dir)
        if isinstance(task_dir, Path) and "\x00" not in str(task_dir):
            object.__setattr__(self, "task_dir", task_dir)
        else:
            errors.append(
                "task_dir must be a non-empty path without NUL bytes, "
                f"got {self.task_dir!r}"
            )
        size = self.max_context_size
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            errors.append(f"max_context_size must be a positive integer, got {size!r}")
        if not isinstance(self.enable_persistence, bool):
            errors.append(
                f"enable_persistence must be a bool, got {self.enable_persistence!r}"
            )
        level = self.log_level
        if isinstance(level, str) and level.upper() in VALID_LOG_LEVELS:
            object.__setattr__(self, "log_level", level.upper())
        else:
            errors.append(f"log_level must be one of {VALID_LOG_LEVELS}, got {level!r}")
        if errors:
            raise InvalidConfigError("; ".join(errors))

    @property
    def log_level_number(self) -> int:
        """The `logging` module's number for `log_level` (e.g. 20 for INFO)."""
        return int(logging.getLevelName(self.log_level))

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, log_level: bool = True
    ) -> Settings:
        """Settings from `env` (default `os.environ`); every bad variable is reported.

        Unset or blank variables take the defaults. With `log_level=False`,
        `AIECS_LOG_LEVEL` is not read (the field keeps its default): for
        callers that do not use it, so its bad value does not break them.
        """
        source: Mapping[str, str] = os.environ if env is None else env
        errors: list[str] = []

        def raw(name: str) -> str | None:
            value = source.get(name)
            if value is None or not value.strip():
                return None
            return value.strip()

        task_dir = raw(ENV_TASK_DIR) or DEFAULT_TASK_DIR
        if "\x00" in task_dir:
            errors.append(
                f"{ENV_TASK_DIR} must not contain a NUL byte, got {task_dir!r}"
            )

        max_size = DEFAULT_MAX_CONTEXT_SIZE
        size_text = raw(ENV_MAX_CONTEXT_SIZE)
        if size_text is not None:
            try:
                max_size = int(size_text)
            except ValueError:
                max_size = 0
            if max_size <= 0:
                errors.append(
                    f"{ENV_MAX_CONTEXT_SIZE} must be a positive integer, "
                    f"got {size_text!r}"
                )

        enable = DEFAULT_ENABLE_PERSISTENCE
        flag_text = raw(ENV_ENABLE_PERSISTENCE)
        if flag_text is not None:
            if flag_text.lower() in _TRUE:
                enable = True
            elif flag_text.lower() in _FALSE:
                enable = False
            else:
                errors.append(
                    f"{ENV_ENABLE_PERSISTENCE} must be one of true/false/1/0/yes/no/"
                    f"on/off, got {flag_text!r}"
                )

        level = DEFAULT_LOG_LEVEL
        if log_level:
            try:
                level = log_level_from_env(source) or DEFAULT_LOG_LEVEL
            except InvalidConfigError as exc:
                errors.append(str(exc))

        if errors:
            raise InvalidConfigError("; ".join(errors))
        return cls(
            task_dir=Path(task_dir),
            max_context_size=max_size,
            enable_persistence=enable,
            log_level=level,
        )


TaskSettings = Settings
"""Alias: the settings are those of task contexts."""

PACKAGE_LOGGER = "aiecs_checkpoint"
"""The logger every logger of the package descends from."""


def log_level_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """`AIECS_LOG_LEVEL`, normalised (e.g. "DEBUG"); None when unset or blank.

    Raises `InvalidConfigError` naming the variable for any other value.
    """
    source: Mapping[str, str] = os.environ if env is None else env
    text = (source.get(ENV_LOG_LEVEL) or "").strip()
    if not text:
        return None
    if text.upper() not in VALID_LOG_LEVELS:
        raise InvalidConfigError(
            f"{ENV_LOG_LEVEL} must be one of {', '.join(VALID_LOG_LEVELS)}, "
            f"got {text!r}"
        )
    return text.upper()


_applied: dict[str, str] = {}


def apply_log_level(env: Mapping[str, str] | None = None) -> str | None:
    """Set the level of the `aiecs_checkpoint` logger from `AIECS_LOG_LEVEL`.

    Returns the level set, None when the variable is unset (the logger is left
    alone). A value is applied once: a level the application sets in code
    afterwards stays, until the variable changes. Raises `InvalidConfigError`
    naming the variable for a bad value.
    """
    level = log_level_from_env(env)
    if level is not None and _applied.get(PACKAGE_LOGGER) != level:
        logging.getLogger(PACKAGE_LOGGER).setLevel(level)
        _applied[PACKAGE_LOGGER] = level
    return level


def validate_config(env: Mapping[str, str] | None = None) -> Settings:
    """Validate the AIECS_* variables and return the settings they describe.

    Raises `InvalidConfigError` naming each bad variable and its value.
    """
    return Settings.from_env(env)


__all__ = [
    "DEFAULT_ENABLE_PERSISTENCE",
    "DEFAULT_LOG_LEVEL",
    "DEFAULT_MAX_CONTEXT_SIZE",
    "DEFAULT_TASK_DIR",
    "ENV_ENABLE_PERSISTENCE",
    "ENV_LOG_LEVEL",
    "ENV_MAX_CONTEXT_SIZE",
    "ENV_TASK_DIR",
    "PACKAGE_LOGGER",
    "VALID_LOG_LEVELS",
    "Settings",
    "TaskSettings",
    "apply_log_level",
    "log_level_from_env",
    "validate_config",
]
