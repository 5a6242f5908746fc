"""`--from tests.cli.fixture_source:saver`: LangGraph's InMemorySaver holding
the threads of `graphs.populate_source`, made when the CLI imports this module
(the path any saver object takes, the official Redis saver's included)."""

from langgraph.checkpoint.memory import InMemorySaver

from tests.cli.graphs import populate_source

saver = InMemorySaver()
populate_source(saver)
