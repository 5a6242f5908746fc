"""The Redis store's server-side Lua scripts (one round trip per hot operation).

Keys and fields are those of `stores.redis.layout`; records are the blobs of
`stores.encoding` (scripts read only their Lua-readable headers).
"""

_HEAD_OF = r"""
local function head_of(ids, order, cp)
  local mem = ''
  local r = redis.call('ZREVRANGEBYLEX', ids, '(\1', '(\0', 'LIMIT', 0, 1)
  if #r > 0 then
    mem = r[1]
  else
    local o = redis.call('ZREVRANGEBYLEX', order, '+', '-', 'LIMIT', 0, 1)
    if #o > 0 then
      local sep = string.find(o[1], '\0', 1, true)
      mem = string.sub(o[1], sep + 1) .. '\0' .. string.sub(o[1], 1, sep - 1)
    end
  end
  local row = ''
  if mem ~= '' then row = redis.call('HGET', cp, mem) or '' end
  return mem, row
end
"""
"""`head_of(ids, order, cp)`: a thread's latest member and row (root namespace,
else the newest of any namespace); shared by `_COMMON` and `HEADS`."""

_LESS = r"""
local function less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
"""
"""`less(a, b)`: byte-wise order of two strings (Lua's `<` follows the locale);
`page_after` pages by (score, member bytes) with it."""

_PAGE_AFTER = (
    _LESS
    + r"""
local function page_after(key, ms, thread, limit)
  local out = {}
  local top = '+inf'
  if ms ~= '' then
    local below = false
    for _, m in ipairs(redis.call('ZREVRANGEBYSCORE', key, ms, ms)) do
      if #out >= 2 * limit then break end
      below = below or less(m, thread)
      if below then
        out[#out + 1] = m
        out[#out + 1] = ms
      end
    end
    top = '(' .. ms
  end
  if #out < 2 * limit then
    local rest = redis.call('ZREVRANGEBYSCORE', key, top, '-inf', 'WITHSCORES',
                            'LIMIT', 0, limit - #out / 2)
    for _, x in ipairs(rest) do out[#out + 1] = x end
  end
  return out
end
"""
)
"""`page_after(key, ms, thread, limit)`: at most `limit` members of sorted set
`key` after (ms, thread), by score then member bytes, descending, as a flat
[thread, score, ...]; ms '' starts at the top. Shared by `RECENT` and
`IXRECENT`."""

_COMMON = (
    _HEAD_OF
    + r"""
local function touch(ttl, logprefix)
  if ttl > 0 then
    for i = 1, 7 do redis.call('PEXPIRE', KEYS[i], ttl) end
    for _, e in ipairs(redis.call('SMEMBERS', KEYS[7])) do
      redis.call('PEXPIRE', logprefix .. e, ttl)
    end
  end
end
local function row_head(row_blob)
  local hlen = struct.unpack('>I4', row_blob)
  return cmsgpack.unpack(string.sub(row_blob, 5, 4 + hlen))
end
local function sync_ix(ixkey, row)
  local entries = {}
  if row ~= '' then
    local head = row_head(row)
    if head[3] and #head[3] > 0 then entries = head[3] else entries = {'#?'} end
  end
  local now = {}
  for _, e in ipairs(entries) do now[e] = true end
  local removed, added = {}, {}
  for _, e in ipairs(redis.call('SMEMBERS', ixkey)) do
    if now[e] then now[e] = false else removed[#removed + 1] = e end
  end
  for _, e in ipairs(entries) do
    if now[e] then added[#added + 1] = e end
  end
  if #removed > 0 then redis.call('SREM', ixkey, unpack(removed)) end
  if #added > 0 then redis.call('SADD', ixkey, unpack(added)) end
  return entries, removed, added
end
local function unpack_held(arg)
  if arg == '' then return nil end
  return cmsgpack.unpack(arg)
end
local function resolve(mem, row_blob, logprefix, only, held)
  local head = row_head(row_blob)
  local vals = {}
  local nsenc = nil
  if held then nsenc = string.sub(mem, 1, string.find(mem, '\0', 1, true)) end
  for _, vk in ipairs(head[2]) do
    if only == nil or only[vk[1]] then
      local blob = redis.call('HGET', KEYS[4], vk[2])
      if blob then
        local items, skip = {}, 0
        if only == nil and string.sub(blob, 1, 1) == 'l' then
          local v = cmsgpack.unpack(string.sub(blob, 2))
          local h = held and held[nsenc .. vk[1]]
          if h and h[1] == v[1] then skip = h[2] end
          for _, run in ipairs(v[2]) do
            local first = math.max(run[1], skip)
            if first < run[2] then
              local part = redis.call('LRANGE', logprefix .. v[1], first, run[2] - 1)
              for _, it in ipairs(part) do items[#items + 1] = it end
            end
          end
        end
        vals[#vals + 1] = {vk[1], blob, items, skip}
      end
    end
  end
  local writes = redis.call('HGET', KEYS[5], mem) or ''
  return {mem, row_blob, vals, writes}
end
"""
)

PUT = (
    _COMMON
    + r"""
local ns, cid = ARGV[1], ARGV[2]
local mem = ns .. '\0' .. cid
local vals = cmsgpack.unpack(ARGV[8])
local function index_put()
  local hm, hrow = head_of(KEYS[1], KEYS[2], KEYS[3])
  local entries, removed, added = sync_ix(KEYS[9], hrow)
  local first = tonumber(ARGV[10])
  if first == 0 or hm ~= mem then return {entries, removed, added} end
  for i = first, #KEYS do redis.call('ZADD', KEYS[i], ARGV[7], ARGV[5]) end
  for _, e in ipairs(added) do
    if string.sub(e, 1, 1) == '#' then redis.call('SADD', KEYS[11], e) end
  end
  return {{}, removed, {}}
end
if redis.call('HGET', KEYS[3], mem) == ARGV[3] then
  redis.call('HSET', KEYS[3], mem, ARGV[3])
  local stored = {}
  for _, e in ipairs(vals) do
    if e[1] == 'l' then
      local blob = redis.call('HGET', KEYS[4], e[2])
      if blob then stored[#stored + 1] = {e[8], blob} end
    end
  end
  touch(tonumber(ARGV[4]), ARGV[6])
  return {'ok', stored, index_put(), 0}
end
local function reused_past_log(e)
  if redis.call('SISMEMBER', KEYS[7], e[4]) == 0 then return true end
  local top, slots = 0, e[6]
  for i = 1, #slots, 2 do
    if slots[i] >= 0 then top = math.max(top, slots[i] + slots[i + 1]) end
  end
  return redis.call('LLEN', ARGV[6] .. e[4]) < top
end
for _, e in ipairs(vals) do
  if e[1] == 'l' and e[4] ~= '' and reused_past_log(e) then
    if redis.call('HGET', KEYS[6], e[3]) == e[4] then
      redis.call('HSET', KEYS[6], e[3], e[5])
    end
    return {'stale'}
  end
end
local first = redis.call('EXISTS', KEYS[1]) == 0
local assigned = {}
for _, e in ipairs(vals) do
  if e[1] == 't' then
    redis.call('HSET', KEYS[4], e[2], e[3])
  else
    local epoch = e[4]
    if epoch == '' then
      epoch = redis.call('HGET', KEYS[6], e[3])
      if not epoch then
        epoch = e[5]
        redis.call('HSET', KEYS[6], e[3], epoch)
      end
    end
    redis.call('SADD', KEYS[7], epoch)
    local logkey = ARGV[6] .. epoch
    local items = e[7]
    local start = redis.call('LLEN', logkey)
    for i = 1, #items, 512 do
      redis.call('RPUSH', logkey, unpack(items, i, math.min(i + 511, #items)))
    end
    local runs, rs, re = {}, -1, -1
    local slots = e[6]
    for i = 1, #slots, 2 do
      local p, n = slots[i], slots[i + 1]
      if p < 0 then p = start - p - 1 end
      if p == re then
        re = p + n
      else
        if rs >= 0 then runs[#runs + 1] = {rs, re} end
        rs, re = p, p + n
      end
    end
    if rs >= 0 then runs[#runs + 1] = {rs, re} end
    local blob = 'l' .. cmsgpack.pack({epoch, runs})
    redis.call('HSET', KEYS[4], e[2], blob)
    assigned[#assigned + 1] = {e[8], blob}
  end
end
redis.call('ZADD', KEYS[1], 0, mem)
redis.call('ZADD', KEYS[2], 0, cid .. '\0' .. ns)
redis.call('HSET', KEYS[3], mem, ARGV[3])
redis.call('HINCRBY', KEYS[6], '#gen', 1)
if ARGV[9] ~= '' then redis.call('SADD', KEYS[8], ARGV[9]) end
if ARGV[10] ~= '0' then
  redis.call('ZADD', KEYS[10], ARGV[7], ARGV[5])
  if ARGV[9] ~= '' then redis.call('SADD', KEYS[12], ARGV[5]) end
end
touch(tonumber(ARGV[4]), ARGV[6])
return {'ok', assigned, index_put(), first and 1 or 0}
"""
)
"""KEYS: the 7 thread keys, the thread's `runs`, its `ix`, then on a
standalone server the registry, `ixkeys`, the run's index (the registry again
when there is no run) and the index entries of the row. ARGV: ns, cid, row,
ttl, thread id, log prefix, now (ms), values, run key ('' for none), the
position in KEYS of the row's first index entry ('0' on a cluster).

The thread's `ix` set is made the entries of its latest row. When that row is
the one put and the server is standalone, the script moves the thread to
now in each entry's index; else it returns {entries the caller must move to
now, entries to take it out of, entries it newly has} as the third item
(removals are returned on a standalone server too: their keys are not known
beforehand).

A put whose row is already stored byte for byte (a retry of a put that did
apply, e.g. after a socket timeout) changes nothing and returns the stored
list manifests: retrying a put never appends its elements twice. It still
writes the row again (same bytes), so the retry is replicated and a `WAIT`
on the retrying connection (`replica_acks`) covers the first attempt too.
Reply: {'ok', manifests, index moves (above), 1 for the thread's first
checkpoint else 0}; {'stale'}, writing nothing else, when a list reuses
positions of a log that is gone or shorter than they need: the server lost
acknowledged writes (a failover to a lagging replica, a restart from an older
snapshot) that the writer had seen. The channel's append epoch then moves to
a fresh log (when it was that log), so the positions lost are never handed
out again by a put that writes the list in full; the caller does that after
forgetting what it cached of the thread (`saver.writes`). The check costs one
`SISMEMBER` and one `LLEN` per reused list, inside the one round trip.
What it cannot see: another writer that had not seen the lost writes and
appended to the same log before this one came back (two writers on one
thread and channel across the loss)."""

PUT_WRITES = (
    _COMMON
    + r"""
local function frames(blob)
  local out, i = {}, 1
  while i <= #blob do
    local klen, j = struct.unpack('>I4', blob, i)
    local key = string.sub(blob, j, j + klen - 1)
    local special = string.byte(blob, j + klen)
    local elen, k = struct.unpack('>I4', blob, j + klen + 1)
    local frame = string.sub(blob, i, k + elen - 1)
    out[#out + 1] = {key, special, frame}
    i = k + elen
  end
  return out
end
local cur = frames(redis.call('HGET', KEYS[5], ARGV[1]) or '')
local pos = {}
for i, f in ipairs(cur) do pos[f[1]] = i end
for _, f in ipairs(frames(ARGV[2])) do
  local i = pos[f[1]]
  if i == nil then
    cur[#cur + 1] = f
    pos[f[1]] = #cur
  elseif f[2] == 1 then
    cur[i] = f
  end
end
local parts = {}
for i, f in ipairs(cur) do parts[i] = f[3] end
redis.call('HSET', KEYS[5], ARGV[1], table.concat(parts))
redis.call('HINCRBY', KEYS[6], '#gen', 1)
touch(tonumber(ARGV[3]), ARGV[4])
return 1
"""
)

GET = (
    _COMMON
    + r"""
local ns, cid = ARGV[1], ARGV[2]
local mem
if cid == '' then
  local r = redis.call('ZREVRANGEBYLEX', KEYS[1], '(' .. ns .. '\1', '(' .. ns .. '\0',
                       'LIMIT', 0, 1)
  if #r == 0 then return false end
  mem = r[1]
else
  mem = ns .. '\0' .. cid
end
local row = redis.call('HGET', KEYS[3], mem)
if not row then return false end
touch(tonumber(ARGV[4]), ARGV[3])
return resolve(mem, row, ARGV[3], nil, unpack_held(ARGV[5]))
"""
)

LIST = (
    _COMMON
    + r"""
local ns, before, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local all_ns = ARGV[5] == '1'
local members
if all_ns then
  local hi = '+'
  if before ~= '' then hi = '(' .. before end
  members = redis.call('ZREVRANGEBYLEX', KEYS[2], hi, '-', 'LIMIT', 0, limit)
else
  local hi = '(' .. ns .. '\1'
  if before ~= '' then hi = '(' .. ns .. '\0' .. before end
  members = redis.call('ZREVRANGEBYLEX', KEYS[1], hi, '(' .. ns .. '\0',
                       'LIMIT', 0, limit)
end
local held = unpack_held(ARGV[7])
local out = {}
for _, m in ipairs(members) do
  local mem = m
  if all_ns then
    local sep = string.find(m, '\0', 1, true)
    mem = string.sub(m, sep + 1) .. '\0' .. string.sub(m, 1, sep - 1)
  end
  local row = redis.call('HGET', KEYS[3], mem)
  if row then out[#out + 1] = resolve(mem, row, ARGV[4], nil, held) end
end
if #out > 0 then touch(tonumber(ARGV[6]), ARGV[4]) end
return {#members, out}
"""
)

WALK = (
    _COMMON
    + r"""
local ns, cid, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local only = {}
for _, ch in ipairs(cmsgpack.unpack(ARGV[4])) do only[ch] = true end
local out = {}
local cursor = cid
while cursor ~= '' and #out < limit do
  local mem = ns .. '\0' .. cursor
  local row = redis.call('HGET', KEYS[3], mem)
  if not row then break end
  out[#out + 1] = resolve(mem, row, ARGV[5], only, nil)
  cursor = row_head(row)[1]
end
return out
"""
)

RANGES = r"""
local out = {}
for i, req in ipairs(cmsgpack.unpack(ARGV[1])) do
  local items = {}
  for _, run in ipairs(req[2]) do
    local part = redis.call('LRANGE', ARGV[2] .. req[1], run[1], run[2] - 1)
    for _, it in ipairs(part) do items[#items + 1] = it end
  end
  out[i] = items
end
return out
"""

DUMP = r"""
local logs = {}
for _, e in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  logs[#logs + 1] = {e, redis.call('LRANGE', ARGV[1] .. e, 0, -1)}
end
return {redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),
        redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[6]), logs}
"""

REPLACE = (
    _COMMON
    + r"""
local gen = tonumber(redis.call('HGET', KEYS[6], '#gen') or '0')
if ARGV[1] ~= '' and gen ~= tonumber(ARGV[1]) then return 'conflict' end
for _, e in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  redis.call('DEL', ARGV[3] .. e)
end
for i = 1, 7 do redis.call('DEL', KEYS[i]) end
local d = cmsgpack.unpack(ARGV[4])
for i = 1, #d[1], 2 do
  local mem = d[1][i]
  local sep = string.find(mem, '\0', 1, true)
  redis.call('HSET', KEYS[3], mem, d[1][i + 1])
  redis.call('ZADD', KEYS[1], 0, mem)
  local flipped = string.sub(mem, sep + 1) .. '\0' .. string.sub(mem, 1, sep - 1)
  redis.call('ZADD', KEYS[2], 0, flipped)
end
for i = 1, #d[2], 2 do redis.call('HSET', KEYS[4], d[2][i], d[2][i + 1]) end
for i = 1, #d[3], 2 do redis.call('HSET', KEYS[5], d[3][i], d[3][i + 1]) end
for i = 1, #d[4], 2 do redis.call('HSET', KEYS[6], d[4][i], d[4][i + 1]) end
for _, log in ipairs(d[5]) do
  redis.call('SADD', KEYS[7], log[1])
  local items = log[2]
  for i = 1, #items, 512 do
    redis.call('RPUSH', ARGV[3] .. log[1], unpack(items, i, math.min(i + 511, #items)))
  end
end
local before = redis.call('SMEMBERS', KEYS[8])
redis.call('DEL', KEYS[8])
local kept, dropped = {}, {}
for _, r in ipairs(cmsgpack.unpack(ARGV[6])) do
  redis.call('SADD', KEYS[8], r)
  kept[r] = true
end
for _, r in ipairs(before) do
  if not kept[r] then dropped[#dropped + 1] = r end
end
if #d[1] > 0 then
  redis.call('HSET', KEYS[6], '#gen', gen + 1)
  touch(tonumber(ARGV[2]), ARGV[3])
elseif KEYS[10] then
  redis.call('ZREM', KEYS[10], ARGV[5])
end
return {#d[1], dropped}
"""
)
"""KEYS: the 7 thread keys, its `runs`, its `ix` [, the registry (standalone)].
The caller then brings the thread index in step (`IXSYNC`). ARGV:
expected gen ('' for any), ttl, log prefix, dump, thread id, the run keys of the
new content (msgpack). Returns 'conflict', or {rows, run keys it no longer
has} (the caller takes the thread out of those runs' indexes)."""

RECENT = (
    _PAGE_AFTER
    + r"""
return page_after(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]))
"""
)
"""A page of the thread registry after the key (ARGV[1] ms, ARGV[2] thread id):
by score, then member bytes, descending; flat [thread, score, ...]."""

HEADS = (
    _HEAD_OF
    + r"""
local out = {}
for t = 1, #ARGV do
  local ids, order, cp, gone = KEYS[4 * t - 3], KEYS[4 * t - 2], KEYS[4 * t - 1],
                               KEYS[4 * t]
  local mem, row = head_of(ids, order, cp)
  out[t] = {mem, row, redis.call('GET', gone) or ''}
end
return out
"""
)
"""Per thread (ARGV: thread ids; KEYS: ids, order, cp, gone of each): its latest
member and row (root namespace, else the newest of any namespace) and `gone`."""

DELETE = r"""
for _, e in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  redis.call('DEL', ARGV[1] .. e)
end
for i = 1, 7 do redis.call('DEL', KEYS[i]) end
local runs = redis.call('SMEMBERS', KEYS[8])
redis.call('DEL', KEYS[8])
if KEYS[10] then redis.call('ZREM', KEYS[10], ARGV[2]) end
return runs
"""
"""KEYS: the 7 thread keys, its `runs`, its `ix` [, the registry
(standalone)]. ARGV: log prefix, thread id. Returns the run keys whose indexes
still list the thread (the caller then brings the thread index in step)."""

REAP = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local runs = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
if KEYS[3] then redis.call('ZREM', KEYS[3], ARGV[1]) end
return runs
"""
"""A registered thread found without checkpoints (expired by its TTL): KEYS ids,
runs [, registry (standalone)], ARGV thread id. False when the thread exists
(again); else it leaves the registry (standalone) and its `runs` set, and the
run keys whose indexes still list it are returned."""

UNLIST = r"""
for i = 1, #KEYS do redis.call('SREM', KEYS[i], ARGV[1]) end
return #KEYS
"""
"""Take thread ARGV[1] out of the run indexes KEYS (one slot: one key on a
cluster)."""

ALIVE = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('SMEMBERS', KEYS[2])
"""
"""KEYS ids, runs: false for a thread without checkpoints, else its run keys."""

IXSYNC = (
    _COMMON
    + r"""
local hm, hrow = head_of(KEYS[1], KEYS[2], KEYS[3])
local entries, removed, added = sync_ix(KEYS[4], hrow)
return {entries, removed, added}
"""
)
"""KEYS ids, order, cp, ix of a thread: make `ix` the index entries of the
thread's latest row (none when it has no checkpoint). Returns {entries,
entries it left, entries it joined}; the caller moves the entry indexes."""

IXMOVE = r"""
local score, thread, nadd = ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 1, nadd do redis.call('ZADD', KEYS[i], score, thread) end
for i = nadd + 1, #KEYS do redis.call('ZREM', KEYS[i], thread) end
return 1
"""
"""Put thread ARGV[2] at score ARGV[1] in the first ARGV[3] entry indexes of
KEYS and take it out of the rest (one slot: one key on a cluster)."""

IXRECENT = (
    _PAGE_AFTER
    + r"""
local ms, thread, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local pages = {}
for k = 1, #KEYS do
  pages[k] = page_after(KEYS[k], ms, thread, limit)
end
return pages
"""
)
"""`RECENT` on each entry index of KEYS: per key a flat [thread, score, ...]
page after (ARGV[1] ms, ARGV[2] thread id) of at most ARGV[3] threads."""

IXSECRET = r"""
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""
"""The thread index's secret (KEYS[1]), stored as ARGV[1] when absent."""

RECORDS = r"""
local out = {}
local w = redis.call('HGETALL', KEYS[2])
for i = 1, #w, 2 do
  if redis.call('HEXISTS', KEYS[1], w[i]) == 1 then out[#out + 1] = w[i + 1] end
end
return out
"""
"""The pending-write blobs of the writes hash (KEYS[2]) whose checkpoint is
stored in the rows hash (KEYS[1]): writes of a checkpoint never stored (a
process killed before its put landed) are orphans, left out."""

SCRIPTS = {
    "put": PUT,
    "put_writes": PUT_WRITES,
    "get": GET,
    "list": LIST,
    "walk": WALK,
    "ranges": RANGES,
    "dump": DUMP,
    "replace": REPLACE,
    "delete": DELETE,
    "recent": RECENT,
    "heads": HEADS,
    "reap": REAP,
    "unlist": UNLIST,
    "alive": ALIVE,
    "ixsync": IXSYNC,
    "ixmove": IXMOVE,
    "ixrecent": IXRECENT,
    "ixsecret": IXSECRET,
    "records": RECORDS,
}
