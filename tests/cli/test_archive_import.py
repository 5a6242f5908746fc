"""Importing a thread with the ClickHouse archive on reaches both tiers, so
another process (another hot store) restores the imported thread."""

from __future__ import annotations

from aiecs_checkpoint import ContextEngine, ContextEngineSaver
from aiecs_checkpoint.cli import storage
from tests.cli import graphs
from tests.conftest import archive_settings


def test_an_imported_thread_is_archived_and_restored_elsewhere() -> None:
    source = ContextEngineSaver()
    graphs.populate(source)
    thread = storage.export_thread(source, "approval")
    settings = archive_settings()
    importer = ContextEngine(archive=settings)
    with ContextEngineSaver(importer) as saver:
        storage.import_thread(saver, "approval", thread)
        assert graphs.history(saver, "approval") == graphs.history(source, "approval")
    reader = ContextEngineSaver(ContextEngine(archive=settings))  # empty hot store
    with reader:
        assert graphs.history(reader, "approval") == graphs.history(source, "approval")
        assert graphs.resume(reader)["log"] == ["agent", "answer yes", "done"]
