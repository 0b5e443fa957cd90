"""Redis's clock as this process sees it, so a script can be handed a deadline in Redis time.

A publish whose answer does not come back in time is answered ``503``; but Redis may still run the script
later (a ``CLIENT PAUSE``, a long command ahead of it, a slow disk on ``appendfsync always``) and store an
event that its publisher was told is lost. So each publish carries a deadline, and the script stores
nothing once Redis's own ``TIME`` is past it. The deadline falls well before the client gives up
(:data:`~pushsvc.brokers.redis.timeouts.COMMAND_TIMEOUT_SECONDS`), so whenever the publisher says 503 the
deadline has passed: the margin is far larger than the error of the offset (half a round trip).

Behind Sentinel the server can change under the same client (a failover), and another machine's clock
with it: the offset is measured again as soon as the client's pool names another server.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

# A measured offset is good for this long; a worker refreshes it every second from its keeper anyway.
OFFSET_MAX_AGE_SECONDS = 60.0


class RedisClock:
    """The offset between Redis's ``TIME`` and ``time.time()`` here, in milliseconds."""

    def __init__(self, client: redis.Redis, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 server: Callable[[], str | None] = lambda: None):
        self.redis = client
        self._wall = wall
        self._monotonic = monotonic
        # The server the client uses now (no I/O): an offset measured on another one is not used.
        self._server = server
        self._offset_ms: float | None = None
        self._measured = 0.0
        self._measured_on: str | None = None

    def measure(self) -> float:
        """Ask Redis for its time; the offset, assuming the answer was made half-way through the trip.
        Raises Redis's own errors when it does not answer."""
        before = self._wall()
        seconds, micros = self.redis.time()
        after = self._wall()
        self._offset_ms = seconds * 1000 + micros / 1000 - (before + after) * 500
        self._measured = self._monotonic()
        self._measured_on = self._server()
        return self._offset_ms

    def deadline_ms(self, seconds: float) -> int:
        """Redis's time ``seconds`` from now, in whole milliseconds (measures first when it must)."""
        if (self._offset_ms is None or self._monotonic() - self._measured > OFFSET_MAX_AGE_SECONDS
                or self._server() != self._measured_on):
            self.measure()
        assert self._offset_ms is not None
        return int(self._wall() * 1000 + self._offset_ms + seconds * 1000)
