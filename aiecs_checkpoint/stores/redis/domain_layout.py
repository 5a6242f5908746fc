"""Redis layout of the domain data: key names and encodings (pure).

The scripts are in `stores.redis.domain_scripts`.

Keys (P = prefix, S = the session id percent-encoded, the same hash tag as the
thread with that id, so a session's group and its checkpoints share one Redis
Cluster slot; T = a conversation-session type, percent-encoded):

| key                      | type | content                                          |
|--------------------------|------|--------------------------------------------------|
| `P:{S}:sess`             | hash | `u` user, `uk` user-index key, `st` status,       |
|                          |      | `c`/`a` created / last activity (µs), `r`/`e`     |
|                          |      | request / error counts, `p` processing seconds,   |
|                          |      | `mt`/`m` metadata (serializer type and bytes),    |
|                          |      | `ia` activity last indexed by `d_track` (µs)      |
| `P:{S}:conv`             | list | conversation messages, oldest first (serialized)  |
| `P:{S}:convids`          | set  | message keys (id digests) run tracking appended   |
|                          |      | to `conv` (kept past the cap: none comes twice)   |
| `P:{S}:runs`             | hash | run key (`id:` + run id digest, or `local:` +     |
|                          |      | random) -> processing seconds reported so far;    |
|                          |      | `!` + run key -> 1 once the run's error counted   |
| `P:{S}:runq`             | zset | run key -> first-seen activity (µs): the newest   |
|                          |      | `RUNS_KEPT` runs keep their marks in `runs`       |
| `P:{S}:tc`               | str  | task context: u32 type length, type, bytes        |
| `P:{S}:hcp`              | hash | `store_checkpoint` id -> checkpoint (framed)       |
| `P:{S}:hcpo`             | zset | the same ids, score = store order (newest last)   |
| `P:{S}:csets`            | set  | T of every conversation session of S              |
| `P:{S}:cs:T`             | str  | a conversation session (framed like `tc`)         |
| `P:{S}:cm:T`             | list | its agent messages, oldest first                  |
| `P:{S}:ops`              | zset | ids of the group's last 64 counter updates and    |
|                          |      | appends (score: ms): a retry of one that ran      |
|                          |      | (after a socket timeout) changes nothing          |
| `P:groups`               | zset | S -> last write (ms): every group that holds data |
| `P:sessions`             | zset | S -> last activity (µs): listing, idle cleanup    |
| `P:sessions:u:{U}`       | zset | the same, for one user U (percent-encoded)       |
| `P:sessions:st:<status>` | zset | the same, for one status                          |

Counters change with HINCRBY/HINCRBYFLOAT inside one script, so concurrent
updates never lose an increment. Conversations are capped with RPUSH + LTRIM
keeping the newest. With a TTL, every write to a group gives all its keys the
same new deadline; the global indexes (other slots) are cleaned lazily when a
read finds a member whose group has expired. On a standalone server a write
updates them in the same script; on a cluster in separate calls after it.

Run tracking (`d_track`, one script per saver hook) creates the session when
missing, applies a run report once per run key (`runs`/`runq`), appends the
mirrored messages whose keys `convids` lacks, and trims `conv` to the cap, all
in one step. On a cluster it re-indexes the session (separate calls) only when
it was created, its status changed, or its indexed activity (`ia`) is more than
`INDEX_SLACK_US` old: per-put reports would otherwise cost four extra calls
each. So on a cluster, listing order and idle cleanup may see a tracked
session's activity up to a minute late (cleanup works in hours).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiecs_checkpoint.stores.domain_records import SessionRecord
from aiecs_checkpoint.stores.encoding import enc
from aiecs_checkpoint.stores.records import Typed
from aiecs_checkpoint.stores.redis.layout import text

_U32 = struct.Struct(">I")

INDEX_SLACK_US = 60_000_000
"""On a cluster, how stale `d_track` lets a session's index scores get (µs)."""


@dataclass(frozen=True, slots=True)
class DomainKeys:
    """Key names under one prefix."""

    prefix: str

    def base(self, session_id: str) -> str:
        return f"{self.prefix}:{{{enc(session_id)}}}:"

    def session(self, session_id: str) -> str:
        return self.base(session_id) + "sess"

    def conversation(self, session_id: str) -> str:
        return self.base(session_id) + "conv"

    def message_ids(self, session_id: str) -> str:
        return self.base(session_id) + "convids"

    def runs(self, session_id: str) -> str:
        return self.base(session_id) + "runs"

    def run_order(self, session_id: str) -> str:
        return self.base(session_id) + "runq"

    def task_context(self, session_id: str) -> str:
        return self.base(session_id) + "tc"

    def helper_checkpoints(self, session_id: str) -> str:
        return self.base(session_id) + "hcp"

    def helper_order(self, session_id: str) -> str:
        return self.base(session_id) + "hcpo"

    def conversation_session(self, session_id: str, session_type: str) -> str:
        return self.base(session_id) + "cs:" + enc(session_type)

    def agent_messages(self, session_id: str, session_type: str) -> str:
        return self.base(session_id) + "cm:" + enc(session_type)

    @property
    def groups(self) -> str:
        return f"{self.prefix}:groups"

    @property
    def sessions(self) -> str:
        return f"{self.prefix}:sessions"

    def by_user(self, user_id: str) -> str:
        return f"{self.prefix}:sessions:u:{{{enc(user_id)}}}"

    @property
    def status_prefix(self) -> str:
        return f"{self.prefix}:sessions:st:"

    def by_status(self, status: str) -> str:
        return self.status_prefix + enc(status)


def frame(value: Typed) -> bytes:
    """A serialized value as one Redis string: u32 type length, type, bytes."""
    kind = value[0].encode()
    return _U32.pack(len(kind)) + kind + value[1]


def unframe(blob: bytes) -> Typed:
    (n,) = _U32.unpack_from(blob)
    return blob[4 : 4 + n].decode(), blob[4 + n :]


def session_fields(record: SessionRecord, user_key: str) -> list[bytes | str]:
    """HSET arguments of a new session."""
    return [
        record.user_id,
        user_key,
        record.status,
        str(record.created_us),
        str(record.activity_us),
        str(record.request_count),
        str(record.error_count),
        repr(record.processing_time),
        record.metadata[0],
        record.metadata[1],
    ]


def parse_session(
    session_id: str, reply: Sequence[bytes] | Mapping[bytes, bytes]
) -> SessionRecord | None:
    """A session from HGETALL's reply: flat from a script, a dict from redis-py
    (None for a missing hash)."""
    if not reply:
        return None
    if isinstance(reply, Mapping):
        h = {text(k): v for k, v in reply.items()}
    else:
        h = {text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}
    return SessionRecord(
        session_id=session_id,
        user_id=text(h["u"]),
        status=text(h["st"]),
        created_us=int(h["c"]),
        activity_us=int(h["a"]),
        request_count=int(h["r"]),
        error_count=int(h["e"]),
        processing_time=float(h["p"]),
        metadata=(text(h["mt"]), bytes(h["m"])),
    )
