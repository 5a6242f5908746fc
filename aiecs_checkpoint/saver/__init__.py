"""The LangGraph checkpointer and the pure codec it shares between sync and async."""

from aiecs_checkpoint.saver.saver import ContextEngineSaver

__all__ = ["ContextEngineSaver"]
