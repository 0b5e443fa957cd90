"""The Lua scripts of the Redis broker, each put together from the named functions below and a short
body of its own. Every key a script touches shares the ``{namespace}`` hash tag (see :mod:`.schema`), so
one script may touch them all, on a cluster too.
"""

from __future__ import annotations

# The stream's generation: made when there is none. Behind Sentinel (`follow` = '1') it is made again when
# this server is not the one that made it (its replication id differs from the one kept beside it): a
# promoted replica, or a master restarted from a snapshot, may lack the newest entries of the stream, and
# the ids it adds next could be ids that clients already saw. A new generation sorts after the old one
# (Redis time in ms, and always above the old value), so new ids never collide with old ones; and since
# nobody can tell what the old server took after its last entry that reached this one, an id of an older
# generation is never resumed from (event: reset). A single server (redis://) keeps its generation across
# a restart, so its history resumes as before.
_LUA_GENERATION = """
local function replication_id()
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)') or ''
end

-- A new generation: Redis time in ms, and always above the old one (if any).
local function next_generation(gen)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if gen and now <= tonumber(gen) then now = tonumber(gen) + 1 end
  return string.format('%.0f', now)
end

local function ensure_generation(key, epoch, follow)
  local gen = redis.call('GET', key)
  if gen and follow ~= '1' then return gen end
  local replid = ''
  if follow == '1' then
    replid = replication_id()
    if gen and redis.call('GET', epoch) == replid then return gen end
  end
  gen = next_generation(gen)
  redis.call('SET', key, gen)
  if follow == '1' then redis.call('SET', epoch, replid) end
  return gen
end
"""

# The stream's generation and the id of its newest entry ('0-0' while it has none).
_LUA_HEAD = """
local function stream_head(stream, generation_key, epoch, follow)
  local gen = ensure_generation(generation_key, epoch, follow)
  local last = '0-0'
  if redis.call('EXISTS', stream) == 1 then
    local info = redis.call('XINFO', 'STREAM', stream)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then last = info[i + 1] end
    end
  end
  return gen, last
end
"""

# Entries older than ttl_ms leave; '~' lets Redis trim whole nodes only (cheap, on every publish).
_LUA_TRIM_BY_AGE = """
local function trim_by_age(stream, ttl_ms, approximate)
  local t = redis.call('TIME')
  local horizon = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ttl_ms)
  if horizon <= 0 then return end
  if approximate then
    redis.call('XTRIM', stream, 'MINID', '~', string.format('%.0f', horizon))
  else
    redis.call('XTRIM', stream, 'MINID', string.format('%.0f', horizon))
  end
end
"""

# Workers other than `self` whose presence has not expired; forget the others.
_LUA_LIVE_WORKERS = """
local function live_workers(set, prefix, self)
  local live = {}
  for _, w in ipairs(redis.call('SMEMBERS', set)) do
    if w ~= self then
      if redis.call('EXISTS', prefix .. w .. ':g') == 1 then
        live[#live + 1] = w
      else
        redis.call('SREM', set, w)
      end
    end
  end
  return live
end
"""

# How many connections of the live workers other than `self` a target addresses.
_LUA_ONLINE = """
local function first_number(v)
  return tonumber(string.match(v, '^%d+')) or 0
end

local function online(live, prefix, target)
  local cut = string.find(target, '\\n', 1, true)
  local kind, rest = string.sub(target, 1, cut - 1), string.sub(target, cut + 1)
  local n = 0
  for _, w in ipairs(live) do
    local clients, groups = prefix .. w .. ':c', prefix .. w .. ':g'
    if kind == 'all' then
      n = n + (tonumber(redis.call('HGET', groups, '/')) or 0)
    elseif kind == 'group' then
      n = n + (tonumber(redis.call('HGET', groups, rest)) or 0)
    elseif kind == 'to' then
      for id in string.gmatch(rest, '[^\\n]+') do
        local v = redis.call('HGET', clients, id)
        if v then n = n + first_number(v) end
      end
    else
      local all = redis.call('HGETALL', clients)
      for j = 1, #all, 2 do
        if string.sub(all[j], 1, #rest) == rest then n = n + first_number(all[j + 1]) end
      end
    end
  end
  return n
end
"""

# A script that starts after its caller's deadline (Redis time, ms) stores nothing: the caller has given up
# and answered 503 by then (see clock.py).
_LUA_DEADLINE = """
local function past(deadline_ms)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(deadline_ms)
end
"""

# Replicas that are online and acknowledged within the last 10 s (Redis's own min-replicas-max-lag), from
# INFO replication (its lag reads -1 just after an acknowledgement). A replica acknowledges every second,
# a busy one later, so a tighter bound would refuse publishes to a healthy pair; WAIT confirms each one.
_LUA_REPLICAS = """
local function good_replicas()
  local n = 0
  for state, lag in string.gmatch(redis.call('INFO', 'replication'), 'state=(%a+),offset=%d+,lag=(-?%d+)') do
    if state == 'online' and tonumber(lag) <= 10 then n = n + 1 end
  end
  return n
end
"""

# The error a late publish answers; nothing was stored.
LATE = "PUSHSVC_LATE"
# The error a publish answers when fewer replicas are connected than it must wait for; nothing was stored.
# Redis's own error code for a server with ``min-replicas-to-write`` set, so both read the same.
NO_REPLICAS = "NOREPLICAS"

# KEYS: stream, generation, workers, epoch. ARGV: maxlen, ttl_ms, worker prefix, self, deadline, replicas
# required, follow (see ensure_generation), then per message (target, body, close flag). Returns
# {generation, id1, online1, id2, online2, ...}: all messages are stored, in order, in one atomic step,
# and each one's audience is counted on the other workers. With replicas required, the caller's WAIT
# that follows confirms them; this only refuses up front when too few are connected (nothing stored).
PUBLISH = (_LUA_DEADLINE + _LUA_GENERATION + _LUA_TRIM_BY_AGE + _LUA_LIVE_WORKERS + _LUA_ONLINE
           + _LUA_REPLICAS + """
if past(ARGV[5]) then
  return redis.error_reply('""" + LATE + """ the deadline of the publish passed before Redis ran it')
end
local required = tonumber(ARGV[6])
if required > 0 and good_replicas() < required then
  return redis.error_reply('""" + NO_REPLICAS + """ fewer than ' .. required .. ' replicas in sync')
end
local gen = ensure_generation(KEYS[2], KEYS[4], ARGV[7])
local live = live_workers(KEYS[3], ARGV[3], ARGV[4])
local out = {gen}
for i = 8, #ARGV, 3 do
  local id
  if ARGV[i + 2] == '1' then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                    'g', gen, 't', ARGV[i], 'b', ARGV[i + 1], 'c', '1')
  else
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'g', gen, 't', ARGV[i], 'b', ARGV[i + 1])
  end
  out[#out + 1] = id
  out[#out + 1] = online(live, ARGV[3], ARGV[i])
end
trim_by_age(KEYS[1], ARGV[2], true)
return out
""")

# KEYS: stream, generation, epoch. ARGV: follow. Returns {generation, last generated stream id ('0-0' with
# no stream)}.
HEAD = _LUA_GENERATION + _LUA_HEAD + """
local gen, last = stream_head(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
return {gen, last}
"""

# KEYS: stream, generation, epoch. ARGV: the generation and stream id to resume after, page size, ttl_ms,
# follow. Returns {generation, last generated id, resume point still held (0/1), first page of entries
# after it}. Entries older than the TTL are trimmed first, so a quiet stream never replays what the TTL
# expired.
REPLAY = _LUA_GENERATION + _LUA_HEAD + _LUA_TRIM_BY_AGE + """
local gen, last = stream_head(KEYS[1], KEYS[2], KEYS[3], ARGV[5])
if gen ~= ARGV[1] or last == '0-0' then
  return {gen, last, 0, {}}
end
trim_by_age(KEYS[1], ARGV[4], false)
local held = 0
if ARGV[2] == last or #redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2]) == 1 then
  held = 1
elseif ARGV[2] == '0-0' then
  -- Resuming from the head of a then empty stream: fine while nothing has been trimmed since.
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local added, length = 0, -1
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = info[i + 1] end
    if info[i] == 'length' then length = info[i + 1] end
  end
  if added == length then held = 1 end
end
local page = {}
if held == 1 then page = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3]) end
return {gen, last, held, page}
"""

# KEYS: workers. ARGV: worker prefix, self, and optionally one client id. Returns the flat
# (client id, entry) pairs of every other live worker's presence hash, or of that one client.
PRESENCE = _LUA_LIVE_WORKERS + """
local out = {}
for _, w in ipairs(live_workers(KEYS[1], ARGV[1], ARGV[2])) do
  local key = ARGV[1] .. w .. ':c'
  if ARGV[3] then
    local v = redis.call('HGET', key, ARGV[3])
    if v then out[#out + 1] = ARGV[3]; out[#out + 1] = v end
  else
    for _, x in ipairs(redis.call('HGETALL', key)) do out[#out + 1] = x end
  end
end
return out
"""
