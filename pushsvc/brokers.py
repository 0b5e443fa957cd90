"""Choose the broker in one place, by the scheme of ``PUSHSVC_BROKER_URL``."""

from __future__ import annotations

from .broker import Broker
from .config import ConfigError, Settings


def create_broker(settings: Settings) -> Broker:
    scheme = settings.broker_scheme
    if scheme == "memory":
        from .memory_broker import MemoryBroker

        return MemoryBroker(history_size=settings.history_size,
                            history_ttl_seconds=settings.history_ttl_seconds)
    if scheme in ("redis", "rediss", "unix"):
        from .redis_broker import RedisBroker

        return RedisBroker.from_settings(settings)
    raise ConfigError(f"PUSHSVC_BROKER_URL has an unknown scheme {scheme!r}; use memory:// or redis://")
