"""Property-based tests: round-trips of arbitrary values and a model-based test.

Hypothesis does not mix with function-scoped async fixtures, so every example
builds its own saver with `make_saver` (entered on a private event loop, see
`open_saver`) and drives it through the sync API, or through the async API on
that same loop when an example draws `use_async`.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine as hypothesis_engine
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    Checkpoint,
    CheckpointTuple,
    empty_checkpoint,
    get_serializable_checkpoint_metadata,
)

from aiecs_checkpoint import ContextEngineSaver
from tests.conftest import STORES, make_saver

# -- helpers ---------------------------------------------------------------------------


def _slow_beyond(fast: set[str]) -> list[Any]:
    """STORES with every store outside `fast` marked `slow`: the long
    hypothesis runs on the Cluster and the archive stores run in the slow CI
    step (`scripts/test -m slow`), keeping the default run short."""
    return [
        s
        if (getattr(s, "values", (s,))[0] in fast)
        else pytest.param(
            *getattr(s, "values", (s,)),
            marks=[*getattr(s, "marks", ()), pytest.mark.slow],
        )
        for s in STORES
    ]


@contextmanager
def open_saver(
    store: str, **kwargs: Any
) -> Iterator[tuple[ContextEngineSaver, asyncio.AbstractEventLoop]]:
    """A fresh saver from `make_saver`, plus the private loop that opened it.

    The loop is not running while the body executes, so the sync API is used
    from a thread without a running loop (as in a sync graph), and the async API
    is driven with `loop.run_until_complete`.
    """
    loop = asyncio.new_event_loop()
    try:
        manager = make_saver(store, **kwargs)
        saver = loop.run_until_complete(manager.__aenter__())
        try:
            yield saver, loop
        finally:
            loop.run_until_complete(manager.__aexit__(None, None, None))
    finally:
        loop.close()


def cold_reader(saver: ContextEngineSaver) -> ContextEngineSaver:
    """Another saver on the same engine, with empty process-local caches."""
    return ContextEngineSaver(saver.engine, serde=saver.serde)


def cfg(
    thread_id: str, checkpoint_ns: str | None = "", checkpoint_id: str | None = None
) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread_id}
    if checkpoint_ns is not None:
        conf["checkpoint_ns"] = checkpoint_ns
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def full_cfg(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def ckpt_id(n: int) -> str:
    """Checkpoint ids that sort by creation, as uuid6 ids do."""
    return f"{n:08x}-0000-6000-8000-000000000000"


def make_checkpoint(
    cid: str, values: dict[str, Any], versions: dict[str, Any]
) -> Checkpoint:
    checkpoint = empty_checkpoint()
    checkpoint["id"] = cid
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = dict(versions)
    return checkpoint


def expected_checkpoint(checkpoint: Checkpoint, values: dict[str, Any]) -> Checkpoint:
    out = copy.deepcopy({k: v for k, v in checkpoint.items() if k != "channel_values"})
    out["channel_values"] = copy.deepcopy(values)
    return out  # type: ignore[return-value]


# -- strategies ------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
scalars = st.one_of(
    text,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(text, children, max_size=4),
    ),
    max_leaves=10,
)
metadata_keys = text.filter(lambda k: not k.startswith("__"))
metadata_dicts = st.dictionaries(metadata_keys, json_values, max_size=5)
channel_names = st.text(
    st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8
)

# A list step: each element is either an element of the previous list (by
# index, so the very same object) or a new value.
picks = st.one_of(
    st.tuples(st.just("old"), st.integers(min_value=0, max_value=40)),
    st.tuples(st.just("new"), json_values),
)
list_steps = st.lists(
    st.tuples(st.lists(picks, max_size=8), st.booleans(), st.booleans()),
    min_size=1,
    max_size=8,
)


def build_list(
    previous: list[Any], step: list[tuple[str, Any]], fresh: int
) -> list[Any]:
    out: list[Any] = []
    for i, (kind, arg) in enumerate(step):
        if kind == "old" and previous:
            out.append(previous[arg % len(previous)])
        elif kind == "old":
            out.append({"fresh": fresh, "i": i})
        else:
            out.append({"new": arg} if i % 2 else arg)
    return out


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
@settings(max_examples=60, deadline=None)
@given(
    values=st.dictionaries(channel_names, json_values, max_size=5),
    metadata=metadata_dicts,
    use_async=st.booleans(),
)
def test_json_channel_values_and_metadata_round_trip_exactly(
    store: str, values: dict[str, Any], metadata: dict[str, Any], use_async: bool
) -> None:
    with open_saver(store) as (saver, loop):
        config = cfg("thread", "")
        checkpoint = make_checkpoint(ckpt_id(1), values, {c: "1" for c in values})
        new_versions = {c: "1" for c in values}
        if use_async:
            stored = loop.run_until_complete(
                saver.aput(config, checkpoint, metadata, new_versions)
            )
        else:
            stored = saver.put(config, checkpoint, metadata, new_versions)
        assert stored == full_cfg("thread", "", ckpt_id(1))

        want = CheckpointTuple(
            config=stored,
            checkpoint=expected_checkpoint(checkpoint, values),
            metadata=get_serializable_checkpoint_metadata(config, metadata),
            parent_config=None,
            pending_writes=[],
        )
        for reader in (saver, cold_reader(saver)):
            assert reader.get_tuple(cfg("thread")) == want
            assert reader.get_tuple(stored) == want
            assert list(reader.list(cfg("thread"))) == [want]
            assert loop.run_until_complete(reader.aget_tuple(stored)) == want
        # every user key comes back with its value (NUL is stripped from
        # top-level strings by LangGraph's own metadata helper)
        got = saver.get_tuple(stored)
        assert got is not None
        for key, value in metadata.items():
            if key == "writes":
                continue
            if isinstance(value, str):
                value = value.replace("\u0000", "")
            assert got.metadata[key] == value  # type: ignore[literal-required]


@pytest.mark.parametrize("store", _slow_beyond({"memory", "redis", "memory+archive"}))
@settings(max_examples=80, deadline=None)
@given(steps=list_steps, other=json_values)
def test_list_channel_round_trips_as_it_grows_shrinks_reorders_and_repeats(
    store: str, steps: list[tuple[list[tuple[str, Any]], bool, bool]], other: Any
) -> None:
    """Each step's list is built from the previous one's objects (identity).

    A step either reuses the objects this test passed to the previous put or
    the ones `get_tuple` decoded (as LangGraph does), and goes through the sync
    or the async API. Every checkpoint must read back its own list, through the
    saver that wrote it and through one with cold caches.
    """
    with open_saver(store) as (saver, loop):
        previous: list[Any] = []
        parent: RunnableConfig = cfg("thread", "")
        written: list[tuple[RunnableConfig, list[Any]]] = []
        for n, (step, from_decoded, use_async) in enumerate(steps, start=1):
            if from_decoded and written:
                got = saver.get_tuple(parent)
                assert got is not None
                previous = got.checkpoint["channel_values"]["msgs"]
            value = build_list(previous, step, n)
            version = f"{n:032}"
            values = {"msgs": value, "other": other}
            versions = {"msgs": version, "other": "1"}
            new_versions = {"msgs": version} if n > 1 else versions
            checkpoint = make_checkpoint(ckpt_id(n), values, versions)
            args = (parent, checkpoint, {"step": n}, new_versions)
            if use_async:
                parent = loop.run_until_complete(saver.aput(*args))
            else:
                parent = saver.put(*args)
            snapshot = copy.deepcopy(value)
            latest = saver.get_tuple(cfg("thread"))
            assert latest is not None
            assert latest.checkpoint["channel_values"] == {
                "msgs": snapshot,
                "other": other,
            }
            written.append((parent, snapshot))
            previous = value
        for reader in (saver, cold_reader(saver)):
            for config, snapshot in written:
                got = reader.get_tuple(config)
                assert got is not None
                assert got.checkpoint["channel_values"]["msgs"] == snapshot
            ids = [t.config["configurable"]["checkpoint_id"] for t in reader.list(None)]
            assert ids == [ckpt_id(n) for n in range(len(steps), 0, -1)]


LIST_PATTERNS: dict[str, list[list[int]]] = {
    # each inner list names objects of a fixed pool by index
    "grows_one_per_step": [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]],
    "shrinks": [[0, 1, 2, 3, 4], [0, 1, 2, 3], [1, 2, 3], [2], []],
    "reorders": [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1, 4]],
    "repeats_one_object_twice": [[0], [0, 0], [0, 1, 0], [1, 0, 0, 1], [0, 0]],
    "grows_then_shrinks_then_grows": [[0, 1, 2], [0, 1, 2, 3], [0], [0, 4, 5]],
}


@pytest.mark.parametrize("pattern", sorted(LIST_PATTERNS))
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("store", STORES)
def test_list_pattern_across_consecutive_checkpoints_round_trips(
    store: str, pattern: str, use_async: bool
) -> None:
    pool: list[Any] = [
        {"id": i, "text": f"message {i}", "tags": [i, str(i)]} for i in range(6)
    ]
    with open_saver(store) as (saver, loop):
        parent = cfg("thread", "")
        written = []
        for n, picks_ in enumerate(LIST_PATTERNS[pattern], start=1):
            value = [pool[i] for i in picks_]
            checkpoint = make_checkpoint(ckpt_id(n), {"msgs": value}, {"msgs": str(n)})
            args = (parent, checkpoint, {"step": n}, {"msgs": str(n)})
            parent = (
                loop.run_until_complete(saver.aput(*args))
                if use_async
                else saver.put(*args)
            )
            written.append((parent, copy.deepcopy(value)))
            latest = saver.get_tuple(cfg("thread"))
            assert latest is not None
            assert latest.checkpoint["channel_values"]["msgs"] == value
        for reader in (saver, cold_reader(saver)):
            for config, want in written:
                got = reader.get_tuple(config)
                assert got is not None
                # a channel whose list became empty still round-trips as []
                assert got.checkpoint["channel_values"]["msgs"] == want


# -- copy_thread onto a thread that already holds a copy ------------------------------
# Minimal cases the model-based test below found; each copies a thread onto one
# that already shares element logs with it (from an earlier copy).


def put_list(
    saver: ContextEngineSaver,
    loop: asyncio.AbstractEventLoop,
    use_async: bool,
    config: RunnableConfig,
    n: int,
    value: list[Any],
) -> RunnableConfig:
    checkpoint = make_checkpoint(ckpt_id(n), {"msgs": value}, {"msgs": str(n)})
    args = (config, checkpoint, {"step": n}, {"msgs": str(n)})
    if use_async:
        return loop.run_until_complete(saver.aput(*args))
    return saver.put(*args)


def copy_thread(
    saver: ContextEngineSaver,
    loop: asyncio.AbstractEventLoop,
    use_async: bool,
    source: str,
    target: str,
) -> None:
    if use_async:
        loop.run_until_complete(saver.acopy_thread(source, target))
    else:
        saver.copy_thread(source, target)


def lists_of(saver: ContextEngineSaver, thread: str) -> dict[str, list[Any]]:
    """checkpoint id -> list value, for every checkpoint of `thread`."""
    return {
        t.config["configurable"]["checkpoint_id"]: t.checkpoint["channel_values"][
            "msgs"
        ]
        for t in saver.list(cfg(thread))
    }


A, B, C = {"m": "a"}, {"m": "b"}, {"m": "c"}


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("store", STORES)
def test_copy_thread_again_after_the_source_list_grew_copies_the_new_elements(
    store: str, use_async: bool
) -> None:
    with open_saver(store) as (saver, loop):
        first = put_list(saver, loop, use_async, cfg("src"), 1, [A])
        copy_thread(saver, loop, use_async, "src", "dst")
        put_list(saver, loop, use_async, first, 2, [A, B])
        copy_thread(saver, loop, use_async, "src", "dst")
        want = {ckpt_id(2): [A, B], ckpt_id(1): [A]}
        for reader in (saver, cold_reader(saver)):
            assert lists_of(reader, "src") == want
            assert lists_of(reader, "dst") == want


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("store", STORES)
def test_copy_thread_onto_a_copy_that_grew_on_its_own_keeps_both_histories_intact(
    store: str, use_async: bool
) -> None:
    with open_saver(store) as (saver, loop):
        first = put_list(saver, loop, use_async, cfg("src"), 1, [A])
        copy_thread(saver, loop, use_async, "src", "dst")
        put_list(saver, loop, use_async, cfg("dst", "", ckpt_id(1)), 2, [A, C])
        put_list(saver, loop, use_async, first, 3, [A, B])
        copy_thread(saver, loop, use_async, "src", "dst")
        for reader in (saver, cold_reader(saver)):
            assert lists_of(reader, "src") == {ckpt_id(3): [A, B], ckpt_id(1): [A]}
            assert lists_of(reader, "dst") == {
                ckpt_id(3): [A, B],
                ckpt_id(2): [A, C],
                ckpt_id(1): [A],
            }


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("store", STORES)
def test_copy_thread_back_onto_its_source_copies_the_elements_the_copy_added(
    store: str, use_async: bool
) -> None:
    with open_saver(store) as (saver, loop):
        put_list(saver, loop, use_async, cfg("src"), 1, [A])
        copy_thread(saver, loop, use_async, "src", "dst")
        put_list(saver, loop, use_async, cfg("dst", "", ckpt_id(1)), 2, [A, C])
        copy_thread(saver, loop, use_async, "dst", "src")
        want = {ckpt_id(2): [A, C], ckpt_id(1): [A]}
        for reader in (saver, cold_reader(saver)):
            assert lists_of(reader, "dst") == want
            assert lists_of(reader, "src") == want


# -- a message edited in place by a node --------------------------------------------


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("store", STORES)
def test_checkpoint_read_between_an_edited_write_and_the_next_put_is_the_stored_one(
    store: str, use_async: bool
) -> None:
    """A node edits a message of the state it was given and returns it.

    Until the next checkpoint is put (or if it never is: a sibling task failed,
    the run was interrupted), reading the checkpoint the node ran from must
    still give what was stored, not the edited object. Found by the
    model-based test below.
    """
    with open_saver(store) as (saver, loop):
        first = put_list(saver, loop, use_async, cfg("t"), 1, [{"text": "original"}])
        state = saver.get_tuple(first)
        assert state is not None
        message = state.checkpoint["channel_values"]["msgs"][0]
        message["text"] = "edited"
        if use_async:
            loop.run_until_complete(saver.aput_writes(first, [("msgs", message)], "n"))
        else:
            saver.put_writes(first, [("msgs", message)], "n")
        for reader in (saver, cold_reader(saver)):
            got = reader.get_tuple(first)
            assert got is not None
            assert got.checkpoint["channel_values"]["msgs"] == [{"text": "original"}]
            assert got.pending_writes == [("n", "msgs", {"text": "edited"})]


# -- the model-based test --------------------------------------------------------------

THREADS = ("t1", "t2", "t3")
NAMESPACES = ("", "inner:1")
RUNS = ("run-a", "run-b", "run-c")
# task paths sort in a different order than task ids: pending writes must
# come back ordered by (task_path, task_id, idx)
TASKS = {"task-a": "~1", "task-b": "~0", "task-c": ""}
REGULAR_CHANNELS = ("a", "msgs", "b")
SPECIAL_CHANNELS = ("__error__", "__interrupt__")
SCALAR_CHANNELS = ("a", "b")

small_json = st.recursive(
    st.one_of(st.integers(-5, 5), st.text("xyz", max_size=3)),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text("kq"), c)),
    max_leaves=4,
)
channel_updates = st.tuples(
    st.sampled_from(["keep", "set", "empty", "drop"]), small_json
)
model_picks = st.lists(
    st.one_of(
        st.tuples(st.just("old"), st.integers(0, 20)),
        st.tuples(st.just("new"), small_json),
    ),
    max_size=6,
)
list_updates = st.tuples(
    st.sampled_from(["keep", "edit", "drop"]), st.booleans(), model_picks
)
put_specs = st.fixed_dictionaries(
    {
        "thread": st.sampled_from(THREADS),
        "ns": st.sampled_from(NAMESPACES),
        "parent_back": st.one_of(st.integers(0, 8), st.none()),
        "a": channel_updates,
        "b": channel_updates,
        "msgs": list_updates,
        "run_id": st.sampled_from((*RUNS, None)),
        "source": st.sampled_from(["loop", "input", "update", "fork"]),
        "extra": small_json,
        "use_async": st.booleans(),
    }
)
conversation_steps = st.fixed_dictionaries(
    {
        "thread": st.sampled_from(THREADS),
        "ns": st.sampled_from(NAMESPACES),
        "appended": st.lists(small_json, min_size=1, max_size=3),
        "from_decoded": st.booleans(),
        "run_id": st.sampled_from((*RUNS, None)),
        "use_async": st.booleans(),
    }
)


@dataclass
class Rec:
    """One checkpoint as the model expects to read it back."""

    thread: str
    ns: str
    cid: str
    parent: str | None
    checkpoint: Checkpoint  # as expected back, channel_values included
    metadata: dict[str, Any]
    run_id: str | None
    live: dict[str, Any] = field(default_factory=dict)  # objects passed to put
    versions: dict[str, str] = field(default_factory=dict)


WriteKey = tuple[str, int]
Write = tuple[str, str, str, Any]  # task_path, task_id, channel, value snapshot


class SaverModel(RuleBasedStateMachine):
    """Random interleavings of every mutating call, checked after each step."""

    store = STORES[0]

    def __init__(self) -> None:
        super().__init__()
        self._ctx = open_saver(self.store)
        self.saver, self.loop = self._ctx.__enter__()
        self.counter = 0
        self.rows: dict[tuple[str, str], dict[str, Rec]] = {}
        self.writes: dict[tuple[str, str, str], dict[WriteKey, Write]] = {}
        self.ever: set[tuple[str, str, str]] = set()

    def teardown(self) -> None:
        self._ctx.__exit__(None, None, None)

    # -- helpers ---------------------------------------------------------------

    def next_n(self) -> int:
        self.counter += 1
        return self.counter

    def call(self, use_async: bool, name: str, *args: Any, **kwargs: Any) -> Any:
        if use_async:
            return self.loop.run_until_complete(
                getattr(self.saver, "a" + name)(*args, **kwargs)
            )
        return getattr(self.saver, name)(*args, **kwargs)

    def recs(self) -> list[Rec]:
        """Every checkpoint of the model, in a stable order."""
        return sorted(
            (r for ns in self.rows.values() for r in ns.values()),
            key=lambda r: (r.thread, r.ns, r.cid),
        )

    def expected_tuple(self, rec: Rec) -> CheckpointTuple:
        writes = self.writes.get((rec.thread, rec.ns, rec.cid), {})
        ordered = sorted(writes.items(), key=lambda kv: (kv[1][0], kv[0][0], kv[0][1]))
        return CheckpointTuple(
            config=full_cfg(rec.thread, rec.ns, rec.cid),
            checkpoint=rec.checkpoint,
            metadata=rec.metadata,  # type: ignore[arg-type]
            parent_config=(
                full_cfg(rec.thread, rec.ns, rec.parent) if rec.parent else None
            ),
            pending_writes=[(tid, ch, v) for _, (_, tid, ch, v) in ordered],
        )

    def new_element(self, value: Any) -> Any:
        return {"n": self.next_n(), "v": value}

    # -- rules -----------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        assert self.saver.get_tuple(cfg("t1")) is None

    @rule(spec=put_specs)
    def put(self, spec: dict[str, Any]) -> None:
        """A new checkpoint whose parent is the latest, an older one, or none."""
        self._put(**spec)

    def _put(
        self,
        thread: str,
        ns: str,
        parent_back: int | None,
        a: tuple[str, Any],
        b: tuple[str, Any],
        msgs: tuple[str, bool, list[tuple[str, Any]]],
        run_id: str | None,
        source: str,
        extra: Any,
        use_async: bool,
    ) -> None:
        """Channels keep the parent's version (and value), get a new value, get a
        version without a value, or are dropped; the list channel is rebuilt
        from the parent's objects (or from what `get_tuple` decoded).
        """
        existing = sorted(self.rows.get((thread, ns), {}))
        parent: Rec | None = None
        if existing and parent_back is not None:
            parent = self.rows[(thread, ns)][existing[-1 - parent_back % len(existing)]]
        n = self.next_n()
        cid = ckpt_id(n)
        live: dict[str, Any] = {}
        want: dict[str, Any] = {}  # the values expected back
        versions: dict[str, str] = {}
        new_versions: dict[str, str] = {}

        def keep(ch: str) -> None:
            # an unchanged version is not stored again: the value read back is
            # the parent's, even if a live object was edited in place since
            if parent is not None and ch in parent.versions:
                versions[ch] = parent.versions[ch]
                if ch in parent.live:
                    live[ch] = parent.live[ch]
                    want[ch] = parent.checkpoint["channel_values"][ch]

        for ch, (kind, value) in (("a", a), ("b", b)):
            if kind == "keep":
                keep(ch)
            elif kind == "set":
                versions[ch] = new_versions[ch] = f"{n:032}"
                live[ch] = value
                want[ch] = copy.deepcopy(value)
            elif kind == "empty":
                versions[ch] = new_versions[ch] = f"{n:032}"
        kind, from_decoded, picks_ = msgs
        if kind == "keep":
            keep("msgs")
        elif kind == "edit":
            base: list[Any] = list(parent.live.get("msgs", [])) if parent else []
            if parent is not None and from_decoded:
                # LangGraph builds the next list from the state it read
                got = self.saver.get_tuple(full_cfg(thread, ns, parent.cid))
                assert got is not None
                base = got.checkpoint["channel_values"].get("msgs", [])
            value: list[Any] = []
            for pick, arg in picks_:
                if pick == "old" and base:
                    value.append(base[arg % len(base)])
                elif pick == "old" or isinstance(arg, dict):
                    value.append(self.new_element(arg))
                else:
                    value.append(arg)
            versions["msgs"] = new_versions["msgs"] = f"{n:032}"
            live["msgs"] = value
            want["msgs"] = copy.deepcopy(value)
        metadata: dict[str, Any] = {"source": source, "step": n, "extra": extra}
        if run_id is not None:
            metadata["run_id"] = run_id
        checkpoint = make_checkpoint(cid, dict(live), versions)
        config = cfg(thread, ns, parent.cid if parent else None)
        got = self.call(use_async, "put", config, checkpoint, metadata, new_versions)
        assert got == full_cfg(thread, ns, cid)
        self.rows.setdefault((thread, ns), {})[cid] = Rec(
            thread=thread,
            ns=ns,
            cid=cid,
            parent=parent.cid if parent else None,
            checkpoint=expected_checkpoint(checkpoint, want),
            metadata=copy.deepcopy(metadata),
            run_id=run_id,
            live=live,
            versions=versions,
        )
        self.ever.add((thread, ns, cid))

    @rule(step=conversation_steps)
    def put_next_step_of_a_conversation(self, step: dict[str, Any]) -> None:
        """The common case: a child of the latest whose list only grew."""
        size = len(self.latest_list(step["thread"], step["ns"]))
        appended = step["appended"]
        picks_ = [("old", i) for i in range(size)] + [("new", v) for v in appended]
        self._put(
            step["thread"],
            step["ns"],
            0,
            ("keep", None),
            ("set", len(appended)),
            ("edit", step["from_decoded"], picks_),
            step["run_id"],
            "loop",
            None,
            step["use_async"],
        )

    def latest_list(self, thread: str, ns: str) -> list[Any]:
        recs = self.rows.get((thread, ns), {})
        if not recs:
            return []
        return list(recs[max(recs)].live.get("msgs", []))

    @precondition(lambda self: bool(self.rows))
    @rule(
        target_idx=st.integers(0, 63),
        task_id=st.sampled_from(sorted(TASKS)),
        writes=st.lists(
            st.tuples(st.sampled_from(REGULAR_CHANNELS + SPECIAL_CHANNELS), small_json),
            min_size=1,
            max_size=4,
        ),
        use_async=st.booleans(),
    )
    def put_writes(
        self,
        target_idx: int,
        task_id: str,
        writes: list[tuple[str, Any]],
        use_async: bool,
    ) -> None:
        recs = self.recs()
        rec = recs[target_idx % len(recs)]
        self.call(
            use_async,
            "put_writes",
            full_cfg(rec.thread, rec.ns, rec.cid),
            writes,
            task_id,
            TASKS[task_id],
        )
        self.model_writes(rec, task_id, writes)

    def model_writes(
        self, rec: Rec, task_id: str, writes: list[tuple[str, Any]]
    ) -> None:
        stored = self.writes.setdefault((rec.thread, rec.ns, rec.cid), {})
        for i, (ch, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(ch, i)
            key = (task_id, idx)
            if idx >= 0 and key in stored:
                continue  # regular writes: first wins
            stored[key] = (TASKS[task_id], task_id, ch, copy.deepcopy(value))

    def editable(self) -> list[tuple[Rec, Any]]:
        """Messages a node could edit: the model's own, or ones `get_tuple` decoded."""
        return [
            (r, e)
            for r in self.recs()
            for e in r.live.get("msgs", [])
            if type(e) is dict
        ]

    @precondition(lambda self: bool(self.editable()))
    @rule(
        pick=st.integers(0, 63),
        task_id=st.sampled_from(sorted(TASKS)),
        as_list=st.booleans(),
        use_async=st.booleans(),
    )
    def edit_a_message_in_place_and_return_it(
        self, pick: int, task_id: str, as_list: bool, use_async: bool
    ) -> None:
        """A node edits a message of its state in place and returns it.

        The node ran from `rec`: only a child of `rec` may carry the edited
        object. Every other checkpoint's state keeps an unedited message (what
        a correct saver decodes for it), as a new object.
        """
        candidates = self.editable()
        rec, element = candidates[pick % len(candidates)]
        pristine = copy.deepcopy(element)
        for other in self.recs():
            msgs = other.live.get("msgs")
            if (
                other is not rec
                and msgs is not None
                and any(m is element for m in msgs)
            ):
                other.live["msgs"] = [pristine if m is element else m for m in msgs]
        element["edited"] = self.next_n()
        writes = [("msgs", [element] if as_list else element)]
        self.call(
            use_async,
            "put_writes",
            full_cfg(rec.thread, rec.ns, rec.cid),
            writes,
            task_id,
            TASKS[task_id],
        )
        self.model_writes(rec, task_id, writes)

    @rule(thread=st.sampled_from(THREADS), use_async=st.booleans())
    def delete_thread(self, thread: str, use_async: bool) -> None:
        self.call(use_async, "delete_thread", thread)
        self.drop(lambda r: r.thread == thread)

    @rule(
        run_ids=st.lists(st.sampled_from((*RUNS, "run-unknown")), max_size=3),
        use_async=st.booleans(),
    )
    def delete_for_runs(self, run_ids: list[str], use_async: bool) -> None:
        self.call(use_async, "delete_for_runs", run_ids)
        self.drop(lambda r: r.run_id in run_ids)

    @rule(
        source=st.sampled_from(THREADS),
        dest=st.sampled_from(THREADS),
        use_async=st.booleans(),
    )
    def copy_thread(self, source: str, dest: str, use_async: bool) -> None:
        target = dest
        self.call(use_async, "copy_thread", source, target)
        if source == target:
            return
        for (thread, ns), recs in list(self.rows.items()):
            if thread != source:
                continue
            for cid, rec in recs.items():
                clone = copy.deepcopy(rec)  # objects of the copy are its own
                clone.thread = target
                self.rows.setdefault((target, ns), {})[cid] = clone
                self.ever.add((target, ns, cid))
                src = self.writes.get((source, ns, cid))
                if src is not None:
                    dst = self.writes.setdefault((target, ns, cid), {})
                    dst.update(copy.deepcopy(src))

    @rule(
        threads=st.lists(st.sampled_from(THREADS), max_size=2),
        strategy=st.sampled_from(["keep_latest", "delete"]),
        use_async=st.booleans(),
    )
    def prune(self, threads: list[str], strategy: str, use_async: bool) -> None:
        self.call(use_async, "prune", threads, strategy=strategy)
        if strategy == "delete":
            self.drop(lambda r: r.thread in threads)
            return
        latest = {
            key: max(recs) for key, recs in self.rows.items() if key[0] in threads
        }
        self.drop(lambda r: r.thread in threads and r.cid != latest[(r.thread, r.ns)])

    def drop(self, doomed: Any) -> None:
        for key, recs in list(self.rows.items()):
            for cid, rec in list(recs.items()):
                if doomed(rec):
                    del recs[cid]
                    self.writes.pop((rec.thread, rec.ns, cid), None)
            if not recs:
                del self.rows[key]

    @precondition(lambda self: bool(self.rows))
    @rule(pick=st.integers(0, 63), latest=st.booleans(), use_async=st.booleans())
    def read_through_the_writing_saver(
        self, pick: int, latest: bool, use_async: bool
    ) -> None:
        """Reads through the saver that writes, so its caches see reads too."""
        recs = self.recs()
        rec = recs[pick % len(recs)]
        if latest:
            got = self.call(use_async, "get_tuple", cfg(rec.thread, rec.ns))
            newest = max(self.rows[(rec.thread, rec.ns)])
            rec = self.rows[(rec.thread, rec.ns)][newest]
        else:
            config = full_cfg(rec.thread, rec.ns, rec.cid)
            got = self.call(use_async, "get_tuple", config)
        assert got == self.expected_tuple(rec)

    # -- the check after every step ------------------------------------------------

    @invariant()
    def storage_matches_the_model(self) -> None:
        reader = cold_reader(self.saver)  # caches of the writer stay untouched
        for thread in THREADS:
            thread_recs = [r for r in self.recs() if r.thread == thread]
            want_ids = sorted((r.cid for r in thread_recs), reverse=True)
            got = list(reader.list(cfg(thread, None)))
            assert [t.config["configurable"]["checkpoint_id"] for t in got] == want_ids
            for ns in NAMESPACES:
                recs = self.rows.get((thread, ns), {})
                want = [
                    self.expected_tuple(recs[c]) for c in sorted(recs, reverse=True)
                ]
                assert list(reader.list(cfg(thread, ns))) == want
                latest = reader.get_tuple(cfg(thread, ns))
                assert latest == (want[0] if want else None)
                for run_id in RUNS:
                    filtered = list(
                        reader.list(cfg(thread, ns), filter={"run_id": run_id})
                    )
                    assert filtered == [
                        t for t in want if t.metadata.get("run_id") == run_id
                    ]
                if len(want) > 1:
                    before = list(reader.list(cfg(thread, ns), before=want[0].config))
                    assert before == want[1:]
            async_ids = self.loop.run_until_complete(self._alist_ids(reader, thread))
            assert async_ids == want_ids
        for rec in self.recs():
            config = full_cfg(rec.thread, rec.ns, rec.cid)
            assert reader.get_tuple(config) == self.expected_tuple(rec)
        alive = {(r.thread, r.ns, r.cid) for r in self.recs()}
        for thread, ns, cid in self.ever - alive:
            assert reader.get_tuple(full_cfg(thread, ns, cid)) is None
        everything = [
            (
                t.config["configurable"]["thread_id"],
                t.config["configurable"]["checkpoint_ns"],
                t.config["configurable"]["checkpoint_id"],
            )
            for t in reader.list(None)
        ]
        assert sorted(everything) == sorted(alive)
        cids = [c for _, _, c in everything]
        assert cids == sorted(cids, reverse=True)
        assert self.saver.engine.get_metrics_snapshot()["total_checkpoints"] == len(
            alive
        )

    @staticmethod
    async def _alist_ids(reader: ContextEngineSaver, thread: str) -> list[str]:
        return [
            t.config["configurable"]["checkpoint_id"]
            async for t in reader.alist(cfg(thread, None))
        ]


MODEL_EXAMPLES = {"memory": 150, "redis": 30, "cluster": 30}
"""Examples per store; stores behind a server get fewer (each step is round trips)."""


@pytest.mark.parametrize("store", _slow_beyond({"memory", "redis"}))
def test_model_based_interleavings_of_every_operation_match_a_pure_python_model(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failing run is shrunk for at most a minute (Hypothesis allows five per
    # failure): enough for a short reproduction, without stalling the suite.
    monkeypatch.setattr(hypothesis_engine, "MAX_SHRINKING_SECONDS", 60, raising=False)
    machine = type("SaverModelOn" + store.title(), (SaverModel,), {"store": store})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=MODEL_EXAMPLES.get(store, 40),
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
