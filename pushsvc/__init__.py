"""pushsvc: a Server-Sent Events push service on Flask, gevent and gunicorn."""

from __future__ import annotations

from .app import create_app
from .broker import BrokerUnavailable
from .config import ConfigError, Settings
from .extension import Push
from .messages import InvalidInput
from .wire import Event

__all__ = ["BrokerUnavailable", "ConfigError", "Event", "InvalidInput", "Push", "Settings", "create_app"]
__version__ = "0.1.0"
