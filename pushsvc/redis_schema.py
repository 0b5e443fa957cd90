"""What the Redis broker keeps in Redis: key names, the fields of a stream entry, event ids, Lua scripts.

One stream is both the bus between workers and the replay history. Every entry carries the *generation*
of the stream: a token (Redis time in milliseconds) created with the stream and kept in a key beside it.
When Redis comes back empty, the next user creates a new, larger generation, so an event id from before
(``<generation>-<stream id>``) is recognised as unknown instead of colliding with a new event's id.

Every key shares one hash tag (``{pushsvc}``), so a Lua script may touch them all, on a cluster too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .broker import CLOSE_MARK, strip_close_mark
from .registry import ClientInfo
from .targets import Target

DEFAULT_NAMESPACE = "pushsvc"
# Names are validated to hold no whitespace and no '/', so these separators cannot occur inside them.
VALUE_SEP = "\n"
GROUP_SEP = " "
# The presence field holding a worker's total connection count: '/' is never part of a group name.
TOTAL_FIELD = "/"


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one pushsvc deployment (``namespace`` separates several on one Redis)."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def base(self) -> str:
        return "{" + self.namespace + "}"

    @property
    def stream(self) -> str:
        return f"{self.base}:events"

    @property
    def generation(self) -> str:
        return f"{self.base}:generation"

    @property
    def workers(self) -> str:
        return f"{self.base}:workers"

    @property
    def worker_prefix(self) -> str:
        return f"{self.base}:w:"

    def worker_clients(self, worker: str) -> str:
        """Hash: client id -> ``"<connections> <group> <group>…"`` for one worker."""
        return f"{self.worker_prefix}{worker}:c"

    def worker_groups(self, worker: str) -> str:
        """Hash: group -> connections, plus :data:`TOTAL_FIELD`, for one worker. Its presence is the
        worker's liveness."""
        return f"{self.worker_prefix}{worker}:g"

    def canary(self, worker: str) -> str:
        return f"{self.base}:canary:{worker}"

    def ticket(self, ticket: str) -> str:
        return f"{self.base}:ticket:{ticket}"


# -- stream entries ----------------------------------------------------------------------------------


def encode_target(target: Target) -> str:
    return target.kind + VALUE_SEP + VALUE_SEP.join(target.values)


def decode_target(raw: bytes) -> Target:
    kind, *values = raw.decode("utf-8").split(VALUE_SEP)
    if kind in ("all",):
        return Target("all")
    return Target(kind, tuple(values))  # type: ignore[arg-type]


# -- event ids ---------------------------------------------------------------------------------------


def event_id(generation: str, stream_id: str, *, close: bool = False) -> str:
    return f"{generation}-{stream_id}" + (CLOSE_MARK if close else "")


def event_key(generation: str, stream_id: str) -> tuple[int, int, int]:
    """The ordering key of an event: generations grow, and stream ids grow within one."""
    ms, _, seq = stream_id.partition("-")
    return int(generation), int(ms), int(seq)


def parse_event_id(value: str) -> tuple[str, str] | None:
    """``(generation, stream id)`` of an id this broker could have issued, or ``None``."""
    parts = strip_close_mark(value).split("-")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 20 for p in parts):
        return None
    return parts[0], f"{int(parts[1])}-{int(parts[2])}"


def stream_id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


# -- presence ----------------------------------------------------------------------------------------


def encode_presence(info: ClientInfo) -> str:
    return GROUP_SEP.join([str(info.connections), *sorted(info.groups)])


def merge_presence(into: dict[str, ClientInfo], client_id: str, raw: Any) -> None:
    """Add one worker's presence entry for ``client_id`` to ``into``."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    count, *groups = text.split(GROUP_SEP)
    info = into.get(client_id)
    if info is None:
        info = into[client_id] = ClientInfo(client_id)
    info.connections += int(count)
    info.groups.update(groups)


# -- Lua ---------------------------------------------------------------------------------------------

# Shared helpers, prepended to the scripts below.
_LUA_COMMON = """
local function ensure_generation(key)
  local gen = redis.call('GET', key)
  if not gen then
    local t = redis.call('TIME')
    gen = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
    redis.call('SET', key, gen)
  end
  return gen
end

-- Workers other than `self` whose presence has not expired; forget the others.
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

# KEYS: stream, generation, workers. ARGV: maxlen, ttl_ms, worker prefix, self, then per message
# (target, body, close flag). Returns {generation, id1, online1, id2, online2, ...}: all messages are
# stored, in order, in one atomic step, and each one's audience is counted on the other workers.
PUBLISH = _LUA_COMMON + _LUA_ONLINE + """
local gen = ensure_generation(KEYS[2])
local live = live_workers(KEYS[3], ARGV[3], ARGV[4])
local out = {gen}
for i = 5, #ARGV, 3 do
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
local t = redis.call('TIME')
local horizon = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
if horizon > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', horizon))
end
return out
"""

# KEYS: stream, generation. Returns {generation, last generated stream id ('0-0' with no stream)}.
HEAD = _LUA_COMMON + """
local gen = ensure_generation(KEYS[2])
local last = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
return {gen, last}
"""

# KEYS: stream, generation. ARGV: the generation and stream id to resume after, page size, ttl_ms.
# Returns {generation, last generated id, resume point still held (0/1), first page of entries after it}.
# Entries older than the TTL are trimmed first, so a quiet stream never replays what the TTL expired.
REPLAY = HEAD.rsplit("return", 1)[0] + """
if gen ~= ARGV[1] or last == '0-0' then
  return {gen, last, 0, {}}
end
local t = redis.call('TIME')
local horizon = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[4])
if horizon > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', horizon))
end
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
PRESENCE = _LUA_COMMON + """
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

# KEYS: workers. ARGV: worker prefix, self, encoded target. The target's connections on other workers.
ONLINE = _LUA_COMMON + _LUA_ONLINE + """
return online(live_workers(KEYS[1], ARGV[1], ARGV[2]), ARGV[1], ARGV[3])
"""
