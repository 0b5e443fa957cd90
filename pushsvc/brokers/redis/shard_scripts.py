"""The Lua scripts of the sharded broker (:mod:`.sharded`), from the named functions of :mod:`.scripts`.

Each shard script touches the keys of one shard only (one hash tag, so one slot of the cluster); the
service scripts touch the keys under the deployment's own tag. No script ever spans two slots.
"""

from __future__ import annotations

from .scripts import _LUA_DEADLINE, _LUA_GENERATION, _LUA_LIVE_WORKERS, _LUA_ONLINE, _LUA_TRIM_BY_AGE, LATE

# The error a shard answers when a fan-out offers a generation older than its own; nothing was stored.
STALE = "PUSHSVC_STALE"
# The error a shard answers when an id the caller chose is not above its newest entry; nothing stored.
BEHIND = "PUSHSVC_BEHIND"

# A shard's generation, and `since`: the generation its server started with. A shard makes a new
# generation when its server is not the one that made the current one (a failover, a restart): the new
# master may lack the newest entries, so nothing older than `since` is resumed from. A fan-out raises the
# generation of every shard it reaches to the largest among them (one id on every shard), with no loss:
# entries of generations from `since` on were all written on this server.
_LUA_SHARD_GENERATION = """
local function shard_generation(gen_key, epoch_key, since_key)
  local replid = replication_id()
  local gen = redis.call('GET', gen_key)
  if gen and redis.call('GET', epoch_key) == replid then
    return gen, redis.call('GET', since_key) or gen
  end
  gen = next_generation(gen)
  redis.call('SET', gen_key, gen)
  redis.call('SET', epoch_key, replid)
  redis.call('SET', since_key, gen)
  return gen, gen
end

local function last_id(stream)
  if redis.call('EXISTS', stream) == 0 then return '0-0' end
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
  end
  return '0-0'
end

local function id_above(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  return am > bm or (am == bm and tonumber(as) > tonumber(bs))
end
"""

# KEYS: stream, generation, epoch, since, workers (of the shard's presence). ARGV: maxlen, ttl_ms,
# deadline, offered generation ('' for the shard's own), worker prefix, self, then per message (target,
# body, close flag, id: '' for the next one, or one the caller chose, above the newest entry). Returns
# {generation, id1, online1, id2, online2, ...}: each message's audience among this shard's clients on the
# other workers, counted before it is stored. Every check comes before the first write: a script that
# refuses stores nothing.
STORE = (_LUA_DEADLINE + _LUA_GENERATION + _LUA_SHARD_GENERATION + _LUA_TRIM_BY_AGE + _LUA_LIVE_WORKERS
         + _LUA_ONLINE + """
if past(ARGV[3]) then
  return redis.error_reply('""" + LATE + """ the deadline of the publish passed before Redis ran it')
end
local gen = shard_generation(KEYS[2], KEYS[3], KEYS[4])
if ARGV[4] ~= '' then
  if tonumber(ARGV[4]) < tonumber(gen) then
    return redis.error_reply('""" + STALE + """ ' .. gen)
  end
  local top = last_id(KEYS[1])
  for i = 7, #ARGV, 4 do
    if ARGV[i + 3] ~= '' then
      if not id_above(ARGV[i + 3], top) then
        return redis.error_reply('""" + BEHIND + """ ' .. top)
      end
      break
    end
  end
  if ARGV[4] ~= gen then
    gen = ARGV[4]
    redis.call('SET', KEYS[2], gen)
  end
end
local live = live_workers(KEYS[5], ARGV[5], ARGV[6])
local out = {gen}
for i = 7, #ARGV, 4 do
  local id = ARGV[i + 3]
  if id == '' then id = '*' end
  local n = online(live, ARGV[5], ARGV[i])
  if ARGV[i + 2] == '1' then
    out[#out + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id,
                               'g', gen, 't', ARGV[i], 'b', ARGV[i + 1], 'c', '1')
  else
    out[#out + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id,
                               'g', gen, 't', ARGV[i], 'b', ARGV[i + 1])
  end
  out[#out + 1] = n
end
trim_by_age(KEYS[1], ARGV[2], true)
return out
""")

# KEYS: stream, generation, epoch, since. Returns {generation, newest stream id ('0-0' with none)}.
HEAD = _LUA_GENERATION + _LUA_SHARD_GENERATION + """
local gen = shard_generation(KEYS[2], KEYS[3], KEYS[4])
return {gen, last_id(KEYS[1])}
"""

# KEYS: stream, generation, epoch, since. ARGV: the generation and stream id to resume after, page size,
# ttl_ms. Returns {generation, newest id, resume point held (0/1), first page of entries after it, since}.
# The point is held when it is of a generation from `since` on, and its entry is still there or it is the
# newest id.
REPLAY = _LUA_GENERATION + _LUA_SHARD_GENERATION + _LUA_TRIM_BY_AGE + """
local gen, since = shard_generation(KEYS[2], KEYS[3], KEYS[4])
local last = last_id(KEYS[1])
if tonumber(ARGV[1]) == nil or tonumber(ARGV[1]) < tonumber(since) or last == '0-0' then
  return {gen, last, 0, {}, since}
end
trim_by_age(KEYS[1], ARGV[4], false)
local held = 0
if ARGV[2] == last then held = 1 end
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry == 1 then
  local fields = entry[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'g' and fields[i + 1] == ARGV[1] then held = 1 end
  end
end
local page = {}
if held == 1 then page = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3]) end
return {gen, last, held, page, since}
"""

# KEYS: fan-out lock, newest fan-out time. ARGV: token, lock ttl_ms, ids wanted, lead ms. Takes the lock
# (or answers {0}) and hands out ids: milliseconds far enough ahead of every master's clock that no shard
# has reached them yet, and above every id handed out before. Returns {1, first}.
FAN_BEGIN = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
local t = redis.call('TIME')
local first = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[4])
local newest = tonumber(redis.call('GET', KEYS[2]) or '0')
if first <= newest then first = newest + 1 end
redis.call('SET', KEYS[2], string.format('%.0f', first + tonumber(ARGV[3]) - 1))
return {1, string.format('%.0f', first)}
"""

# KEYS: fan-out lock. ARGV: token. Lets go of the lock if it is still this caller's.
FAN_END = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
