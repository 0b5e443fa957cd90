"""Which Redis errors mean "Redis cannot be used right now", and the broker error they become."""

from __future__ import annotations

import redis

from ..base import BrokerUnavailable

# As opposed to a bug in a command, which stays the exception it is.
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)


def unavailable(error: Exception) -> BrokerUnavailable:
    return BrokerUnavailable(f"Redis is unavailable: {error}")
