"""The Redis broker: many workers on many machines behave as one service (see :mod:`.broker`)."""

from __future__ import annotations

from .broker import RedisBroker

__all__ = ["RedisBroker"]
