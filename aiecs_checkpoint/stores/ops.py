"""Store operations written once, run by a sync or an async executor.

Every store operation is a generator, an `Op[T]`: it yields the I/O requests it
needs, receives each reply, and returns its result. It never performs I/O
itself, so one implementation serves the sync and the async API (the sans-I/O
style of h11 and httpcore). `Runner` drives an operation with blocking I/O and
`AsyncRunner` with awaitable I/O; both throw a failed request's exception back
into the operation, so `try`/`finally` inside an operation behaves as in plain
code. An operation that needs no I/O (the memory store) yields no request.

A listing is a `Stream[T]`: besides requests it yields `Emit(item)` for each
result, so results reach the caller page by page (`Runner.iterate`,
`AsyncRunner.iterate`), and a caller that stops early stops the I/O too.
`AsyncRunner` yields to the event loop after each operation (each item of a
listing) that performed no I/O, so no stall lasts longer than one.

Requests are plain objects a runner maps to a handler by type: each backend
defines its own (`stores.redis.client.Call`), and `Blocking` runs a blocking
function (ClickHouse reads): inline under `Runner`, in a worker thread under
`AsyncRunner`, so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Request:
    """Base of everything an operation may yield to its runner."""

    __slots__ = ()


Op = Generator[Request, Any, T]
"""An operation: yields requests, receives their replies, returns a `T`."""

NO_IO: tuple[Request, ...] = ()
"""`yield from NO_IO` makes a function that needs no I/O an `Op`."""


@dataclass(frozen=True, slots=True)
class Emit(Request, Generic[T]):
    """A result of a `Stream`, handed to the caller as it is produced."""

    item: T


Stream = Generator[Request, Any, None]
"""A listing: yields requests and `Emit` items (one per result)."""


@dataclass(frozen=True, slots=True)
class Blocking(Request):
    """Run `fn(*args)`, a blocking call, off the event loop when there is one."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


def done(value: T) -> Op[T]:
    """An operation that needs no I/O and returns `value`."""
    yield from NO_IO
    return value


def advance(stream: Stream) -> Op[tuple[bool, Any]]:
    """Drive `stream` to its next item: (True, item), or (False, None) at its end.

    Requests of the stream are passed up to the runner, and a failed request's
    exception is thrown back into the stream, as a runner would.
    """
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            req = stream.throw(error) if error is not None else stream.send(reply)
        except StopIteration:
            return False, None
        if isinstance(req, Emit):
            return True, req.item
        reply, error = None, None
        try:
            reply = yield req
        except BaseException as exc:
            error = exc


class _Head:
    """Heap entry: a stream's current item, largest key popping first."""

    __slots__ = ("item", "key", "stream")

    def __init__(self, key: Any, item: Any, stream: Stream) -> None:
        self.key = key
        self.item = item
        self.stream = stream

    def __lt__(self, other: _Head) -> bool:
        return bool(self.key > other.key)


def merge_newest(streams: Sequence[Stream], key: Callable[[Any], Any]) -> Stream:
    """Merge streams that each emit in descending `key` order, lazily: a stream
    is read only as far as the merged output needs it."""
    heap: list[_Head] = []
    try:
        for stream in streams:
            found, item = yield from advance(stream)
            if found:
                heap.append(_Head(key(item), item, stream))
        heapq.heapify(heap)
        while heap:
            head = heap[0]
            yield Emit(head.item)
            found, item = yield from advance(head.stream)
            if found:
                heapq.heapreplace(heap, _Head(key(item), item, head.stream))
            else:
                heapq.heappop(heap)
    finally:
        for stream in streams:
            stream.close()


def _blocking(req: Blocking) -> Any:
    return req.fn(*req.args)


def _to_thread(req: Blocking) -> Awaitable[Any]:
    return asyncio.to_thread(req.fn, *req.args)


class Runner:
    """Runs operations with blocking I/O: `handlers` maps a request type to the
    function performing it (`Blocking` is built in)."""

    def __init__(self, handlers: Mapping[type, Callable[[Any], Any]]) -> None:
        self._handlers: dict[type, Callable[[Any], Any]] = {
            Blocking: _blocking,
            **handlers,
        }

    def run(self, op: Op[T]) -> T:
        """Drive `op` to its result; a failed request's exception is thrown
        back into it. A flat loop: an operation that yields nothing (the
        memory store) costs one `send`."""
        handlers = self._handlers
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                req = op.send(reply) if error is None else op.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            handler = handlers[type(req)]
            try:
                reply, error = handler(req), None
            except BaseException as exc:
                reply, error = None, exc

    def iterate(self, stream: Stream) -> Iterator[Any]:
        """The items of `stream`, each as soon as it is emitted."""
        with closing(stream):
            while (found := self.run(advance(stream)))[0]:
                yield found[1]


class AsyncRunner:
    """Runs operations with awaitable I/O: `handlers` maps a request type to a
    coroutine function performing it (`Blocking` goes to a worker thread)."""

    def __init__(self, handlers: Mapping[type, Callable[[Any], Awaitable[Any]]]):
        self._handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {
            Blocking: _to_thread,
            **handlers,
        }

    async def run(self, op: Op[T]) -> T:
        """Drive `op` to its result (as `Runner.run`, awaiting each request).
        An operation that awaited no I/O (the memory store's) yields to the
        event loop once before returning, so a coroutine's successive calls
        never hold the loop for more than one."""
        handlers = self._handlers
        reply: Any = None
        error: BaseException | None = None
        awaited = False
        while True:
            try:
                req = op.send(reply) if error is None else op.throw(error)
            except StopIteration as stop:
                if not awaited:
                    await asyncio.sleep(0)
                return stop.value  # type: ignore[no-any-return]
            awaited = True
            handler = handlers[type(req)]
            try:
                reply, error = await handler(req), None
            except BaseException as exc:
                reply, error = None, exc

    async def iterate(self, stream: Stream) -> AsyncIterator[Any]:
        """The items of `stream`, each as soon as it is emitted."""
        with closing(stream):
            while (found := await self.run(advance(stream)))[0]:
                yield found[1]


__all__ = [
    "NO_IO",
    "AsyncRunner",
    "Blocking",
    "Emit",
    "Op",
    "Request",
    "Runner",
    "Stream",
    "advance",
    "done",
    "merge_newest",
]
