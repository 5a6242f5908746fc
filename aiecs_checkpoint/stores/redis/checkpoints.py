"""Redis as the checkpoint store (plain Redis >= 7, standalone or Cluster).

Every operation is written once, as a generator that yields the calls to make
(`stores.redis.client.Call`) and receives their replies; the engine's runners
perform them with redis-py's sync or asyncio client (`stores.redis.client`). Hot
operations are one script call each, so one network round trip whatever the
thread's length: put, put_writes, get (latest or by id), and one page of list.
Reads take what the reader already holds decoded (`held`) and
leave those list elements out, so a get costs what changed since the last one.
History rewrites (prune, delete_for_runs, copy_thread) load the thread, apply
the same functions as the memory store (`stores.thread_model`) and write it back with
an optimistic generation check. A page of the thread listing is one registry
call plus one call for the latest rows of the page's threads (one per thread
on a Cluster, where each thread has its own slot). A filtered page reads the
thread index instead of the registry (`P:ix:{E}`, see `stores.redis.layout`):
a few calls whatever the number of threads, plus the rows of the threads it
finds. The key layout is documented in `stores.redis.layout`.

Errors: a failing call is retried briefly with backoff, then raises
`StoreError` naming the server (never the password); the next call reconnects.
Nothing is ever written somewhere else instead.
"""

from __future__ import annotations

import builtins
import heapq
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import unquote

import ormsgpack

from aiecs_checkpoint.errors import StoreError
from aiecs_checkpoint.stores import encoding as E
from aiecs_checkpoint.stores import thread_model as model
from aiecs_checkpoint.stores.ops import Emit, Op, Stream, merge_newest
from aiecs_checkpoint.stores.records import (
    RECORD_CHANNEL,
    CheckpointRow,
    DeltaHistory,
    Held,
    IndexQuery,
    ListItems,
    ListValue,
    ResolvedValue,
    Runs,
    StaleListBase,
    StoredTuple,
    Typed,
    ValueWrite,
    Version,
    WriteRow,
    index_entries,
    is_empty,
    is_key_entry,
    ordered_writes,
    walk_delta_history,
)
from aiecs_checkpoint.stores.redis import layout as L
from aiecs_checkpoint.stores.redis.client import Call, RedisSettings
from aiecs_checkpoint.stores.thread_model import restored_activity_ms

BUILT = "#built"
"""Member of `ixkeys` saying every registered thread has been indexed (threads
written before the index existed were added once, by `_backfill`)."""

PAGE = 32
"""Checkpoints fetched per list round trip."""

WALK_PAGE = 64
"""Ancestors fetched per delta-history round trip."""


class RedisCheckpointStore:
    """The checkpoint store on Redis: every operation yields `Call`s (no I/O)."""

    backend = "redis"
    skips_held = True

    def __init__(self, settings: RedisSettings) -> None:
        self.s = settings
        self.keys = L.Keys(settings.prefix)

    def ping(self) -> Op[None]:
        """One PING (`StoreError` when the server cannot be reached)."""
        yield Call(None, [], [], command="PING")

    def _thread_keys(self, thread_id: str) -> builtins.list[str]:
        """The thread's keys, its `runs` and `ix`, and the registry when
        standalone."""
        tk = self.keys.thread(thread_id)
        keys = [*tk.script_keys, tk.runs, tk.ix]
        return keys if self.s.cluster else [*keys, self.keys.threads]

    def _read_ttl(self) -> int:
        return self.s.ttl_ms if self.s.refresh_on_read else 0

    # -- hot path: one call each --------------------------------------------------

    def put_checkpoint(
        self, row: CheckpointRow, values: dict[str, tuple[Version, ValueWrite]]
    ) -> Op[dict[str, ListValue]]:
        tk = self.keys.thread(row.thread_id)
        keys = [*tk.script_keys, tk.runs, tk.ix]
        now = int(time.time() * 1000)
        first = 0
        if not self.s.cluster:
            run = self.keys.run(row.run_key) if row.run_key else self.keys.threads
            keys += [self.keys.threads, self.keys.ix_keys, run]
            first = len(keys) + 1
            keys += [self.keys.ix(e) for e in index_entries(row.index)]
        args = [
            E.enc(row.checkpoint_ns),
            row.checkpoint_id,
            E.pack_row(row),
            self.s.ttl_ms,
            row.thread_id,
            tk.log_prefix,
            now,
            L.pack_values(row.checkpoint_ns, values),
            row.run_key or "",
            first,
        ]
        if self.s.cluster:
            yield from self._register_cluster(row.thread_id, row.run_key, now)
        reply = yield Call("put", keys, args, acks=self.s.replica_acks)
        if L.text(reply[0]) == "stale":
            raise StaleListBase(row.checkpoint_id)
        if self.s.cluster and reply[3] == 1:
            yield from self._register_cluster(row.thread_id, row.run_key, now)
        moved, removed, added = (_texts(x) for x in reply[2])
        yield from self._move_index(row.thread_id, now, moved, removed, added)
        return {L.text(ch): _as_list(E.unpack_value(blob)) for ch, blob in reply[1]}

    def _register_cluster(
        self, thread_id: str, run_key: str | None, now: int
    ) -> Op[None]:
        """On a cluster the global indexes live in other slots: separate calls,
        made before the put, so a process dying between the calls leaves an
        index entry of a thread without that checkpoint (the reaper's case),
        never a checkpoint no index lists. A thread's first put registers it
        again afterwards, in case a listing reaped the entry in between.
        Not covered by `replica_acks`: a failover may drop a thread's
        registry entry, which its next put writes again."""
        yield Call(None, [self.keys.threads], [now, thread_id], command="ZADD")
        if run_key:
            yield Call(None, [self.keys.run(run_key)], [thread_id], command="SADD")

    def put_writes(
        self, thread_id: str, ns: str, cid: str, rows: Sequence[WriteRow]
    ) -> Op[None]:
        tk = self.keys.thread(thread_id)
        args = [E.member(ns, cid), E.pack_writes(rows), self.s.ttl_ms, tk.log_prefix]
        yield Call("put_writes", tk.script_keys, args, acks=self.s.replica_acks)

    def get(
        self, thread_id: str, ns: str, cid: str | None, held: Held | None = None
    ) -> Op[StoredTuple | None]:
        tk = self.keys.thread(thread_id)
        args = [
            E.enc(ns),
            cid or "",
            tk.log_prefix,
            self._read_ttl(),
            L.pack_held(held or {}),
        ]
        reply = yield Call("get", tk.script_keys, args)
        if not reply:
            return None
        return _stored(L.parse_fetched(thread_id, reply))

    def list_page(
        self,
        thread_id: str,
        ns: str | None,
        before: str | None,
        limit: int,
        held: Held | None = None,
    ) -> Op[tuple[int, builtins.list[StoredTuple]]]:
        tk = self.keys.thread(thread_id)
        args = [
            E.enc(ns or ""),
            before or "",
            limit,
            tk.log_prefix,
            "1" if ns is None else "0",
            self._read_ttl(),
            L.pack_held(held or {}),
        ]
        scanned, replies = yield Call("list", tk.script_keys, args)
        return int(scanned), [_stored(L.parse_fetched(thread_id, r)) for r in replies]

    def list(
        self,
        thread_id: str | None,
        checkpoint_ns: str | None,
        before: str | None,
        held: Callable[[str], Held] | None = None,
    ) -> Stream:
        """One thread's checkpoints page by page (asking `held` before each
        page), or every thread's, merged newest first as the pages arrive."""
        hold = held or _hold_nothing
        if thread_id is not None:
            yield from self._list_thread(thread_id, checkpoint_ns, before, hold)
            return
        threads = yield from self._all_threads()
        empty: builtins.list[str] = []
        streams = [
            self._list_thread(t, checkpoint_ns, before, hold, empty) for t in threads
        ]
        yield from merge_newest(streams, key=lambda s: s.row.checkpoint_id)
        yield from self._reap(empty)

    def _reap(self, thread_ids: Iterable[str]) -> Op[None]:
        """Clean up after threads found without checkpoints (their TTL ran
        out): their registry entry, their `runs` set and every run index that
        lists them. A thread written again meanwhile keeps (or gets back) its
        entries."""
        for t in thread_ids:
            tk = self.keys.thread(t)
            keys = [tk.ids, tk.runs]
            if not self.s.cluster:
                keys.append(self.keys.threads)
            runs = yield Call("reap", keys, [t])
            if runs is None:
                continue
            if self.s.cluster:
                yield Call(None, [self.keys.threads], [t], command="ZREM")
            yield from self._unlist(t, [L.text(r) for r in runs])
            alive = yield Call("alive", [tk.ids, tk.runs], [])
            if alive is not None:
                now = int(time.time() * 1000)
                args = ["NX", now, t]
                yield Call(None, [self.keys.threads], args, command="ZADD")
                for r in alive:
                    key = self.keys.run(L.text(r))
                    yield Call(None, [key], [t], command="SADD")
            yield from self._sync_index(t)

    def _unlist(self, thread_id: str, run_keys: Sequence[str]) -> Op[None]:
        """Take a thread out of these runs' indexes (one call; one per run on a
        cluster, where each index has its own slot)."""
        keys = [self.keys.run(r) for r in run_keys]
        groups = [[k] for k in keys] if self.s.cluster else [keys]
        for group in groups:
            if group:
                yield Call("unlist", group, [thread_id])

    def _all_threads(self) -> Op[builtins.list[str]]:
        out: builtins.list[str] = []
        while True:
            page = yield from self.threads(len(out), 1000)
            out += page
            if len(page) < 1000:
                return out

    def _list_thread(
        self,
        thread_id: str,
        ns: str | None,
        before: str | None,
        held: Callable[[str], Held],
        empty: builtins.list[str] | None = None,
    ) -> Stream:
        """One thread's checkpoints page by page; a thread without any (every
        namespace, no `before`) is added to `empty`."""
        cursor = before
        while True:
            page_op = self.list_page(thread_id, ns, cursor, PAGE, held(thread_id))
            scanned, page = yield from page_op
            if scanned == 0 and cursor is None and ns is None and empty is not None:
                empty.append(thread_id)
            for item in page:
                yield Emit(item)
            if scanned < PAGE or not page:
                return
            cursor = page[-1].row.checkpoint_id

    def threads(self, cursor: int, count: int) -> Op[builtins.list[str]]:
        reply = yield Call(
            None, [self.keys.threads], [cursor, cursor + count - 1], command="ZRANGE"
        )
        return [L.text(t) for t in reply]

    # -- thread index: kept in step by every write, read by filtered listing -------

    def _move_index(
        self,
        thread_id: str,
        score: int,
        moved: Sequence[str],
        removed: Sequence[str],
        added: Sequence[str],
    ) -> Op[None]:
        """Put the thread at `score` in the `moved` entries' indexes and take it
        out of the `removed` ones; note new key-id entries in `ixkeys`. After a
        removal the thread's `ix` is read again: an entry a racing write gave
        it back is restored, so the index never misses a thread."""
        yield from self._ix_move(thread_id, score, moved, removed)
        keys = [e for e in added if is_key_entry(e)]
        if keys:
            yield Call(None, [self.keys.ix_keys], keys, command="SADD")
        if not removed:
            return
        tk = self.keys.thread(thread_id)
        now_in = _texts((yield Call(None, [tk.ix], [], command="SMEMBERS")))
        back = [e for e in removed if e in set(now_in)]
        if back:
            at = yield from self._activity(thread_id)
            yield from self._ix_move(thread_id, at, back, [])

    def _ix_move(
        self, thread_id: str, score: int, moved: Sequence[str], removed: Sequence[str]
    ) -> Op[None]:
        """`IXMOVE`: one call standalone, one per entry on a cluster."""
        pairs = [(e, True) for e in moved] + [(e, False) for e in removed]
        groups = [[p] for p in pairs] if self.s.cluster else [pairs]
        for group in groups:
            if group:
                keys = [self.keys.ix(e) for e, _ in group]
                nadd = sum(1 for _, add in group if add)
                yield Call("ixmove", keys, [score, thread_id, nadd])

    def _activity(self, thread_id: str) -> Op[int]:
        """The thread's registry score (now when it is not registered)."""
        found = yield Call(None, [self.keys.threads], [thread_id], command="ZSCORE")
        if found is None:
            return int(time.time() * 1000)
        return int(float(L.text(found)))

    def _sync_index(self, thread_id: str) -> Op[None]:
        """Bring the thread index in step with the thread's latest row after a
        delete or rewrite (at the registry's score)."""
        tk = self.keys.thread(thread_id)
        reply = yield Call("ixsync", [tk.ids, tk.order, tk.cp, tk.ix], [])
        entries, removed, added = (_texts(x) for x in reply)
        score = (yield from self._activity(thread_id)) if entries else 0
        yield from self._move_index(thread_id, score, entries, removed, added)

    def index_secret(self, fresh: Typed) -> Op[Typed]:
        """The index secret (SET NX, then GET: one call)."""
        reply = yield Call("ixsecret", [self.keys.ix_secret], [E.pack_item(fresh)])
        return E.unpack_item(reply)

    def _index_sources(self, query: IndexQuery) -> Op[builtins.list[str]]:
        """The entries a filtered page walks: the query's smallest option, and
        the key-id entries of other keys (rows a filter must always visit)."""
        best = query.options[0]
        if len(query.options) > 1:
            sizes: dict[str, int] = {}
            for e in {e for o in query.options for e in o}:
                n = yield Call(None, [self.keys.ix(e)], [], command="ZCARD")
                sizes[e] = int(n)
            best = min(query.options, key=lambda o: sum(sizes[e] for e in o))
        kinds = set(
            _texts((yield Call(None, [self.keys.ix_keys], [], command="SMEMBERS")))
        )
        if BUILT not in kinds:
            yield from self._backfill()
            return (yield from self._index_sources(query))
        others = {k for k in kinds if k != query.key_id and k != BUILT}
        return sorted(set(best) | others)

    def _backfill(self) -> Op[None]:
        """Index every registered thread once (a store written before the index
        existed: its rows join the `#?` entry, visited by every filter, until
        the thread is written again); then mark the index built."""
        cursor = 0
        while True:
            threads = yield from self.threads(cursor, 500)
            for t in threads:
                yield from self._sync_index(t)
            if len(threads) < 500:
                break
            cursor += 500
        yield Call(None, [self.keys.ix_keys], [BUILT], command="SADD")

    def _index_page(
        self, entries: Sequence[str], before: tuple[int, str] | None, limit: int
    ) -> Op[builtins.list[tuple[int, str, str]]]:
        """Up to `limit` distinct threads of the entries' indexes after
        `before`, newest first, as (ms, thread id, an entry listing it)."""
        ms, thread = ("", "") if before is None else (str(before[0]), before[1])
        groups = [[e] for e in entries] if self.s.cluster else [list(entries)]
        pages: builtins.list[builtins.list[tuple[int, str, str]]] = []
        for group in groups:
            keys = [self.keys.ix(e) for e in group]
            reply = yield Call("ixrecent", keys, [ms, thread, limit])
            for e, flat in zip(group, reply, strict=True):
                pages.append(
                    [
                        (int(float(L.text(flat[i + 1]))), L.text(flat[i]), e)
                        for i in range(0, len(flat), 2)
                    ]
                )
        out: builtins.list[tuple[int, str, str]] = []
        seen: set[str] = set()
        for item in heapq.merge(*pages, key=lambda x: (x[0], x[1]), reverse=True):
            if item[1] not in seen:
                seen.add(item[1])
                out.append(item)
                if len(out) == limit:
                    break
        return out

    def _indexed_heads(
        self, before: tuple[int, str] | None, limit: int, query: IndexQuery
    ) -> Op[tuple[builtins.list[tuple[int, CheckpointRow]], tuple[int, str] | None]]:
        """A page of the thread index's candidates for `query`. A candidate
        without checkpoints is reaped; one whose latest row lacks the entry
        that listed it (a lost race) is taken out of that entry."""
        entries = yield from self._index_sources(query)
        found = yield from self._index_page(entries, before, limit)
        rows = yield from self.latest_rows([t for _, t, _ in found])
        heads: builtins.list[tuple[int, CheckpointRow]] = []
        gone: builtins.list[str] = []
        for (ms, t, entry), (row, _) in zip(found, rows, strict=True):
            if row is None:
                gone.append(t)
                continue
            if entry not in index_entries(row.index):
                at = yield from self._activity(t)
                yield from self._move_index(t, at, [], [entry], [])
            heads.append((ms, row))
        yield from self._reap(gone)
        resume = (found[-1][0], found[-1][1]) if len(found) == limit else None
        return heads, resume

    # -- thread listing: a registry page, then the page's latest rows ---------------

    def recent_threads(
        self, before: tuple[int, str] | None, limit: int
    ) -> Op[builtins.list[tuple[int, str]]]:
        """Up to `limit` registry entries after `before`, newest first."""
        ms, thread = ("", "") if before is None else (str(before[0]), before[1])
        reply = yield Call("recent", [self.keys.threads], [ms, thread, limit])
        return [
            (int(float(L.text(reply[i + 1]))), L.text(reply[i]))
            for i in range(0, len(reply), 2)
        ]

    def latest_rows(
        self, thread_ids: Sequence[str]
    ) -> Op[builtins.list[tuple[CheckpointRow | None, int | None]]]:
        """Latest row and deletion time per thread: one call (one per thread on
        a Cluster)."""
        groups = [[t] for t in thread_ids] if self.s.cluster else [list(thread_ids)]
        out: builtins.list[tuple[CheckpointRow | None, int | None]] = []
        for group in groups:
            if not group:
                continue
            keys: builtins.list[str] = []
            for t in group:
                tk = self.keys.thread(t)
                keys += [tk.ids, tk.order, tk.cp, tk.gone]
            reply = yield Call("heads", keys, list(group))
            for t, (mem, row, gone) in zip(group, reply, strict=True):
                out.append((_head_row(t, mem, row), int(gone) if gone else None))
        return out

    def thread_heads(
        self,
        before: tuple[int, str] | None,
        limit: int,
        query: IndexQuery | None = None,
    ) -> Op[tuple[builtins.list[tuple[int, CheckpointRow]], tuple[int, str] | None]]:
        if query is not None:
            return (yield from self._indexed_heads(before, limit, query))
        entries = yield from self.recent_threads(before, limit)
        found = yield from self.latest_rows([t for _, t in entries])
        yield from self._reap(
            t for (_, t), (row, _) in zip(entries, found, strict=True) if row is None
        )
        heads = [
            (ms, row)
            for (ms, _), (row, _) in zip(entries, found, strict=True)
            if row is not None
        ]
        return heads, (entries[-1] if len(entries) == limit else None)

    # -- delta history: one call per page of ancestors ------------------------------

    def delta_history(
        self, thread_id: str, ns: str, cid: str | None, channels: Sequence[str]
    ) -> Op[DeltaHistory | None]:
        tk = self.keys.thread(thread_id)
        target = yield from self.get(thread_id, ns, cid)
        if target is None:
            return None
        rows: dict[
            str, tuple[CheckpointRow, builtins.list[WriteRow], dict[str, Any]]
        ] = {}
        fetched_to: set[str] = set()

        class NeedMore(Exception):
            pass

        def get_row(c: str) -> CheckpointRow | None:
            if c in rows:
                return rows[c][0]
            if c in fetched_to:
                return None
            raise NeedMore(c)

        while True:
            try:
                history = walk_delta_history(
                    target.row,
                    channels,
                    get_row=get_row,
                    get_writes=lambda r: ordered_writes(rows[r.checkpoint_id][1]),
                    get_value=lambda r, ch: rows[r.checkpoint_id][2].get(ch),
                )
                break
            except NeedMore as more:
                start = str(more.args[0])
                args = [
                    E.enc(ns),
                    start,
                    WALK_PAGE,
                    ormsgpack.packb(list(channels)),
                    tk.log_prefix,
                ]
                replies = yield Call("walk", tk.script_keys, args)
                if not replies:
                    fetched_to.add(start)
                last: CheckpointRow | None = None
                for r in replies:
                    f = L.parse_fetched(thread_id, r)
                    vals = {ch: _manifest(v) for ch, (v, _, _) in f.values.items()}
                    rows[f.row.checkpoint_id] = (f.row, f.writes, vals)
                    last = f.row
                if len(replies) < WALK_PAGE and last is not None:
                    if last.parent_id is not None and last.parent_id not in rows:
                        fetched_to.add(last.parent_id)
        pending = {
            ch: v
            for ch, v in history.seeds.items()
            if isinstance(v, ListItems) and not v.items and v.runs
        }
        if pending:
            req = [[v.epoch, [list(r) for r in v.runs]] for v in pending.values()]
            items = yield Call(
                "ranges", [tk.ids], [ormsgpack.packb(req), tk.log_prefix]
            )
            for (ch, v), got in zip(pending.items(), items, strict=True):
                L.check_log_items(v.epoch, v.runs, len(got))
                history.seeds[ch] = ListItems(
                    v.epoch, v.runs, tuple(E.unpack_item(i) for i in got)
                )
        return history

    def log_items(
        self, thread_id: str, ns: str, channel: str, epoch: str, runs: Runs
    ) -> Op[builtins.list[Typed]]:
        """The serialized elements at `runs` of an element log: one call."""
        tk = self.keys.thread(thread_id)
        req = [[epoch, [list(r) for r in runs]]]
        reply = yield Call("ranges", [tk.ids], [ormsgpack.packb(req), tk.log_prefix])
        got = reply[0] if reply else []
        L.check_log_items(epoch, runs, len(got))
        return [E.unpack_item(i) for i in got]

    # -- history rewrites: dump, transform with `model`, replace --------------------

    def _load(self, thread_id: str) -> Op[tuple[model.Thread, int]]:
        tk = self.keys.thread(thread_id)
        dump = yield Call("dump", tk.script_keys, [tk.log_prefix])
        return L.thread_from_dump(thread_id, dump)

    def _replace(
        self, thread_id: str, thread: model.Thread, gen: int | None
    ) -> Op[bool]:
        tk = self.keys.thread(thread_id)
        keys = self._thread_keys(thread_id)
        args = ["" if gen is None else gen, self.s.ttl_ms, tk.log_prefix]
        dump = L.dump_thread(thread)
        runs = E.lua_pack(sorted(_run_keys(thread)))
        reply = yield Call("replace", keys, [*args, dump, thread_id, runs])
        if not isinstance(reply, list):
            return False
        yield from self._unlist(thread_id, [L.text(r) for r in reply[1]])
        if not thread and self.s.cluster:
            yield from self._unregister_cluster(thread_id)
        return True

    def _unregister_cluster(self, thread_id: str) -> Op[None]:
        """Take an emptied thread out of the registry (another slot); a put that
        raced in meanwhile is registered again."""
        yield Call(None, [self.keys.threads], [thread_id], command="ZREM")
        tk = self.keys.thread(thread_id)
        if (yield Call(None, [tk.ids], [], command="EXISTS")):
            now = int(time.time() * 1000)
            yield Call(None, [self.keys.threads], [now, thread_id], command="ZADD")

    def _rewrite(
        self, thread_id: str, change: Callable[[model.Thread], None]
    ) -> Op[bool]:
        """Apply `change` to the stored thread; False when it has no checkpoints."""
        for _ in range(10):
            thread, gen = yield from self._load(thread_id)
            if not thread:
                return False
            change(thread)
            if (yield from self._replace(thread_id, thread, gen)):
                yield from self._sync_index(thread_id)
                return True
        raise StoreError(f"thread {thread_id!r} kept changing during a history rewrite")

    def delete_thread(self, thread_id: str) -> Op[None]:
        tk = self.keys.thread(thread_id)
        keys = self._thread_keys(thread_id)
        runs = yield Call("delete", keys, [tk.log_prefix, thread_id])
        if self.s.cluster:
            yield Call(None, [self.keys.threads], [thread_id], command="ZREM")
        yield from self._unlist(thread_id, [L.text(r) for r in runs])
        yield from self._sync_index(thread_id)

    def prune(self, thread_ids: Iterable[str], keep_latest: bool) -> Op[None]:
        for t in thread_ids:
            if not keep_latest:
                yield from self.delete_thread(t)
                continue

            def change(thread: model.Thread) -> None:
                for ns in thread.values():
                    model.keep_latest(ns)

            yield from self._rewrite(t, change)

    def delete_runs(self, run_keys: Iterable[str]) -> Op[None]:
        keys = list(run_keys)
        threads: set[str] = set()
        for key in keys:
            members = yield Call(None, [self.keys.run(key)], [], command="SMEMBERS")
            threads.update(L.text(m) for m in members)
        wanted = set(keys)
        gone: builtins.list[str] = []
        for t in sorted(threads):

            def change(thread: model.Thread) -> None:
                for name, ns in list(thread.items()):
                    model.drop_run_records(ns, wanted)
                    doomed = {c for c, r in ns.rows.items() if r.run_key in wanted}
                    if doomed:
                        model.delete_ids(ns, doomed)
                    if not ns.rows:
                        del thread[name]

            if not (yield from self._rewrite(t, change)):
                gone.append(t)
        for key in keys:
            yield Call(None, [self.keys.run(key)], [], command="DEL")
        yield from self._reap(gone)

    def thread_records(self, thread_id: str) -> Op[builtins.list[WriteRow]]:
        """One script call: the record writes of the thread's stored
        checkpoints (no values, no logs; orphan writes left out)."""
        tk = self.keys.thread(thread_id)
        blobs = yield Call("records", [tk.cp, tk.w], [])
        return [
            w
            for blob in blobs
            for w in E.unpack_writes(blob)
            if w.channel == RECORD_CHANNEL
        ]

    def export_thread(self, thread_id: str) -> Op[model.Thread]:
        thread, _ = yield from self._load(thread_id)
        return thread

    def import_thread(self, thread_id: str, thread: model.Thread) -> Op[None]:
        """Replace a thread with `thread` (restoring it from the archive); it
        keeps its place in the registry, or takes its newest checkpoint's."""
        yield from self._replace(thread_id, thread, None)
        if thread:
            rows = [r for ns in thread.values() for r in ns.rows.values()]
            yield from self._register(thread_id, rows, restored_activity_ms(thread))
        yield from self._sync_index(thread_id)

    def mark_deleted(self, thread_id: str, at_us: int, ttl_s: int) -> Op[None]:
        key = self.keys.thread(thread_id).gone
        yield Call(None, [key], [str(at_us), "EX", str(ttl_s)], command="SET")

    def deleted_at(self, thread_id: str) -> Op[int | None]:
        found = yield Call(None, [self.keys.thread(thread_id).gone], [], command="GET")
        return None if found is None else int(found)

    def _register(
        self,
        thread_id: str,
        rows: Iterable[CheckpointRow],
        restored_ms: int | None = None,
    ) -> Op[None]:
        """Add a rewritten thread to the thread registry and run index: now, or
        (`restored_ms`) only when it is not registered yet."""
        if restored_ms is None:
            now = int(time.time() * 1000)
            yield Call(None, [self.keys.threads], [now, thread_id], command="ZADD")
        else:
            args = ["NX", restored_ms, thread_id]
            yield Call(None, [self.keys.threads], args, command="ZADD")
        runs = sorted({r.run_key for r in rows if r.run_key})
        if runs:
            tk = self.keys.thread(thread_id)
            yield Call(None, [tk.runs], runs, command="SADD")
        for run_key in runs:
            yield Call(None, [self.keys.run(run_key)], [thread_id], command="SADD")

    def copy_thread(self, source: str, target: str) -> Op[None]:
        src, _ = yield from self._load(source)
        if not src:
            return
        for _ in range(10):
            dst, gen = yield from self._load(target)
            added = model.copy_into(src, dst, target)
            if (yield from self._replace(target, dst, gen if dst else None)):
                break
        else:
            raise StoreError(f"thread {target!r} kept changing during copy_thread")
        yield from self._register(target, added)
        yield from self._sync_index(target)

    def count_checkpoints(self) -> Op[int]:
        """Checkpoints of every registered thread (reaping expired ones)."""
        total = 0
        cursor = 0
        empty: builtins.list[str] = []
        while True:
            threads = yield from self.threads(cursor, 500)
            for t in threads:
                n = yield Call(None, [self.keys.thread(t).cp], [], command="HLEN")
                total += int(n)
                if not int(n):
                    empty.append(t)
            if len(threads) < 500:
                break
            cursor += 500
        yield from self._reap(empty)
        return total


def _head_row(thread_id: str, mem: Any, blob: Any) -> CheckpointRow | None:
    """A thread's latest row from the heads script (None when it has none)."""
    if not blob:
        return None
    ns_enc, _, cid = L.text(mem).partition("\0")
    return E.unpack_row(thread_id, unquote(ns_enc), cid, blob)


def _run_keys(thread: model.Thread) -> set[str]:
    """Run keys of a thread's checkpoints (what its `runs` set holds)."""
    return {r.run_key for ns in thread.values() for r in ns.rows.values() if r.run_key}


def _texts(values: Iterable[Any]) -> builtins.list[str]:
    """A list reply of strings (bytes from a non-decoding client) as str."""
    return [L.text(v) for v in values]


def _as_list(value: Any) -> ListValue:
    assert isinstance(value, ListValue)
    return value


def _hold_nothing(thread_id: str) -> Held:
    """A reader that holds nothing decoded: every list element is sent."""
    return {}


def _manifest(value: Any) -> ResolvedValue | None:
    """A value as the walk needs it: lists unresolved (items fetched at the end)."""
    if isinstance(value, ListValue):
        return ListItems(value.epoch, value.runs, ())
    return value  # type: ignore[no-any-return]


def _stored(f: L.Fetched) -> StoredTuple:
    values: dict[str, ResolvedValue] = {}
    for ch, (v, items, held) in f.values.items():
        if not is_empty(v):
            values[ch] = L.list_items(v, items, held)
    return StoredTuple(row=f.row, values=values, writes=ordered_writes(f.writes))
