"""Where one-time subscribe tickets live between ``POST /sse/tickets`` and the subscribe that spends them.

A store keeps a value under a key for a while and gives it back at most once, across the whole service.
:class:`MemoryTickets` is the whole service when the broker is one process; the Redis broker hands out a
store on its own Redis (``SET PX`` and ``GETDEL``), so any worker can take a ticket another one issued.
No HTTP and no broker here: :class:`~pushsvc.auth.Gate` is handed a store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class TicketStore(Protocol):
    def put(self, key: str, value: str, ttl_seconds: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl_seconds``. Raises ``BrokerUnavailable`` if it cannot."""

    def take(self, key: str) -> str | None:
        """The value under ``key``, once; ``None`` if unknown, expired or already taken."""


class MemoryTickets:
    """Tickets in this process, forgotten when they expire."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic):
        self._entries: dict[str, tuple[str, float]] = {}
        self._clock = clock

    def put(self, key: str, value: str, ttl_seconds: float) -> None:
        now = self._clock()
        self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
        self._entries[key] = (value, now + ttl_seconds)

    def take(self, key: str) -> str | None:
        entry = self._entries.pop(key, None)
        if entry is None or entry[1] < self._clock():
            return None
        return entry[0]

    def __len__(self) -> int:
        return len(self._entries)
