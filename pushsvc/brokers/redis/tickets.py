"""One-time tickets on the broker's Redis: any worker takes a ticket another one issued, once."""

from __future__ import annotations

import redis

from .errors import UNAVAILABLE, unavailable
from .schema import Keys


class RedisTickets:
    """``SET PX`` to keep a ticket, ``GETDEL`` to spend it: atomic, so two workers never both take one."""

    def __init__(self, client: redis.Redis, keys: Keys):
        self.redis = client
        self.keys = keys

    def put(self, key: str, value: str, ttl_seconds: float) -> None:
        try:
            self.redis.set(self.keys.ticket(key), value, px=max(1, int(ttl_seconds * 1000)))
        except UNAVAILABLE as error:
            raise unavailable(error) from error

    def take(self, key: str) -> str | None:
        try:
            value = self.redis.getdel(self.keys.ticket(key))
        except UNAVAILABLE as error:
            raise unavailable(error) from error
        return None if value is None else value.decode("utf-8")
