"""The storage engine shared by the saver and the domain APIs."""

from aiecs_checkpoint.engine.engine import ContextEngine

__all__ = ["ContextEngine"]
