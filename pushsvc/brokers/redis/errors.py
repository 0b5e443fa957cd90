"""Which Redis errors mean "Redis cannot be used right now", and the broker error they become."""

from __future__ import annotations

import redis

from ..base import BrokerUnavailable

# As opposed to a bug in a command, which stays the exception it is. The cluster's: a master down or being
# replaced, slots not served (yet), keys of a slot on their way to another master (TRYAGAIN).
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError,
               redis.exceptions.ClusterError, redis.exceptions.TryAgainError,
               redis.exceptions.RedisClusterException)


def unavailable(error: Exception) -> BrokerUnavailable:
    return BrokerUnavailable(f"Redis is unavailable: {error}")
