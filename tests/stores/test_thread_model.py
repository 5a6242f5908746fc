"""History rewrites keep ref values (`stores.refs`) pointing at their elements."""

from __future__ import annotations

from aiecs_checkpoint.stores import refs
from aiecs_checkpoint.stores import thread_model as model
from aiecs_checkpoint.stores.records import (
    CheckpointRow,
    ListValue,
    WriteRow,
)

TASKS = "__pregel_tasks"


def item(text: str) -> tuple[str, bytes]:
    return ("msgpack", text.encode())


def row(cid: str, versions: dict[str, str]) -> CheckpointRow:
    return CheckpointRow(
        thread_id="t",
        checkpoint_ns="",
        checkpoint_id=cid,
        parent_id=None,
        checkpoint=("msgpack", b"c"),
        metadata=("msgpack", b"m"),
        versions=versions,
    )


def ref_to(epoch: str, runs: tuple[tuple[int, int], ...]) -> tuple[str, bytes]:
    return refs.wrap(
        ("msgpack", b"inner"),
        [refs.ListRef(("state", "messages"), "messages", epoch, runs, 1)],
    )


def resolve(ns: model.Namespace, value: tuple[str, bytes]) -> list[tuple[str, bytes]]:
    (_, found) = refs.unwrap(value)
    (ref,) = found
    log = ns.logs[(ref.channel, ref.epoch)]
    return [log[p] for a, b in ref.runs for p in range(a, b)]


def namespace() -> model.Namespace:
    """Messages m0..m4 of which the live value keeps m2..m4, a pending Send
    write pointing at m3..m4, and a `__pregel_tasks` element pointing at m2."""
    ns = model.Namespace()
    ns.logs[("messages", "E")] = [item(f"m{i}") for i in range(5)]
    ns.epochs["messages"] = "E"
    ns.values[("messages", "v1")] = ListValue("E", ((2, 5),))
    ns.logs[("__pregel_tasks", "T")] = [ref_to("E", ((2, 3),))]
    ns.epochs["__pregel_tasks"] = "T"
    ns.values[("__pregel_tasks", "v1")] = ListValue("T", ((0, 1),))
    model.insert_row(ns, row("c1", {"messages": "v1", "__pregel_tasks": "v1"}))
    write = WriteRow("task", 0, "__pregel_tasks", ref_to("E", ((3, 5),)), "")
    ns.writes["c1"] = {("task", 0): write}
    return ns


def test_compacting_a_log_remaps_the_refs_into_it() -> None:
    ns = namespace()
    pending = ns.writes["c1"][("task", 0)].value
    element = ns.logs[("__pregel_tasks", "T")][0]
    assert resolve(ns, pending) == [item("m3"), item("m4")]
    model.collect_garbage(ns)
    assert ("messages", "E") not in ns.logs
    assert [len(log) for (ch, _), log in ns.logs.items() if ch == "messages"] == [3]
    assert resolve(ns, ns.writes["c1"][("task", 0)].value) == [item("m3"), item("m4")]
    (element,) = ns.logs[("__pregel_tasks", "T")]
    assert resolve(ns, element) == [item("m2")]


def test_positions_only_a_ref_uses_stay_live() -> None:
    ns = namespace()
    ns.values[("messages", "v1")] = ListValue("E", ((4, 5),))
    model.collect_garbage(ns)
    (log,) = [log for (ch, _), log in ns.logs.items() if ch == "messages"]
    assert log == [item("m2"), item("m3"), item("m4")]
    assert resolve(ns, ns.writes["c1"][("task", 0)].value) == [item("m3"), item("m4")]


def test_copying_into_a_diverged_thread_renames_the_log_and_its_refs() -> None:
    src = {"": namespace()}
    dst: model.Thread = {"": model.Namespace()}
    dst[""].logs[("messages", "E")] = [item("other")] * 6
    dst[""].epochs["messages"] = "E"
    model.copy_into(src, dst, "t2")
    copied = dst[""]
    assert copied.logs[("messages", "E")] == [item("other")] * 6
    pending = copied.writes["c1"][("task", 0)].value
    assert resolve(copied, pending) == [item("m3"), item("m4")]
    ((tasks_epoch, element),) = [
        (epoch, log[0]) for (ch, epoch), log in copied.logs.items() if ch == TASKS
    ]
    assert tasks_epoch != "T"  # the target had no such log: a fresh epoch
    assert resolve(copied, element) == [item("m2")]


def test_copying_keeps_an_epoch_only_where_the_target_holds_an_agreeing_log() -> None:
    """A log the target holds as a prefix is extended under its epoch; a log the
    target lacks gets a new one (the target may once have had a different log
    under that epoch, still cached by readers), and the copied values and refs
    follow it."""
    src = {"": namespace()}
    dst: model.Thread = {"": model.Namespace()}
    dst[""].logs[("messages", "E")] = [item("m0"), item("m1")]
    dst[""].epochs["messages"] = "E"
    model.copy_into(src, dst, "t2")
    copied = dst[""]
    assert copied.logs[("messages", "E")] == [item(f"m{i}") for i in range(5)]
    assert copied.values[("messages", "v1")] == ListValue("E", ((2, 5),))
    ((fresh, log),) = [(e, g) for (ch, e), g in copied.logs.items() if ch == TASKS]
    assert fresh != "T" and copied.epochs[TASKS] == fresh
    assert copied.values[(TASKS, "v1")] == ListValue(fresh, ((0, 1),))
    assert resolve(copied, log[0]) == [item("m2")]


def test_a_thread_with_fresh_epochs_holds_the_same_lists_under_new_names() -> None:
    thread = {"": namespace()}
    fresh = model.with_fresh_epochs(thread, "t2")
    ns = fresh[""]
    assert {e for _, e in ns.logs}.isdisjoint({"E", "T"})
    assert [r.thread_id for r in ns.rows.values()] == ["t2"]
    manifest = ns.values[("messages", "v1")]
    assert isinstance(manifest, ListValue)
    stored = ns.logs[("messages", manifest.epoch)]
    assert [stored[p] for a, b in manifest.runs for p in range(a, b)] == [
        item("m2"),
        item("m3"),
        item("m4"),
    ]
    assert resolve(ns, ns.writes["c1"][("task", 0)].value) == [item("m3"), item("m4")]
    assert thread[""].logs[("messages", "E")] == [item(f"m{i}") for i in range(5)]


def test_a_whole_thread_is_kept_as_it_is() -> None:
    thread = {"": namespace()}
    assert model.whole(thread) == (thread, 0)


def test_checkpoints_missing_a_value_or_an_element_are_left_out() -> None:
    ns = namespace()
    ns.values[("messages", "v2")] = ListValue("E", ((0, 6),))  # m5 never arrived
    model.insert_row(ns, row("c2", {"messages": "v2"}))
    model.insert_row(ns, row("c3", {"messages": "v3"}))  # its value never arrived
    kept, left_out = model.whole({"": ns})
    assert left_out == 2 and kept[""].ids == ["c1"]
    assert ("messages", "v2") not in kept[""].values
    assert resolve(kept[""], kept[""].writes["c1"][("task", 0)].value) == [
        item("m3"),
        item("m4"),
    ]


def test_a_checkpoint_whose_ref_values_point_past_their_log_is_left_out() -> None:
    """Through a write, and through a list element that is a ref value."""
    for lost in ("write", "element"):
        ns = namespace()
        if lost == "write":
            write = WriteRow("task", 0, "__pregel_tasks", ref_to("E", ((3, 6),)), "")
            ns.writes["c1"] = {("task", 0): write}
        else:
            ns.logs[("__pregel_tasks", "T")] = [ref_to("E", ((2, 7),))]
        assert model.whole({"": ns}) == ({}, 1), lost
