"""Fuzzing ids, names, metadata and list arguments on every store.

Thread ids, namespaces, checkpoint ids, task ids, channel names, metadata keys
and values, filters and `before` / `limit` are drawn with `:`, `{`, `}`, `*`,
`?`, `[`, newlines, NUL, lone surrogates, empty and long strings and non-ASCII
(`tests/fuzz/strategies.py`). On memory, Redis, Redis Cluster and both with the
ClickHouse archive, every example checks that:

- each call either makes a correct round trip or raises an
  `AiecsCheckpointError` subclass, and a call that raised stored nothing;
- no two distinct identities (thread, namespace, checkpoint id) share storage:
  both are written and read back, then one thread is deleted and the other
  stays;
- ClickHouse only ever sees bound parameters: the archive runs against its own
  ClickHouse front that logs every statement's text, and no fuzzed value ever
  appears in it, nor does the set of distinct statements grow with the inputs.

Run:

    python -m pytest -q tests/fuzz                           # `ci` profile, ~2 min
    HYPOTHESIS_PROFILE=deep python -m pytest -q tests/fuzz   # thousands of cases

(`deep` runs 2,000 examples per test and store; expect tens of minutes.) The
archive stores take the `slow` mark; `-m "not slow"` leaves memory and Redis.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from aiecs_checkpoint import AiecsCheckpointError, ContextEngine, ContextEngineSaver
from tests.conftest import STORES, archive_settings, engine_for
from tests.fuzz.strategies import FUZZ, before, ident, limit, metadata, strings_in
from tests.servers_clickhouse import ClickHouseServer, external_clickhouse_url

REJECTED = object()
"""What `attempt` returns when the call raised a typed error."""


def attempt(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The call's result, or REJECTED when it raised an AiecsCheckpointError.

    Any other exception propagates and fails the example.
    """
    try:
        result = call(*args, **kwargs)
        return list(result) if call.__name__ == "list" else result
    except AiecsCheckpointError as error:
        note(f"{call.__name__} rejected: {type(error).__name__}: {error}")
        return REJECTED


@dataclass(frozen=True)
class Identity:
    """One checkpoint's identity and what is stored under it."""

    thread: str
    ns: str
    cid: str
    task: str
    channel: str
    write_channel: str
    metadata: dict[str, Any]

    def config(self, with_id: bool = True) -> dict[str, Any]:
        conf: dict[str, Any] = {"thread_id": self.thread, "checkpoint_ns": self.ns}
        if with_id:
            conf["checkpoint_id"] = self.cid
        return {"configurable": conf}

    def key(self) -> tuple[str, str, str]:
        return (self.thread, self.ns, self.cid)

    def value(self) -> str:
        return f"value of {self.key()!r}"

    def version(self) -> str:
        """The channel's version: one per identity, as a channel's version
        names one value in a thread (LangGraph's contract)."""
        return hashlib.sha256(repr(self.key()).encode()).hexdigest()[:16]

    def strings(self) -> list[str]:
        fields = [self.thread, self.ns, self.cid, self.task, self.channel]
        return [*fields, self.write_channel, *strings_in(self.metadata)]


identities = st.builds(Identity, ident, ident, ident, ident, ident, ident, metadata)


@st.composite
def near(draw: st.DrawFn, a: Identity) -> Identity:
    """Another identity, often one a naive key layout would confuse with `a`."""
    how = draw(st.integers(0, 6))
    b = draw(identities)
    cut = draw(st.integers(0, len(a.thread)))
    thread, ns, cid = {
        0: (b.thread, b.ns, b.cid),
        1: (a.thread + ":" + a.ns, "", a.cid),
        2: (a.thread[:cut], a.thread[cut:] + a.ns, a.cid),
        3: (quote(a.thread.encode("utf-8", "surrogatepass"), safe=""), a.ns, a.cid),
        4: (a.thread, a.ns + "\0", a.cid),
        5: (a.thread, a.ns, a.cid + b.cid + "x"),
        6: (a.thread, b.ns, a.cid),
    }[how]
    return Identity(thread, ns, cid, b.task, b.channel, b.write_channel, b.metadata)


def checkpoint_of(who: Identity) -> Any:
    cp = empty_checkpoint()
    cp["id"] = who.cid
    cp["channel_values"] = {who.channel: who.value()}
    cp["channel_versions"] = {who.channel: who.version()}
    return cp


# -- ClickHouse: an archive front that logs every statement ---------------------

DB_NAME = re.compile(r"t[0-9a-f]{12}")


class StatementLog:
    """The statements one ClickHouse front received, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.templates: set[str] = set()

    def new(self) -> list[dict[str, Any]]:
        """Statements logged since the last call."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        lines = [json.loads(line) for line in complete.splitlines()]
        self.templates.update(DB_NAME.sub("DB", line["sql"]) for line in lines)
        return lines


@pytest.fixture(scope="module")
def logged_clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """(settings factory, statement log) of a ClickHouse front of this module's own."""
    if external_clickhouse_url():
        pytest.skip("the statement log needs the test front (CLICKHOUSE_URL is set)")
    path = tmp_path_factory.mktemp("chlog") / "statements.jsonl"
    server = ClickHouseServer(statement_log=path).start()
    try:
        yield (
            lambda: archive_settings(host=server.host, port=server.port),
            StatementLog(path),
        )
    finally:
        server.close()


def _params(stores: list[Any]) -> list[Any]:
    """Stores, with the archive ones marked slow (their examples cost ~10x)."""
    out = []
    for store in stores:
        name = store if isinstance(store, str) else store.values[0]
        marks = list(getattr(store, "marks", ()))
        if name.endswith("+archive"):
            marks.append(pytest.mark.slow)
        out.append(pytest.param(name, marks=marks, id=name))
    return out


FUZZ_STORES = _params([*STORES[:3], STORES[4]])
"""memory, redis, cluster, redis+archive (memory+archive is fuzzed by the
listing and restore tests below)."""
ALL_STORES = _params(STORES)


@pytest.fixture
def fuzz_saver(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """(saver, statement log or None) on the store the test is parametrized with."""
    store = request.param
    log = None
    options: dict[str, Any] = {}
    if store.endswith("+archive"):
        make_settings, log = request.getfixturevalue("logged_clickhouse")
        options["archive"] = make_settings()
    with ContextEngineSaver(engine_for(store, **options)) as saver:
        yield saver, log


def check_bound_parameters(
    saver: ContextEngineSaver, log: Any, fuzzed: list[str]
) -> None:
    """No fuzzed value (or its quoted form) appears in any statement's text."""
    if log is None:
        return
    archive = saver.engine.archive
    assert archive is not None
    archive.flush(timeout=30)
    distinctive = {s for s in fuzzed if len(s.strip()) >= 6}
    for statement in log.new():
        sql = statement["sql"]
        for s in distinctive:
            quoted = s.replace("\\", "\\\\").replace("'", "\\'")
            assert s not in sql and quoted not in sql, (
                f"fuzzed value {s!r} sent inside SQL text: {sql[:300]!r}"
            )


def check_templates(log: Any) -> None:
    """The distinct statements (database names aside) stay few: a value
    interpolated into SQL would make one per example."""
    if log is not None:
        assert len(log.templates) < 60, sorted(log.templates)


def never_written(a: Identity, b: Identity) -> str:
    """A thread id made of fuzzed ones that no example writes (reading it
    on an archive store queries ClickHouse with it)."""
    return f"{b.thread}\x01{a.thread}\x01{uuid.uuid4()}"


# -- the properties --------------------------------------------------------------


NOTHING, CHECKPOINT, WITH_WRITE = 0, 1, 2
"""What `write` stored: nothing, the checkpoint only, or it and its write."""


def write(saver: ContextEngineSaver, who: Identity) -> int:
    """Put `who`'s checkpoint, then one write; say how far it got."""
    versions = {who.channel: who.version()}
    put = attempt(
        saver.put, who.config(False), checkpoint_of(who), who.metadata, versions
    )
    if put is REJECTED:
        return NOTHING
    assert put["configurable"]["checkpoint_id"] == who.cid
    assert put["configurable"]["thread_id"] == who.thread
    assert put["configurable"]["checkpoint_ns"] == who.ns
    writes = [(who.write_channel, who.value())]
    if attempt(saver.put_writes, who.config(), writes, who.task) is REJECTED:
        return CHECKPOINT
    return WITH_WRITE


def reference_metadata(who: Identity) -> dict[str, Any]:
    """`who`'s metadata as LangGraph's InMemorySaver reads it back: LangGraph
    strips NUL from top-level string values, and its serializer turns a lone
    surrogate into "?" (a documented LangGraph behaviour, kept as is)."""
    ref = InMemorySaver()
    conf = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    versions = {who.channel: who.version()}
    stored = ref.put(conf, checkpoint_of(who), who.metadata, versions)
    got = ref.get_tuple(stored)
    assert got is not None
    return dict(got.metadata)


def check_read(saver: ContextEngineSaver, who: Identity, written: int) -> None:
    """`who` reads back as `write` stored it (a refused call stored nothing):
    not at all (None or a typed error), or with exactly its stored writes."""
    if written == NOTHING and not who.cid:
        return  # an empty checkpoint_id reads the latest (LangGraph's rule)
    got = attempt(saver.get_tuple, who.config())
    if got is REJECTED:
        assert not written, f"{who.key()!r} was stored but cannot be read"
        return
    if got is None:
        assert not written, f"{who.key()!r} was stored but reads as None"
        return
    assert got.checkpoint["id"] == who.cid
    assert got.config["configurable"]["thread_id"] == who.thread
    assert got.config["configurable"]["checkpoint_ns"] == who.ns
    assert got.checkpoint["channel_values"] == {who.channel: who.value()}
    expected = reference_metadata(who)
    for k in who.metadata:
        assert got.metadata.get(k) == expected[k], (k, got.metadata)
    assert written != NOTHING, f"{who.key()!r} was refused but is stored"
    writes = [(who.task, who.write_channel, who.value())]
    assert got.pending_writes == (writes if written == WITH_WRITE else [])


@pytest.mark.parametrize("fuzz_saver", FUZZ_STORES, indirect=True)
def test_distinct_identities_never_share_storage(fuzz_saver: tuple[Any, Any]) -> None:
    saver, log = fuzz_saver

    @FUZZ
    @given(data=st.data(), a=identities)
    def example(data: st.DataObject, a: Identity) -> None:
        b = data.draw(near(a).filter(lambda b: b.key() != a.key()), label="b")
        for who in (a, b):
            attempt(saver.delete_thread, who.thread)
        written_a = write(saver, a)
        written_b = write(saver, b)
        check_read(saver, a, written_a)
        check_read(saver, b, written_b)
        ghost = {"configurable": {"thread_id": never_written(a, b)}}
        assert attempt(saver.get_tuple, ghost) in (None, REJECTED)
        if a.thread != b.thread and written_a and written_b:
            assert attempt(saver.delete_thread, a.thread) is None
            assert attempt(saver.get_tuple, a.config()) in (None, REJECTED)
            check_read(saver, b, written_b)
            listed = attempt(saver.list, {"configurable": {"thread_id": b.thread}})
            assert [t.checkpoint["id"] for t in listed] == [b.cid]
        check_bound_parameters(saver, log, a.strings() + b.strings())

    example()
    check_templates(log)


@pytest.mark.parametrize("fuzz_saver", FUZZ_STORES, indirect=True)
def test_list_filters_before_and_limit(fuzz_saver: tuple[Any, Any]) -> None:
    saver, log = fuzz_saver

    @FUZZ
    @given(data=st.data(), whos=st.lists(identities, min_size=1, max_size=3))
    def example(data: st.DataObject, whos: list[Identity]) -> None:
        thread = whos[0].thread
        whos = [
            Identity(
                thread,
                w.ns,
                f"{i}-{w.cid}",
                w.task,
                w.channel,
                w.write_channel,
                w.metadata,
            )
            for i, w in enumerate(whos)
        ]
        attempt(saver.delete_thread, thread)
        stored = [w for w in whos if write(saver, w)]
        source = data.draw(st.sampled_from(whos), label="filter source")
        filter_ = data.draw(
            st.one_of(
                st.none(),
                st.just(source.metadata),
                st.just(dict(list(source.metadata.items())[:1])),
                metadata,
                st.integers(),
                ident,
            ),
            label="filter",
        )
        lim = data.draw(limit, label="limit")
        bef = data.draw(before(whos[-1].cid), label="before")
        got = attempt(
            saver.list,
            {"configurable": {"thread_id": thread}},
            filter=filter_,
            before=bef,
            limit=lim,
        )
        if got is REJECTED:
            return
        assert isinstance(filter_, (dict, type(None)))
        assert lim is None or (
            isinstance(lim, int) and not isinstance(lim, bool) and lim >= 0
        )
        matching = {
            (w.ns, w.cid)
            for w in stored
            if all(
                k in w.metadata and w.metadata[k] == v
                for k, v in (filter_ or {}).items()
            )
        }
        ids = [
            (t.config["configurable"]["checkpoint_ns"], t.checkpoint["id"]) for t in got
        ]
        assert len(ids) == len(set(ids))
        assert set(ids) <= matching
        if lim is not None:
            assert len(ids) <= lim
        if bef is None:
            assert len(ids) == (
                len(matching) if lim is None else min(lim, len(matching))
            )
        check_bound_parameters(
            saver, log, [s for w in whos for s in w.strings()] + strings_in(filter_)
        )

    example()
    check_templates(log)


@pytest.mark.parametrize("fuzz_saver", ALL_STORES, indirect=True)
def test_list_threads_filters_limit_and_cursor(fuzz_saver: tuple[Any, Any]) -> None:
    saver, log = fuzz_saver

    @FUZZ
    @given(data=st.data(), a=identities)
    def example(data: st.DataObject, a: Identity) -> None:
        attempt(saver.delete_thread, a.thread)
        written = write(saver, a)
        filter_ = data.draw(
            st.one_of(st.none(), st.just(a.metadata), metadata, ident), label="filter"
        )
        lim = data.draw(st.one_of(limit, st.just(1000)), label="limit")
        cursor = data.draw(st.one_of(st.none(), ident, st.integers()), label="cursor")
        page = attempt(saver.list_threads, filter_, lim, cursor)
        if page is not REJECTED and cursor is None and written and lim == 1000:
            if filter_ is None or filter_ == a.metadata:
                assert a.thread in [info.thread_id for info in page]
        if page is not REJECTED and page:
            again = attempt(saver.list_threads, filter_, 1000, page[-1])
            assert again is not REJECTED
            assert not {i.thread_id for i in again} & {i.thread_id for i in page}
        check_bound_parameters(saver, log, a.strings() + strings_in(filter_))
        check_bound_parameters(saver, log, strings_in(cursor))

    example()
    check_templates(log)


@pytest.mark.parametrize("fuzz_saver", [ALL_STORES[3]], indirect=True)
def test_restore_from_archive_keeps_identities_apart(
    fuzz_saver: tuple[Any, Any],
) -> None:
    """Two fuzzed identities written through memory+archive are restored from
    ClickHouse by a new process's saver (an empty memory store on the same
    archive), each as written and apart, by bound parameters; a thread never
    written reads as nothing."""
    saver, log = fuzz_saver
    archive = saver.engine.archive
    assert archive is not None

    @FUZZ
    @given(data=st.data(), a=identities)
    def example(data: st.DataObject, a: Identity) -> None:
        b = data.draw(near(a).filter(lambda b: b.thread != a.thread), label="b")
        for who in (a, b):
            attempt(saver.delete_thread, who.thread)
        written_a, written_b = write(saver, a), write(saver, b)
        assert archive.flush(timeout=30)
        engine = ContextEngine(archive=archive.settings)
        with ContextEngineSaver(engine) as reader:
            check_read(reader, a, written_a)
            check_read(reader, b, written_b)
            ghost = {"configurable": {"thread_id": never_written(a, b)}}
            assert attempt(reader.get_tuple, ghost) in (None, REJECTED)
        check_bound_parameters(saver, log, a.strings() + b.strings())

    example()
    check_templates(log)


def test_fuzz_ids_are_not_all_rejected() -> None:
    """Guard against a vacuous run: the strategies produce ids every store keeps."""
    with ContextEngineSaver() as saver:
        who = Identity(
            "a:{b}*?[\n", "ns\u00e9", str(uuid.uuid4()), "t", "c", "w", {"k": "v"}
        )
        assert write(saver, who) == WITH_WRITE
        check_read(saver, who, WITH_WRITE)
