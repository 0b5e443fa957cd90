"""Brokers carry events between publishers and the workers that hold streams, and keep the replay history.

Choose one in one place, by the scheme of ``PUSHSVC_BROKER_URL``: :func:`create_broker`.
"""

from __future__ import annotations

from ..config import CLUSTER_SCHEMES, MEMORY_SCHEMES, REDIS_SCHEMES, SENTINEL_SCHEMES, ConfigError, Settings
from .base import Broker, BrokerUnavailable

__all__ = ["Broker", "BrokerUnavailable", "create_broker"]


def create_broker(settings: Settings) -> Broker:
    """The broker ``settings.broker_url`` names; its module is imported only when chosen."""
    scheme = settings.broker_scheme
    if scheme in MEMORY_SCHEMES:
        from .memory import MemoryBroker

        return MemoryBroker(history_size=settings.history_size,
                            history_ttl_seconds=settings.history_ttl_seconds)
    if scheme in REDIS_SCHEMES or scheme in SENTINEL_SCHEMES:
        from .redis import RedisBroker

        return RedisBroker.from_settings(settings)
    if scheme in CLUSTER_SCHEMES:
        from .redis.sharded import ShardedBroker

        return ShardedBroker.from_settings(settings)
    raise ConfigError(f"PUSHSVC_BROKER_URL has an unknown scheme {scheme!r}; use memory://, redis://, "
                      "redis+sentinel:// or redis+cluster://")
