"""The `aiecs-checkpoint` command line: inspect, export, import and clean up
threads (`python -m aiecs_checkpoint --help`)."""

from aiecs_checkpoint.cli.app import cli, main

__all__ = ["cli", "main"]
