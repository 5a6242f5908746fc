"""Sessions, conversations and task contexts on Redis (layout: `domain_layout`).

Each operation is a generator of `Call`s, performed by the same executors as
the checkpoint store's (`stores.redis.client`), so the domain data shares its
connection pool, retries and typed errors. A write is one script call on a standalone
server; on a cluster, the global indexes (other slots) follow in separate calls
(for `track_run`, only when they would otherwise go stale; see the layout).

When the engine's serializer encrypts (`EncryptedSerializer`), user ids never
reach Redis in clear: the session hash keeps the user id serialized (so
encrypted), and a user's session index is named by an HMAC of the user id
under a random key stored encrypted in Redis (`P:usersecret`), so someone
reading Redis can neither read user ids nor confirm a guessed one.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

from aiecs_checkpoint.domain.serde import unwrap
from aiecs_checkpoint.errors import InvalidConfigError, StoreError
from aiecs_checkpoint.stores.domain_records import (
    RUNS_KEPT,
    DomainStats,
    MetadataConflict,
    RunUpdate,
    SessionChange,
    SessionRecord,
    Tracked,
    newest,
)
from aiecs_checkpoint.stores.encoding import enc
from aiecs_checkpoint.stores.ops import Op
from aiecs_checkpoint.stores.records import Typed, random_id
from aiecs_checkpoint.stores.redis import domain_layout as D
from aiecs_checkpoint.stores.redis.client import Call, RedisSettings
from aiecs_checkpoint.stores.redis.layout import text

SCAN = 500
"""Groups examined per call when counting or listing (one per call on a cluster)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisDomainStore:
    """The domain store on Redis: every operation yields `Call`s (no I/O)."""

    backend = "redis"

    def __init__(
        self,
        settings: RedisSettings,
        ttl_ms: int = 0,
        serde: Callable[[], SerializerProtocol] | None = None,
    ) -> None:
        self.cluster = settings.cluster
        self.ttl_ms = ttl_ms
        self.keys = D.DomainKeys(settings.prefix)
        self._serde = serde
        self._secret: bytes | None = None

    # -- user ids under encryption ---------------------------------------------------

    def _sealing(self) -> SerializerProtocol | None:
        """The engine's serializer when it encrypts, else None."""
        serde = self._serde() if self._serde is not None else None
        encrypts = serde is not None and isinstance(unwrap(serde), EncryptedSerializer)
        return serde if encrypts else None

    def _seal(self) -> Callable[[str], Typed] | None:
        serde = self._sealing()
        return None if serde is None else serde.dumps_typed

    def _unseal(self, sealed: Typed) -> str:
        serde = self._sealing() or (self._serde() if self._serde else None)
        if serde is None:
            raise StoreError("a sealed user id needs the serializer that sealed it")
        return str(serde.loads_typed(sealed))

    def _parse(self, session_id: str, reply: Any) -> SessionRecord | None:
        return D.parse_session(session_id, reply, self._unseal)

    def _user_key(self, user_id: str) -> Op[str]:
        """The key of a user's session index: by user id in clear, or under
        encryption by an HMAC of it (the HMAC key is made once per prefix,
        stored encrypted, and read once per process)."""
        serde = self._sealing()
        if serde is None:
            return self.keys.by_user(user_id)
        if self._secret is None:
            fresh = D.frame(serde.dumps_typed(os.urandom(32).hex()))
            stored = yield Call("d_secret", [self.keys.user_secret], [fresh])
            try:
                secret = serde.loads_typed(D.unframe(stored))
            except Exception as exc:
                raise InvalidConfigError(
                    f"{self.keys.user_secret} cannot be decrypted with this "
                    "serializer: every process sharing the key_prefix must use the "
                    f"same encryption key ({type(exc).__name__}: {exc})"
                ) from exc
            self._secret = str(secret).encode()
        digest = hmac.new(self._secret, user_id.encode(), "sha256").hexdigest()
        return self.keys.by_user_digest(digest[:32])

    def _write_head(self, session_id: str) -> list[Any]:
        return [self.keys.base(session_id), self.ttl_ms, _now_ms(), session_id]

    def _groups(self, key: str) -> list[str]:
        return [key] if self.cluster else [key, self.keys.groups]

    def _touch_group(self, session_id: str) -> Op[None]:
        if self.cluster:
            yield Call(
                None, [self.keys.groups], [_now_ms(), session_id], command="ZADD"
            )

    # -- sessions ----------------------------------------------------------------

    def create_session(self, record: SessionRecord) -> Op[tuple[SessionRecord, bool]]:
        sid = record.session_id
        user_key = yield from self._user_key(record.user_id)
        indexes = [self.keys.groups, self.keys.sessions, user_key]
        indexes.append(self.keys.by_status(record.status))
        keys = [self.keys.session(sid)] + ([] if self.cluster else indexes)
        fields = D.session_fields(record, user_key, self._seal())
        args = [*self._write_head(sid), *fields]
        created, flat = yield Call("d_create", keys, args)
        stored = self._parse(sid, flat)
        assert stored is not None
        if created and self.cluster:
            yield Call(None, [indexes[0]], [_now_ms(), sid], command="ZADD")
            for key in indexes[1:]:
                yield Call(None, [key], [record.activity_us, sid], command="ZADD")
        return stored, bool(created)

    def get_session(self, session_id: str) -> Op[SessionRecord | None]:
        flat = yield Call(None, [self.keys.session(session_id)], [], command="HGETALL")
        return self._parse(session_id, flat)

    def update_session(
        self, session_id: str, change: SessionChange, expect: Typed | None
    ) -> Op[SessionRecord | None]:
        key = self.keys.session(session_id)
        keys = [key] if self.cluster else [key, self.keys.groups, self.keys.sessions]
        meta = change.metadata
        args = [
            *self._write_head(session_id),
            change.activity_us,
            change.requests,
            change.errors,
            repr(float(change.processing_time)),
            change.status or "",
            meta[0] if meta else "",
            meta[1] if meta else b"",
            "1" if expect is not None else "0",
            expect[0] if expect else "",
            expect[1] if expect else b"",
            self.keys.status_prefix,
            random_id(),
        ]
        reply = yield Call("d_update", keys, args)
        if reply[0] == 0:
            return None
        if reply[0] == 2:
            raise MetadataConflict(session_id)
        stored = self._parse(session_id, reply[1])
        assert stored is not None
        if self.cluster:
            yield from self._reindex_cluster(stored, text(reply[2]))
        return stored

    def _reindex_cluster(self, s: SessionRecord, old_status: str) -> Op[None]:
        sid, score = s.session_id, s.activity_us
        yield Call(None, [self.keys.groups], [_now_ms(), sid], command="ZADD")
        user_key = yield from self._user_key(s.user_id)
        for key in (self.keys.sessions, user_key):
            yield Call(None, [key], [score, sid], command="ZADD")
        if old_status != s.status:
            yield Call(None, [self.keys.by_status(old_status)], [sid], command="ZREM")
        yield Call(None, [self.keys.by_status(s.status)], [score, sid], command="ZADD")

    def _fetch_sessions(self, ids: Sequence[str]) -> Op[list[SessionRecord | None]]:
        out: list[SessionRecord | None] = []
        step = 1 if self.cluster else SCAN
        for i in range(0, len(ids), step):
            chunk = ids[i : i + step]
            bases = [self.keys.base(s) for s in chunk]
            replies = yield Call("d_sessions", [self.keys.session(chunk[0])], bases)
            out += [self._parse(s, r) for s, r in zip(chunk, replies, strict=True)]
        return out

    def list_sessions(
        self, user_id: str | None, status: str | None, offset: int, limit: int
    ) -> Op[list[SessionRecord]]:
        if user_id is not None:
            index = yield from self._user_key(user_id)
        elif status is not None:
            index = self.keys.by_status(status)
        else:
            index = self.keys.sessions
        found: list[SessionRecord] = []
        position, page = 0, max(limit + offset, 16)
        while len(found) < offset + limit:
            ids = yield Call(
                None, [index], [position, position + page - 1], command="ZREVRANGE"
            )
            ids = [text(i) for i in ids]
            stale: list[str] = []
            for sid, record in zip(
                ids, (yield from self._fetch_sessions(ids)), strict=True
            ):
                if record is None or (user_id and record.user_id != user_id):
                    stale.append(sid)
                elif status is None or record.status == status:
                    found.append(record)
            if stale:
                yield Call(None, [index], stale, command="ZREM")
            if len(ids) < page:
                break
            position += page - len(stale)
        return found[offset : offset + limit]

    def idle_sessions(self, cutoff_us: int, limit: int) -> Op[list[str]]:
        ids = yield Call(
            None,
            [self.keys.sessions],
            ["-inf", f"({cutoff_us}", "LIMIT", 0, limit],
            command="ZRANGEBYSCORE",
        )
        return [text(i) for i in ids]

    def delete_session(self, session_id: str) -> Op[bool]:
        key = self.keys.session(session_id)
        keys = [key] if self.cluster else [key, self.keys.groups, self.keys.sessions]
        args = [self.keys.base(session_id), session_id, self.keys.status_prefix]
        removed, user_key, status = yield Call("d_delete", keys, args)
        if self.cluster:
            yield Call(None, [self.keys.groups], [session_id], command="ZREM")
            yield Call(None, [self.keys.sessions], [session_id], command="ZREM")
            if user_key:
                yield Call(None, [text(user_key)], [session_id], command="ZREM")
            if status:
                index = self.keys.status_prefix + text(status)
                yield Call(None, [index], [session_id], command="ZREM")
        return bool(removed)

    # -- conversations and task contexts -------------------------------------------

    def _append(
        self, session_id: str, key: str, blob: bytes, cap: int, required: str
    ) -> Op[int]:
        args = [*self._write_head(session_id), cap, blob, required, random_id()]
        n = yield Call("d_append", self._groups(key), args)
        if n >= 0:
            yield from self._touch_group(session_id)
        return int(n)

    def append_message(self, session_id: str, message: Typed, cap: int) -> Op[int]:
        key = self.keys.conversation(session_id)
        return (yield from self._append(session_id, key, D.frame(message), cap, ""))

    def track_run(
        self,
        session_id: str,
        new: SessionRecord,
        update: RunUpdate,
        messages: Sequence[tuple[str, Typed]],
        cap: int,
    ) -> Op[Tracked]:
        sid = session_id
        user_key = yield from self._user_key(new.user_id)
        keys = [
            self.keys.session(sid),
            self.keys.runs(sid),
            self.keys.run_order(sid),
            self.keys.conversation(sid),
            self.keys.message_ids(sid),
        ]
        if not self.cluster:
            keys += [self.keys.groups, self.keys.sessions]
        args: list[Any] = [
            *self._write_head(sid),
            *D.session_fields(new, user_key, self._seal()),
            update.run_key or "",
            repr(float(update.elapsed)),
            "1" if update.failed else "0",
            update.activity_us,
            RUNS_KEPT,
            cap,
            self.keys.status_prefix,
            D.INDEX_SLACK_US,
        ]
        for message_id, message in messages:
            args += [message_id, D.frame(message)]
        created, flat, old, reindex, appended = yield Call("d_track", keys, args)
        stored = self._parse(sid, flat)
        assert stored is not None
        if self.cluster and reindex:
            yield from self._reindex_cluster(stored, text(old))
        return Tracked(stored, bool(created), tuple(text(a) for a in appended))

    def known_message_ids(self, session_id: str, ids: Sequence[str]) -> Op[set[str]]:
        if not ids:
            return set()
        key = self.keys.message_ids(session_id)
        flags = yield Call(None, [key], list(ids), command="SMISMEMBER")
        return {i for i, flag in zip(ids, flags, strict=True) if flag}

    def _range(self, key: str, limit: int) -> Op[list[Typed]]:
        start = -limit if limit > 0 else 0
        blobs = yield Call(None, [key], [start, -1], command="LRANGE")
        return newest([D.unframe(b) for b in blobs], limit)

    def messages(self, session_id: str, limit: int) -> Op[list[Typed]]:
        return (yield from self._range(self.keys.conversation(session_id), limit))

    def _put(self, session_id: str, key: str, value: Typed, kind: str) -> Op[None]:
        args = [*self._write_head(session_id), D.frame(value), kind]
        yield Call("d_put", self._groups(key), args)
        yield from self._touch_group(session_id)

    def _get(self, key: str) -> Op[Typed | None]:
        blob = yield Call(None, [key], [], command="GET")
        return None if blob is None else D.unframe(blob)

    def put_task_context(self, session_id: str, context: Typed) -> Op[None]:
        key = self.keys.task_context(session_id)
        yield from self._put(session_id, key, context, "")

    def get_task_context(self, session_id: str) -> Op[Typed | None]:
        return (yield from self._get(self.keys.task_context(session_id)))

    def put_conversation_session(
        self, session_id: str, session_type: str, data: Typed
    ) -> Op[None]:
        key = self.keys.conversation_session(session_id, session_type)
        yield from self._put(session_id, key, data, enc(session_type))

    def get_conversation_session(
        self, session_id: str, session_type: str
    ) -> Op[Typed | None]:
        key = self.keys.conversation_session(session_id, session_type)
        return (yield from self._get(key))

    def append_agent_message(
        self, session_id: str, session_type: str, message: Typed, cap: int
    ) -> Op[bool]:
        key = self.keys.agent_messages(session_id, session_type)
        kind = enc(session_type)
        n = yield from self._append(session_id, key, D.frame(message), cap, kind)
        return n >= 0

    def agent_messages(
        self, session_id: str, session_type: str, limit: int
    ) -> Op[list[Typed]]:
        key = self.keys.agent_messages(session_id, session_type)
        return (yield from self._range(key, limit))

    def put_helper_checkpoint(
        self, session_id: str, checkpoint_id: str, data: Typed
    ) -> Op[None]:
        keys = self._groups(self.keys.helper_checkpoints(session_id))
        keys.insert(1, self.keys.helper_order(session_id))
        args = [*self._write_head(session_id), checkpoint_id, D.frame(data)]
        yield Call("d_helper_put", keys, args)
        yield from self._touch_group(session_id)

    def helper_checkpoints(
        self, session_id: str, checkpoint_id: str | None, limit: int
    ) -> Op[list[tuple[str, Typed]]]:
        keys = [
            self.keys.helper_checkpoints(session_id),
            self.keys.helper_order(session_id),
        ]
        reply = yield Call("d_helper_get", keys, [checkpoint_id or "", limit])
        return [(text(cid), D.unframe(blob)) for cid, blob in reply]

    # -- observability ----------------------------------------------------------------

    def stats(self, now_us: int) -> Op[DomainStats]:
        del now_us
        by_status: dict[str, int] = {}
        messages = conversation_sessions = helpers = 0
        step = 1 if self.cluster else SCAN
        position = 0
        while True:
            ids = yield Call(
                None,
                [self.keys.groups],
                [position, position + SCAN - 1],
                command="ZRANGE",
            )
            ids = [text(i) for i in ids]
            stale: list[str] = []
            for i in range(0, len(ids), step):
                chunk = ids[i : i + step]
                bases = [self.keys.base(s) for s in chunk]
                replies = yield Call("d_stats", [self.keys.session(chunk[0])], bases)
                for sid, (live, status, msgs, kinds, found) in zip(
                    chunk, replies, strict=True
                ):
                    if not live:
                        stale.append(sid)
                        continue
                    if status:
                        s = text(status)
                        by_status[s] = by_status.get(s, 0) + 1
                    messages += int(msgs)
                    conversation_sessions += int(kinds)
                    helpers += int(found)
            if stale:
                yield Call(None, [self.keys.groups], stale, command="ZREM")
            if len(ids) < SCAN:
                break
            position += SCAN - len(stale)
        return DomainStats(
            total_sessions=sum(by_status.values()),
            active_sessions=by_status.get("active", 0),
            total_messages=messages,
            conversation_sessions=conversation_sessions,
            by_status=by_status,
            helper_checkpoints=helpers,
        )
