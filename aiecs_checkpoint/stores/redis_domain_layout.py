"""Redis layout of the domain data: key names, encodings and scripts (pure).

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
| `P:{S}:csets`            | set  | T of every conversation session of S              |
| `P:{S}:cs:T`             | str  | a conversation session (framed like `tc`)         |
| `P:{S}:cm:T`             | list | its agent messages, oldest first                  |
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

from aiecs_checkpoint.stores.base import Typed
from aiecs_checkpoint.stores.domain import SessionRecord
from aiecs_checkpoint.stores.redis_layout import enc, text

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


_COMMON = r"""
local function touch(base, ttl)
  if ttl <= 0 then return end
  for _, k in ipairs({'sess', 'conv', 'tc', 'csets', 'convids', 'runs', 'runq'}) do
    redis.call('PEXPIRE', base .. k, ttl)
  end
  for _, t in ipairs(redis.call('SMEMBERS', base .. 'csets')) do
    redis.call('PEXPIRE', base .. 'cs:' .. t, ttl)
    redis.call('PEXPIRE', base .. 'cm:' .. t, ttl)
  end
end
local function group_keys(base)
  local keys = {base .. 'sess', base .. 'conv', base .. 'tc', base .. 'csets',
    base .. 'convids', base .. 'runs', base .. 'runq'}
  for _, t in ipairs(redis.call('SMEMBERS', base .. 'csets')) do
    keys[#keys + 1] = base .. 'cs:' .. t
    keys[#keys + 1] = base .. 'cm:' .. t
  end
  return keys
end
"""

# KEYS: sess [, groups, sessions, by_user, by_status]
# ARGV: base, ttl_ms, now_ms, S, user, user_key, status, created, activity,
#       requests, errors, processing, meta_type, meta
CREATE = (
    _COMMON
    + r"""
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], 'u', ARGV[5], 'uk', ARGV[6], 'st', ARGV[7],
  'c', ARGV[8], 'a', ARGV[9], 'r', ARGV[10], 'e', ARGV[11], 'p', ARGV[12],
  'mt', ARGV[13], 'm', ARGV[14])
touch(ARGV[1], tonumber(ARGV[2]))
if #KEYS > 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  for i = 3, 5 do redis.call('ZADD', KEYS[i], ARGV[9], ARGV[4]) end
end
return {1, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: sess [, groups, sessions]
# ARGV: base, ttl_ms, now_ms, S, activity, requests, errors, processing,
#       status ('' keeps), meta_type ('' keeps), meta, expect ('1' checks),
#       expected_type, expected_meta, status_prefix
UPDATE = (
    _COMMON
    + r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
if ARGV[12] == '1' then
  local cur = redis.call('HMGET', KEYS[1], 'mt', 'm')
  if cur[1] ~= ARGV[13] or cur[2] ~= ARGV[14] then return {2} end
end
local old = redis.call('HGET', KEYS[1], 'st')
redis.call('HSET', KEYS[1], 'a', ARGV[5])
if ARGV[6] ~= '0' then redis.call('HINCRBY', KEYS[1], 'r', ARGV[6]) end
if ARGV[7] ~= '0' then redis.call('HINCRBY', KEYS[1], 'e', ARGV[7]) end
if ARGV[8] ~= '0.0' then redis.call('HINCRBYFLOAT', KEYS[1], 'p', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'st', ARGV[9]) end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'mt', ARGV[10], 'm', ARGV[11]) end
touch(ARGV[1], tonumber(ARGV[2]))
local new = redis.call('HGET', KEYS[1], 'st')
if #KEYS > 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
  redis.call('ZADD', redis.call('HGET', KEYS[1], 'uk'), ARGV[5], ARGV[4])
  if old ~= new then redis.call('ZREM', ARGV[15] .. old, ARGV[4]) end
  redis.call('ZADD', ARGV[15] .. new, ARGV[5], ARGV[4])
end
return {1, redis.call('HGETALL', KEYS[1]), old}
"""
)

# KEYS: list key [, groups]
# ARGV: base, ttl_ms, now_ms, S, cap, blob, required conversation-session type
APPEND = (
    _COMMON
    + r"""
if ARGV[7] ~= '' and redis.call('SISMEMBER', ARGV[1] .. 'csets', ARGV[7]) == 0 then
  return -1
end
local n = redis.call('RPUSH', KEYS[1], ARGV[6])
local cap = tonumber(ARGV[5])
if n > cap then
  redis.call('LTRIM', KEYS[1], -cap, -1)
  n = cap
end
touch(ARGV[1], tonumber(ARGV[2]))
if #KEYS > 1 then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4]) end
return n
"""
)

# KEYS: key [, groups]
# ARGV: base, ttl_ms, now_ms, S, blob, conversation-session type ('' for none)
PUT = (
    _COMMON
    + r"""
redis.call('SET', KEYS[1], ARGV[5])
if ARGV[6] ~= '' then redis.call('SADD', ARGV[1] .. 'csets', ARGV[6]) end
touch(ARGV[1], tonumber(ARGV[2]))
if #KEYS > 1 then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4]) end
return 1
"""
)

# KEYS: sess [, groups, sessions]   ARGV: base, S, status_prefix
DELETE = (
    _COMMON
    + r"""
local h = redis.call('HMGET', KEYS[1], 'uk', 'st')
local n = redis.call('DEL', unpack(group_keys(ARGV[1])))
if #KEYS > 1 then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
  if h[1] then redis.call('ZREM', h[1], ARGV[2]) end
  if h[2] then redis.call('ZREM', ARGV[3] .. h[2], ARGV[2]) end
end
return {n, h[1] or '', h[2] or ''}
"""
)

# KEYS: sess, runs, runq, conv, convids [, groups, sessions]
# ARGV: base, ttl_ms, now_ms, S, the 10 `session_fields` of a new session,
#       run key ('' for none), elapsed seconds,
#       failed ('1'/'0'), activity, runs kept, cap, status_prefix, index slack,
#       then (message id, framed message) pairs
# Returns {created, HGETALL sess, status before, re-index (cluster), appended ids}
TRACK = (
    _COMMON
    + r"""
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'u', ARGV[5], 'uk', ARGV[6], 'st', ARGV[7],
    'c', ARGV[8], 'a', ARGV[9], 'r', ARGV[10], 'e', ARGV[11], 'p', ARGV[12],
    'mt', ARGV[13], 'm', ARGV[14])
  created = 1
end
local old = redis.call('HGET', KEYS[1], 'st')
local run = ARGV[15]
local activity = ARGV[18]
if run ~= '' then
  local seen = redis.call('HGET', KEYS[2], run)
  if not seen then
    seen = '0'
    redis.call('HINCRBY', KEYS[1], 'r', 1)
    redis.call('HSET', KEYS[1], 'st', 'active')
    redis.call('HSET', KEYS[2], run, seen)
    redis.call('ZADD', KEYS[3], activity, run)
    local extra = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[19])
    if extra > 0 then
      for _, k in ipairs(redis.call('ZRANGE', KEYS[3], 0, extra - 1)) do
        redis.call('HDEL', KEYS[2], k, '!' .. k)
      end
      redis.call('ZREMRANGEBYRANK', KEYS[3], 0, extra - 1)
    end
  end
  local elapsed = tonumber(ARGV[16])
  if elapsed > tonumber(seen) then
    redis.call('HINCRBYFLOAT', KEYS[1], 'p',
      string.format('%.17g', elapsed - tonumber(seen)))
    redis.call('HSET', KEYS[2], run, ARGV[16])
  end
  if ARGV[17] == '1' and redis.call('HSETNX', KEYS[2], '!' .. run, '1') == 1 then
    redis.call('HINCRBY', KEYS[1], 'e', 1)
    redis.call('HSET', KEYS[1], 'st', 'failed')
  end
end
redis.call('HSET', KEYS[1], 'a', activity)
local appended = {}
for i = 23, #ARGV, 2 do
  if redis.call('SADD', KEYS[5], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[4], ARGV[i + 1])
    appended[#appended + 1] = ARGV[i]
  end
end
if #appended > 0 then
  local cap = tonumber(ARGV[20])
  if redis.call('LLEN', KEYS[4]) > cap then redis.call('LTRIM', KEYS[4], -cap, -1) end
end
touch(ARGV[1], tonumber(ARGV[2]))
local new = redis.call('HGET', KEYS[1], 'st')
local indexed = tonumber(redis.call('HGET', KEYS[1], 'ia') or '0')
local reindex = 0
if created == 1 or old ~= new or tonumber(activity) - indexed >= tonumber(ARGV[22]) then
  reindex = 1
  redis.call('HSET', KEYS[1], 'ia', activity)
end
if #KEYS > 5 then
  redis.call('ZADD', KEYS[6], ARGV[3], ARGV[4])
  redis.call('ZADD', KEYS[7], activity, ARGV[4])
  redis.call('ZADD', redis.call('HGET', KEYS[1], 'uk'), activity, ARGV[4])
  if old ~= new then redis.call('ZREM', ARGV[21] .. old, ARGV[4]) end
  redis.call('ZADD', ARGV[21] .. new, activity, ARGV[4])
end
return {created, redis.call('HGETALL', KEYS[1]), old, reindex, appended}
"""
)

# KEYS: the first group's sess key (routing)   ARGV: bases
SESSIONS = r"""
local out = {}
for i = 1, #ARGV do out[i] = redis.call('HGETALL', ARGV[i] .. 'sess') end
return out
"""

# KEYS: the first group's sess key (routing)   ARGV: bases
# Per group: {live (0/1), status or '', messages, conversation sessions}
STATS = r"""
local out = {}
for i = 1, #ARGV do
  local base = ARGV[i]
  local st = redis.call('HGET', base .. 'sess', 'st')
  local msgs = redis.call('LLEN', base .. 'conv')
  local types = redis.call('SMEMBERS', base .. 'csets')
  for _, t in ipairs(types) do msgs = msgs + redis.call('LLEN', base .. 'cm:' .. t) end
  local live = 0
  if st or msgs > 0 or #types > 0 or redis.call('EXISTS', base .. 'tc') == 1 then
    live = 1
  end
  out[i] = {live, st or '', msgs, #types}
end
return out
"""

SCRIPTS = {
    "d_create": CREATE,
    "d_update": UPDATE,
    "d_append": APPEND,
    "d_track": TRACK,
    "d_put": PUT,
    "d_delete": DELETE,
    "d_sessions": SESSIONS,
    "d_stats": STATS,
}
