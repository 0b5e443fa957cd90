"""Counters of what a worker did. Plain integers here; :mod:`pushsvc.metrics` exports them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Stats:
    """Everything is counted per worker since it started."""

    connections_opened: int = 0
    connections_closed: int = 0
    published: Counter[str] = field(default_factory=Counter)   # by target kind
    delivered: Counter[str] = field(default_factory=Counter)   # by target kind
    slow_disconnects: Counter[str] = field(default_factory=Counter)  # by reason
    replays: int = 0
    replayed_events: int = 0
    resets: Counter[str] = field(default_factory=Counter)  # by reason
    refused: Counter[str] = field(default_factory=Counter)  # busy, closed, by reason
    broker_errors: int = 0
