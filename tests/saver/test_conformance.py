"""The official LangGraph checkpointer conformance suite, on every store.

All eight capabilities (the five base ones plus delete_for_runs, copy_thread and
prune) must be detected and pass: 81 of 81 tests.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from aiecs_checkpoint import ContextEngineSaver
from tests.conftest import make_saver

EXPECTED_TESTS = 81


async def test_conformance_suite_passes_every_capability(store_name: str) -> None:
    async def factory() -> AsyncGenerator[ContextEngineSaver, None]:
        async with make_saver(store_name) as saver:
            yield saver

    registered = checkpointer_test(name=f"ContextEngineSaver[{store_name}]")(factory)
    report = await validate(registered, progress=ProgressCallbacks.verbose())
    results = report.results
    failures = {c: r.failures for c, r in results.items() if not r.passed}
    assert not failures, failures
    assert all(r.detected for r in results.values()), results
    passed = sum(r.tests_passed for r in results.values())
    assert len(results) == 8 and passed == EXPECTED_TESTS, (len(results), passed)
    print(f"conformance[{store_name}]: 8/8 capabilities, {passed}/{EXPECTED_TESTS}")
