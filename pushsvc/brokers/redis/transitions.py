"""The Lua scripts that decide presence transitions in Redis, each step atomic (see docs/PRESENCE.md).

Every worker writes only absolute numbers of its own streams per unit (never deltas), so a script that ran
but whose answer was lost can simply run again. Redis's own ``TIME`` stamps everything: worker clocks
never meet. Every key is under the deployment's hash tag, so the scripts run unchanged on a Redis Cluster.

* :data:`APPLY`: a worker's new counts for some units (or all of them); a unit's service-wide count going
  from 0 up either cancels its pending ``offline`` or adds an ``online`` to the transitions stream; going
  down to 0 makes its ``offline`` due after the grace period.
* :data:`REFRESH`: a worker's liveness key gets its TTL again, unless a sweep took the worker's share away
  (then the worker writes everything again).
* :data:`SWEEP`: any worker may run it, as often as it likes: the shares of workers whose liveness key
  expired are taken back (they died without a word), due ``offline`` entries become transitions, and the
  transitions stream is trimmed by age.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from ...transitions import OFFLINE, ONLINE, Transition, split_unit
from .schema import Keys

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- made[1] counts transitions of client ids, made[2] those of a client id in a group.
local function tally(made, unit)
  local k = 1
  if string.find(unit, ' ', 1, true) then k = 2 end
  made[k] = made[k] + 1
end
-- Add delta to a unit's service-wide count, and make the transition that follows, if any.
local function shift(counts, pending, stream, unit, delta, now, grace, made)
  if delta == 0 then return end
  local total = redis.call('HINCRBY', counts, unit, delta)
  local before = total - delta
  if total > 0 and before <= 0 then
    if redis.call('ZREM', pending, unit) == 0 then
      redis.call('XADD', stream, '*', 'type', 'online', 'unit', unit, 'time', now)
      tally(made, unit)
    end
  elseif total <= 0 then
    redis.call('HDEL', counts, unit)
    if before > 0 then redis.call('ZADD', pending, now + grace, unit) end
  end
end
"""

# KEYS: counts, pending, workers, transitions. ARGV: worker, units key, alive key, grace ms, alive ms,
# "1" when the pairs that follow are the worker's whole state, then unit, count pairs, applied in order (a
# unit may come twice: 1 then 0 for a stream that opened and ended between two writes).
APPLY = _PRELUDE + """
local worker, units, alive = ARGV[1], ARGV[2], ARGV[3]
local grace, ttl, whole = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
if not whole and redis.call('SISMEMBER', KEYS[3], worker) == 0 then
  return {-1, 0, 0}  -- swept as dead (or Redis lost everything): the worker must write its whole state
end
local now, made = now_ms(), {0, 0}
local function set_count(unit, count)
  local old = tonumber(redis.call('HGET', units, unit) or '0')
  if count > 0 then redis.call('HSET', units, unit, count) else redis.call('HDEL', units, unit) end
  shift(KEYS[1], KEYS[2], KEYS[4], unit, count - old, now, grace, made)
end
local given = {}
for i = 7, #ARGV, 2 do
  given[ARGV[i]] = true
  set_count(ARGV[i], tonumber(ARGV[i + 1]))
end
if whole then
  for _, unit in ipairs(redis.call('HKEYS', units)) do
    if not given[unit] then set_count(unit, 0) end
  end
end
redis.call('SADD', KEYS[3], worker)
redis.call('SET', alive, now, 'PX', ttl)
return {1, made[1], made[2]}
"""

# KEYS: workers. ARGV: worker, alive key, alive ms.
REFRESH = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', ARGV[2], '1', 'PX', tonumber(ARGV[3]))
return 1
"""

# KEYS: counts, pending, workers, transitions. ARGV: worker key prefix, grace ms, "1" to look for dead
# workers, entries to keep (ms), most offline entries to turn out in one call, most entries to keep.
SWEEP = _PRELUDE + """
local prefix, grace, keep, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now, made, offline = now_ms(), {0, 0}, {0, 0}
local dead = 0
if ARGV[3] == '1' then
  for _, worker in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    if redis.call('EXISTS', prefix .. worker .. ':alive') == 0 then
      local units = prefix .. worker .. ':units'
      local share = redis.call('HGETALL', units)
      for i = 1, #share, 2 do
        shift(KEYS[1], KEYS[2], KEYS[4], share[i], -tonumber(share[i + 1]), now, grace, made)
      end
      redis.call('DEL', units)
      redis.call('SREM', KEYS[3], worker)
      dead = dead + 1
    end
  end
end
for _, unit in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, most)) do
  redis.call('ZREM', KEYS[2], unit)
  if redis.call('HEXISTS', KEYS[1], unit) == 0 then
    redis.call('XADD', KEYS[4], '*', 'type', 'offline', 'unit', unit, 'time', now)
    tally(offline, unit)
  end
end
redis.call('XTRIM', KEYS[4], 'MINID', '~', now - keep)
redis.call('XTRIM', KEYS[4], 'MAXLEN', '~', tonumber(ARGV[6]))
return {dead, offline[1], offline[2]}
"""


class Scripts:
    """The three scripts, bound to one client and one deployment's keys."""

    def __init__(self, client: redis.Redis, keys: Keys):
        self.keys = keys
        self._apply = client.register_script(APPLY)
        self._refresh = client.register_script(REFRESH)
        self._sweep = client.register_script(SWEEP)
        self._shared = [keys.presence_counts, keys.presence_pending, keys.presence_workers, keys.transitions]

    def apply(self, worker: str, counts: Sequence[tuple[str, int]], *, whole: bool, grace_ms: int,
              alive_ms: int) -> tuple[int, int] | None:
        """Write this worker's counts; the ``online`` transitions made ``(of clients, in groups)``, or
        ``None`` when the worker was swept and must write its whole state instead."""
        args: list[Any] = [worker, self.keys.presence_units(worker), self.keys.presence_alive(worker),
                           grace_ms, alive_ms, "1" if whole else ""]
        for name, count in counts:
            args += (name, count)
        status, clients, groups = self._apply(keys=self._shared, args=args)
        return None if status < 0 else (int(clients), int(groups))

    def refresh(self, worker: str, alive_ms: int) -> bool:
        """Keep the worker alive; ``False`` when it was swept (it must write its whole state)."""
        return bool(self._refresh(keys=[self.keys.presence_workers],
                                  args=[worker, self.keys.presence_alive(worker), alive_ms]))

    def sweep(self, *, grace_ms: int, find_dead: bool, keep_ms: int, keep_most: int,
              most: int) -> tuple[int, int, int]:
        """``(dead workers taken back, offline transitions made of clients, and in groups)``."""
        dead, clients, groups = self._sweep(keys=self._shared,
                                            args=[self.keys.presence_worker_prefix, grace_ms,
                                                  "1" if find_dead else "", keep_ms, most, keep_most])
        return int(dead), int(clients), int(groups)


def parse_entry(raw_id: bytes, fields: dict[bytes, bytes]) -> Transition:
    """A transition from its stream entry; its id is the entry's, unique for the whole service."""
    client, group = split_unit(fields[b"unit"].decode("utf-8"))
    state = ONLINE if fields[b"type"] == b"online" else OFFLINE
    return Transition(raw_id.decode(), state, client, int(fields[b"time"]), group)
