"""The original ContextEngine's checkpoint helpers, over the saver's storage.

`store_checkpoint` / `get_checkpoint` / `list_checkpoints` are a second view of
the checkpoints `ContextEngineSaver` stores (one storage, two views): a helper
checkpoint is a LangGraph checkpoint whose `data` channel holds the dict, and a
graph's checkpoint read through `get_checkpoint` shows its channel values.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    CheckpointMetadata,
    CheckpointTuple,
    empty_checkpoint,
)

if TYPE_CHECKING:
    from aiecs_checkpoint.saver.saver import ContextEngineSaver

DATA_CHANNEL = "data"
"""Channel holding `checkpoint_data` of a helper checkpoint."""


def _view(t: CheckpointTuple) -> dict[str, Any]:
    """A checkpoint tuple in the original helper's shape."""
    configurable = t.config["configurable"]
    values = dict(t.checkpoint["channel_values"])
    helper = set(values) == {DATA_CHANNEL}
    return {
        "checkpoint_id": configurable["checkpoint_id"],
        "thread_id": configurable["thread_id"],
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "data": values[DATA_CHANNEL] if helper else values,
        "metadata": dict(t.metadata or {}),
        "created_at": t.checkpoint["ts"],
        "parent_checkpoint_id": (
            t.parent_config["configurable"]["checkpoint_id"]
            if t.parent_config
            else None
        ),
    }


class CheckpointAPI:
    """Mixin of `ContextEngine`: the seed's checkpoint helpers."""

    _helper_saver: ContextEngineSaver | None = None

    def _saver(self) -> ContextEngineSaver:
        if self._helper_saver is None:
            from aiecs_checkpoint.saver.saver import ContextEngineSaver

            serde = getattr(self, "serde", None)
            self._helper_saver = ContextEngineSaver(self, serde=serde)  # type: ignore[arg-type]
        return self._helper_saver

    async def store_checkpoint(
        self,
        thread_id: str,
        checkpoint_id: str,
        checkpoint_data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Store `checkpoint_data` as a checkpoint of `thread_id` (child of the
        thread's latest); True when stored."""
        if not isinstance(checkpoint_id, str) or not checkpoint_id:
            raise ValueError(
                f"checkpoint_id must be a non-empty str, got {checkpoint_id!r}"
            )
        saver = self._saver()
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        latest = await saver.aget_tuple(config)
        checkpoint = empty_checkpoint()
        checkpoint["id"] = checkpoint_id
        checkpoint["ts"] = datetime.now(timezone.utc).isoformat()
        previous = (
            latest.checkpoint["channel_versions"].get(DATA_CHANNEL) if latest else None
        )
        version = saver.get_next_version(
            None if previous is None else str(previous), None
        )
        checkpoint["channel_values"] = {DATA_CHANNEL: checkpoint_data}
        checkpoint["channel_versions"] = {DATA_CHANNEL: version}
        parent: RunnableConfig = latest.config if latest else config
        await saver.aput(
            parent,
            checkpoint,
            cast(CheckpointMetadata, dict(metadata or {})),
            {DATA_CHANNEL: version},
        )
        return True

    async def get_checkpoint(
        self, thread_id: str, checkpoint_id: str | None = None
    ) -> dict[str, Any] | None:
        """A checkpoint (the latest when `checkpoint_id` is None), or None."""
        configurable: dict[str, Any] = {"thread_id": thread_id}
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        found = await self._saver().aget_tuple({"configurable": configurable})
        return None if found is None else _view(found)

    async def list_checkpoints(
        self, thread_id: str, limit: int = 10
    ) -> list[dict[str, Any]]:
        """The thread's newest `limit` checkpoints, newest first."""
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        return [_view(t) async for t in self._saver().alist(config, limit=limit)]
