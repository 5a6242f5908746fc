"""Server-side Lua scripts of the domain data (keys of `stores.redis.domain_layout`)."""

_COMMON = r"""
local function touch(base, ttl)
  if ttl <= 0 then return end
  for _, k in ipairs({'sess', 'conv', 'tc', 'csets', 'convids', 'runs', 'runq',
      'hcp', 'hcpo', 'ops'}) do
    redis.call('PEXPIRE', base .. k, ttl)
  end
  for _, t in ipairs(redis.call('SMEMBERS', base .. 'csets')) do
    redis.call('PEXPIRE', base .. 'cs:' .. t, ttl)
    redis.call('PEXPIRE', base .. 'cm:' .. t, ttl)
  end
end
local function group_keys(base)
  local keys = {base .. 'sess', base .. 'conv', base .. 'tc', base .. 'csets',
    base .. 'convids', base .. 'runs', base .. 'runq', base .. 'hcp', base .. 'hcpo',
    base .. 'ops'}
  for _, t in ipairs(redis.call('SMEMBERS', base .. 'csets')) do
    keys[#keys + 1] = base .. 'cs:' .. t
    keys[#keys + 1] = base .. 'cm:' .. t
  end
  return keys
end
local function applied(base, op, now)
  local ops = base .. 'ops'
  if redis.call('ZSCORE', ops, op) then return true end
  redis.call('ZADD', ops, now, op)
  if redis.call('ZCARD', ops) > 64 then redis.call('ZREMRANGEBYRANK', ops, 0, -65) end
  return false
end
"""
"""`applied(base, op id, now)`: true when a write with this op id already ran
(a retry after a timeout); else records it (the group keeps its newest 64)."""

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
#       expected_type, expected_meta, status_prefix, op id
UPDATE = (
    _COMMON
    + r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
if applied(ARGV[1], ARGV[16], ARGV[3]) then
  local st = redis.call('HGET', KEYS[1], 'st')
  return {1, redis.call('HGETALL', KEYS[1]), st}
end
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
# ARGV: base, ttl_ms, now_ms, S, cap, blob, required conversation-session type,
#       op id
APPEND = (
    _COMMON
    + r"""
if ARGV[7] ~= '' and redis.call('SISMEMBER', ARGV[1] .. 'csets', ARGV[7]) == 0 then
  return -1
end
if applied(ARGV[1], ARGV[8], ARGV[3]) then return redis.call('LLEN', KEYS[1]) end
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
  local helpers = redis.call('ZCARD', base .. 'hcpo')
  local live = 0
  if st or msgs > 0 or #types > 0 or helpers > 0
      or redis.call('EXISTS', base .. 'tc') == 1 then
    live = 1
  end
  out[i] = {live, st or '', msgs, #types, helpers}
end
return out
"""

# KEYS: hcp, hcpo [, groups]   ARGV: base, ttl_ms, now_ms, S, checkpoint id, blob
HELPER_PUT = (
    _COMMON
    + r"""
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local seq = 1
if top[2] then seq = tonumber(top[2]) + 1 end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[2], seq, ARGV[5])
touch(ARGV[1], tonumber(ARGV[2]))
if #KEYS > 2 then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4]) end
return seq
"""
)

# KEYS: hcp, hcpo   ARGV: checkpoint id ('' for the newest), limit
HELPER_GET = r"""
local ids
if ARGV[1] ~= '' then
  ids = {ARGV[1]}
else
  local limit = tonumber(ARGV[2])
  if limit <= 0 then return {} end
  ids = redis.call('ZREVRANGE', KEYS[2], 0, limit - 1)
end
local out = {}
for _, id in ipairs(ids) do
  local blob = redis.call('HGET', KEYS[1], id)
  if blob then out[#out + 1] = {id, blob} end
end
return out
"""

# KEYS: the user-index secret   ARGV: a fresh secret (serialized, encrypted)
SECRET = r"""
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

SCRIPTS = {
    "d_secret": SECRET,
    "d_helper_put": HELPER_PUT,
    "d_helper_get": HELPER_GET,
    "d_create": CREATE,
    "d_update": UPDATE,
    "d_append": APPEND,
    "d_track": TRACK,
    "d_put": PUT,
    "d_delete": DELETE,
    "d_sessions": SESSIONS,
    "d_stats": STATS,
}
