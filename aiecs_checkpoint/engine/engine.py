"""ContextEngine: the one storage engine behind the saver and the domain APIs.

`engine.core.EngineCore` chooses and runs the stores (memory, Redis, the
ClickHouse archive), `engine.domain_api.DomainAPI` adds the seed's sessions,
conversations, task contexts and checkpoint helpers; this class adds
configuration from the environment, health and metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiecs_checkpoint.engine.domain_api import DomainAPI, now_us
from aiecs_checkpoint.errors import InvalidConfigError, StoreError
from aiecs_checkpoint.stores.clickhouse.archive import ArchiveSettings
from aiecs_checkpoint.stores.ops import Blocking, Op


def redis_url_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The Redis URL the environment names, or None when it names none.

    `REDIS_URL` wins; otherwise `REDIS_HOST` (with `REDIS_PORT` 6379,
    `REDIS_DB` 1 and `REDIS_PASSWORD`, the original defaults) builds one.
    """
    env = os.environ if env is None else env
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    host = env.get("REDIS_HOST")
    if not host:
        return None
    port, db = env.get("REDIS_PORT", "6379"), env.get("REDIS_DB", "1")
    for name, raw in (("REDIS_PORT", port), ("REDIS_DB", db)):
        if not raw.isdigit():
            raise InvalidConfigError(
                f"{name} must be a non-negative integer, got {raw!r}"
            )
    password = env.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


class ContextEngine(DomainAPI):
    """Owns the stores shared by `ContextEngineSaver` and the domain APIs.

    See `EngineCore` for the options (Redis, TTLs, the archive, the serializer).
    """

    @classmethod
    def from_env(cls, **options: Any) -> ContextEngine:
        """An engine from `REDIS_URL` or `REDIS_HOST`/... (memory when unset),
        archiving to ClickHouse when `CLICKHOUSE_ENABLED=true`."""
        if "archive" not in options:
            options["archive"] = ArchiveSettings.from_env()
        url = redis_url_from_env()
        return cls(redis_url=url, **options) if url else cls(**options)

    # -- observability ---------------------------------------------------------------

    def _issues(self) -> Op[list[str]]:
        """What is wrong now: a fallback, and a failing archive (its writes or
        reads, or a ping from this check, off the event loop)."""
        issues = [self.degraded_reason] if self.degraded_reason else []
        if self.archive is not None:
            failing = yield Blocking(self.archive.probe)
            if failing:
                issues.append(failing)
        return issues

    def _health(
        self, issues: list[str], reachable: str | None, counts: dict[str, Any]
    ) -> dict[str, Any]:
        issues = issues + ([reachable] if reachable else [])
        return {
            "status": "degraded" if issues else "healthy",
            "storage_backend": self.storage_backend,
            "redis_connected": self.storage_backend == "redis"
            and self._connected
            and reachable is None,
            **counts,
            "issues": issues,
        }

    def _counts(self, stats: Any, checkpoints: int) -> dict[str, Any]:
        return {
            "total_sessions": stats.total_sessions,
            "active_sessions": stats.active_sessions,
            "sessions_by_status": stats.by_status,
            "total_messages": stats.total_messages,
            "conversation_sessions": stats.conversation_sessions,
            "total_checkpoints": checkpoints + stats.helper_checkpoints,
            "archive": None if self.archive is None else self.archive.metrics(),
        }

    def _counted(self) -> Op[dict[str, Any]]:
        """Ping the store, then read its counts (one operation, sync or async)."""
        start = time.perf_counter()
        yield from self.checkpoints.ping()
        self._latency.add(time.perf_counter() - start)
        stats = yield from self.domain.stats(now_us())
        checkpoints = yield from self.checkpoints.count_checkpoints()
        return self._counts(stats, checkpoints)

    def _checked(self) -> Op[dict[str, Any]]:
        """The health report: a store that fails is reported, not raised."""
        issues = yield from self._issues()
        try:
            counts = yield from self._counted()
        except StoreError as exc:
            return self._health(issues, str(exc), {})
        return self._health(issues, None, counts)

    def _metrics(self) -> Op[dict[str, Any]]:
        counts = yield from self._counted()
        return {
            "storage_backend": self.storage_backend,
            **counts,
            "storage_performance": self._latency.snapshot(),
        }

    async def health_check(self) -> dict[str, Any]:
        """Status ("healthy" or "degraded" with the issues) and store counts."""
        return await self.arun(self._checked())

    def health_check_sync(self) -> dict[str, Any]:
        """`health_check` for sync code."""
        return self.run(self._checked())

    async def get_metrics(self) -> dict[str, Any]:
        """Counts read from the store (valid across processes) and this process's
        storage latency."""
        return await self.arun(self._metrics())

    def get_metrics_snapshot(self) -> dict[str, Any]:
        """`get_metrics` for sync code."""
        return self.run(self._metrics())
