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
| `P:sessions:u:{U}`       | zset | the same, for one user U (percent-encoded); under |
|                          |      | encryption `P:sessions:uh:{H}` instead, H = the   |
|                          |      | first 32 hex digits of HMAC-SHA256(secret, user)  |
| `P:sessions:st:<status>` | zset | the same, for one status                          |
| `P:usersecret`           | str  | under encryption only: the HMAC secret (random,   |
|                          |      | made once per prefix), serialized, so encrypted   |

Two layouts of the user id. Without encryption (the engine's serializer is
not an `EncryptedSerializer`), `u` holds the user id and `uk` names
`P:sessions:u:{U}`, as before. When the serializer encrypts, `u` holds the
user id serialized by it (so encrypted; `SEALED` + framed) and the user's
index is `P:sessions:uh:{H}`: someone reading Redis can neither read a user
id nor confirm a guessed one without the encryption key. Every process
sharing a prefix must use the same serializer (a process with another key is
refused with `InvalidConfigError`).

What Redis holds in clear, with or without encryption (everything else,
every user value, is the serializer's bytes: encrypted under
`EncryptedSerializer`):

* checkpoints (`stores.redis.layout`): thread ids (in key names, in
  `P:threads` and in the run indexes), checkpoint namespaces and checkpoint
  ids (key fields, zset members), parent checkpoint ids, channel names and
  channel versions (hash fields, row headers), list epochs and element
  positions, task ids, task paths (which hold node names) and the channel and
  idx of each pending write, the DeltaChannel names of a row, run keys
  (an unkeyed blake2b digest of the run id), the times of last activity (ms),
  the serializer's type names (e.g. `msgpack+aes`);
* domain data (this module): session ids (= thread ids, in key names and
  index members), session status, created / activity times, request and
  error counts, processing seconds, conversation-session types (T, in key
  names and `csets`), `store_checkpoint` ids, message-key digests
  (`convids`), run-key digests (`runs`, `runq`), op ids, the serializer's type
  names; and, without encryption only, user ids.

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
from collections.abc import Callable, Mapping, Sequence
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
        """A user's session index, named by the user id (no encryption)."""
        return f"{self.prefix}:sessions:u:{{{enc(user_id)}}}"

    def by_user_digest(self, digest: str) -> str:
        """A user's session index, named by a keyed digest (encryption)."""
        return f"{self.prefix}:sessions:uh:{{{digest}}}"

    @property
    def user_secret(self) -> str:
        return f"{self.prefix}:usersecret"

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


SEALED = b"\xff"
"""First byte of a sealed (serialized, encrypted) user id in `u`: a byte no
UTF-8 text starts with, so a plaintext user id is never mistaken for one."""


def user_value(user_id: str, seal: Callable[[str], Typed] | None) -> bytes | str:
    """The `u` field: the user id, or with `seal` its sealed form."""
    return user_id if seal is None else SEALED + frame(seal(user_id))


def session_fields(
    record: SessionRecord, user_key: str, seal: Callable[[str], Typed] | None = None
) -> list[bytes | str]:
    """HSET arguments of a new session (`seal`: see `user_value`)."""
    return [
        user_value(record.user_id, seal),
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
    session_id: str,
    reply: Sequence[bytes] | Mapping[bytes, bytes],
    unseal: Callable[[Typed], str],
) -> SessionRecord | None:
    """A session from HGETALL's reply: flat from a script, a dict from redis-py
    (None for a missing hash). A sealed user id is opened with `unseal`."""
    if not reply:
        return None
    if isinstance(reply, Mapping):
        h = {text(k): v for k, v in reply.items()}
    else:
        h = {text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}
    return SessionRecord(
        session_id=session_id,
        user_id=_user_id(h["u"], unseal),
        status=text(h["st"]),
        created_us=int(h["c"]),
        activity_us=int(h["a"]),
        request_count=int(h["r"]),
        error_count=int(h["e"]),
        processing_time=float(h["p"]),
        metadata=(text(h["mt"]), bytes(h["m"])),
    )


def _user_id(raw: bytes | str, unseal: Callable[[Typed], str]) -> str:
    if isinstance(raw, bytes) and raw.startswith(SEALED):
        return unseal(unframe(raw[1:]))
    return text(raw)
