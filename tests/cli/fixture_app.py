"""`--saver tests.cli.fixture_app:saver`: an embedded memory store, populated
when the CLI imports this module (each CLI process has its own)."""

from aiecs_checkpoint import ContextEngineSaver
from tests.cli.graphs import populate

saver = ContextEngineSaver()
populate(saver)
