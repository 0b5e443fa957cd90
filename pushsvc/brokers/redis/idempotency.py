"""Idempotency keys on the broker's Redis: a key claimed on one worker or machine is claimed for all.

A key's value is ``~<token> <fingerprint>`` while its publish runs (for :data:`IN_FLIGHT_SECONDS` at most)
and ``=<fingerprint> <answer as JSON>`` once answered. Claim and finish are each one small script, so two
workers can never both claim a key, and a late publisher never overwrites another's claim.
"""

from __future__ import annotations

import json

import redis

from ...idempotency import IN_FLIGHT_SECONDS, Claim, Entry, new_token
from ...model import Published
from .errors import UNAVAILABLE, unavailable
from .schema import Keys

# KEYS: the key. ARGV: the in-flight value, its lifetime in ms. Returns what the key holds, or nil once it
# was free and is now claimed. (SET NX GET would do it in one command, from Redis 7.0 on only.)
CLAIM = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# KEYS: the key. ARGV: the owner's in-flight prefix "~<token> ", the new value ('' to delete it), its
# lifetime in ms. Nothing happens unless the owner still holds the key.
FINISH = """
local held = redis.call('GET', KEYS[1])
if not held or string.sub(held, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""


class RedisIdempotency:
    """Claims and answers under ``{namespace}:idem:<key>``; every call fails fast when Redis does not."""

    def __init__(self, client: redis.Redis, keys: Keys):
        self.keys = keys
        self._claim = client.register_script(CLAIM)
        self._finish = client.register_script(FINISH)

    def claim(self, key: str, fingerprint: str, ttl_seconds: float) -> Claim:
        token = new_token()
        lifetime = _ms(min(ttl_seconds, IN_FLIGHT_SECONDS))
        try:
            held = self._claim(keys=[self.keys.idempotency(key)], args=[f"~{token} {fingerprint}", lifetime])
        except UNAVAILABLE as error:
            raise unavailable(error) from error
        return Claim(token=token) if held is None else Claim(entry=decode(held.decode("utf-8")))

    def record(self, key: str, token: str, entry: Entry, ttl_seconds: float) -> None:
        self._run(key, token, encode(entry), ttl_seconds)

    def release(self, key: str, token: str) -> None:
        self._run(key, token, "", 1)

    def _run(self, key: str, token: str, value: str, ttl_seconds: float) -> None:
        try:
            self._finish(keys=[self.keys.idempotency(key)], args=[f"~{token} ", value, _ms(ttl_seconds)])
        except UNAVAILABLE as error:
            raise unavailable(error) from error


def encode(entry: Entry) -> str:
    answer = [[p.id, p.online] for p in entry.answer or ()]
    return f"={entry.fingerprint} {json.dumps(answer, separators=(',', ':'))}"


def decode(value: str) -> Entry:
    """The entry a value holds: in flight (``~``) or answered (``=``)."""
    state, rest = value[:1], value[1:]
    if state == "~":
        return Entry(rest.partition(" ")[2])
    fingerprint, _, answer = rest.partition(" ")
    return Entry(fingerprint, tuple(Published(event_id, online) for event_id, online in json.loads(answer)))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
