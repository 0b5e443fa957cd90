"""pushsvc: a Server-Sent Events push service on Flask, gevent and gunicorn.

The public names are imported on first use (PEP 562), so ``pushsvc --help``, the gunicorn arbiter and a
script that only reads :mod:`pushsvc.config` import what they use, not Flask, gevent and Prometheus.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .brokers.base import BrokerUnavailable
    from .config import ConfigError, Settings
    from .extension import Push
    from .hooks import Stream
    from .idempotency import IdempotencyConflict
    from .messages import InvalidInput
    from .wire import Event

__all__ = ["BrokerUnavailable", "ConfigError", "Event", "IdempotencyConflict", "InvalidInput", "Push",
           "Settings", "Stream", "create_app"]
__version__ = "0.1.0"

_HOMES = {
    "create_app": ".app",
    "BrokerUnavailable": ".brokers.base",
    "ConfigError": ".config",
    "Settings": ".config",
    "Push": ".extension",
    "Stream": ".hooks",
    "IdempotencyConflict": ".idempotency",
    "InvalidInput": ".messages",
    "Event": ".wire",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pushsvc' has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
