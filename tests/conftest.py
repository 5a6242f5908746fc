"""Shared fixtures: every saver-level test runs once per store.

`STORES` names the stores a test can run on; `make_saver(store)` builds a fresh
`ContextEngineSaver` on one of them. Tests take the `saver` fixture (or
`store_name` to build several savers) and so run on every store without being
copied.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aiecs_checkpoint import ContextEngine, ContextEngineSaver

STORES = ["memory"]


@asynccontextmanager
async def make_saver(store: str, **kwargs: Any) -> AsyncIterator[ContextEngineSaver]:
    """A fresh saver on `store`, closed afterwards."""
    if store == "memory":
        async with ContextEngineSaver(ContextEngine(), **kwargs) as saver:
            yield saver
        return
    raise ValueError(f"unknown store {store!r}")


@pytest.fixture(params=STORES)
def store_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def saver(store_name: str) -> AsyncIterator[ContextEngineSaver]:
    async with make_saver(store_name) as s:
        yield s


@pytest.fixture
def sync_saver(store_name: str) -> Iterator[ContextEngineSaver]:
    """A saver built outside any event loop, for the sync graph API."""
    if store_name == "memory":
        with ContextEngineSaver(ContextEngine()) as s:
            yield s
        return
    raise ValueError(f"unknown store {store_name!r}")
