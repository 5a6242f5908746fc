"""`ModelUsageTracker`: a LangChain callback handler recording model and tool calls.

Given in a graph run's config (``config={"callbacks": [ModelUsageTracker()]}``),
it records every chat-model (and LLM) call made inside a node into the thread's
TaskContext, through the same path as `track_model_usage`: model name,
provider, token usage from the response's `usage_metadata` (or the provider's
`token_usage`), latency and the error of a failed call; its entries have the
same keys as `track_model_usage`'s. Tool calls become `tool_call` context
updates. Calls made outside a graph node of a `ContextEngineSaver` graph are
not recorded (logged once at WARNING, unless tracking is optional).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from aiecs_checkpoint.errors import TrackingError
from aiecs_checkpoint.tracking.nodes import (
    describe_error,
    model_usage_data,
    running_task,
    tracking_mode,
)
from aiecs_checkpoint.tracking.records import Stamp, TaskRecorder

logger = logging.getLogger("aiecs_checkpoint.tracking")

MAX_TEXT = 2_000
"""Tool inputs and outputs are kept up to this many characters."""

MAX_OPEN_CALLS = 10_000
"""Calls started and not ended (e.g. abandoned streams) kept at most; the
oldest are forgotten first."""


@dataclass(slots=True)
class _Call:
    saver: TaskRecorder
    stamp: Stamp
    started: float
    data: dict[str, Any]


class ModelUsageTracker(BaseCallbackHandler):
    """Records model calls (tokens, latency, errors) and tool calls of graph nodes.

    Runs inline (`run_inline`), in the node's own context, so it knows which
    task made each call; it does no I/O (records are saved with the task's
    writes).
    """

    run_inline = True
    raise_error = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: OrderedDict[UUID, _Call] = OrderedDict()
        self._warned = False

    # -- models ----------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_start(run_id, "chat", serialized, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_start(run_id, "completion", serialized, metadata, kwargs)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        call = self._pop(run_id)
        if call is not None:
            self._finish_model(call, None, token_usage(response))

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, **kwargs: Any
    ) -> None:
        call = self._pop(run_id)
        if call is not None:
            self._finish_model(call, error, {})

    def _model_start(
        self,
        run_id: UUID,
        mode: str,
        serialized: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        params = kwargs.get("invocation_params") or {}
        meta = metadata or {}
        model = (
            meta.get("ls_model_name")
            or params.get("model")
            or params.get("model_name")
            or kwargs.get("name")
            or (serialized or {}).get("name")
            or "unknown"
        )
        provider = meta.get("ls_provider") or params.get("_type") or "unknown"
        data = {"model_id": str(model), "provider_id": str(provider), "mode": mode}
        self._start(run_id, data)

    def _finish_model(
        self, call: _Call, error: BaseException | None, tokens: Mapping[str, int]
    ) -> None:
        data = model_usage_data(
            call.data["model_id"],
            call.data["provider_id"],
            call.data["mode"],
            input_tokens=tokens.get("input_tokens"),
            output_tokens=tokens.get("output_tokens"),
            total_tokens=tokens.get("total_tokens"),
            latency_ms=round((time.perf_counter() - call.started) * 1000, 3),
            error=error,
        )
        call.saver.record("model_usage", data, call.stamp)

    # -- tools -----------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        data = {"name": str(name), "input": _clip(inputs if inputs else input_str)}
        self._start(run_id, data)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        call = self._pop(run_id)
        if call is not None:
            self._finish_tool(
                call, {"output": _clip(getattr(output, "content", output))}
            )

    def on_tool_error(
        self, error: BaseException, *, run_id: UUID, **kwargs: Any
    ) -> None:
        call = self._pop(run_id)
        if call is not None:
            self._finish_tool(call, {"error": describe_error(error)})

    def _finish_tool(self, call: _Call, outcome: dict[str, Any]) -> None:
        latency = round((time.perf_counter() - call.started) * 1000, 3)
        update = {
            "update_type": "tool_call",
            "data": {**call.data, **outcome},
            "metadata": {"latency_ms": latency},
        }
        call.saver.record("context_update", update, call.stamp)

    # -- bookkeeping -----------------------------------------------------------------

    def _start(self, run_id: UUID, data: dict[str, Any]) -> None:
        try:
            saver, stamp = running_task("ModelUsageTracker")
        except TrackingError as exc:
            if not self._warned and tracking_mode() == "required":
                self._warned = True
                logger.warning("ModelUsageTracker is not recording: %s", exc)
            return
        with self._lock:
            self._calls[run_id] = _Call(saver, stamp, time.perf_counter(), data)
            while len(self._calls) > MAX_OPEN_CALLS:
                self._calls.popitem(last=False)

    def _pop(self, run_id: UUID) -> _Call | None:
        with self._lock:
            return self._calls.pop(run_id, None)


def token_usage(response: LLMResult) -> dict[str, int]:
    """Input, output and total tokens of a response (summed over generations);
    {} when the model reports none."""
    totals: dict[str, int] = {}
    for generations in response.generations:
        for g in generations:
            usage = getattr(getattr(g, "message", None), "usage_metadata", None)
            if usage:
                for key in ("input_tokens", "output_tokens", "total_tokens"):
                    totals[key] = totals.get(key, 0) + int(usage.get(key, 0))
    if totals:
        return totals
    reported = (response.llm_output or {}).get("token_usage") or {}
    names = {
        "prompt_tokens": "input_tokens",
        "completion_tokens": "output_tokens",
        "total_tokens": "total_tokens",
    }
    return {
        ours: int(reported[theirs])
        for theirs, ours in names.items()
        if theirs in reported
    }


def _clip(value: Any) -> str:
    """A tool's input or output as text, clipped (objects a tool receives or
    returns need not be serializable)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


__all__ = ["ModelUsageTracker", "token_usage"]
