"""The replay window of the in-memory broker: the last N events, none older than a TTL."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice

from ..model import Frame, Target


class History:
    """Events by sequence number. Sequence numbers are consecutive, so lookups are arithmetic."""

    def __init__(self, *, size: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic):
        self._entries: deque[tuple[int, float, Target, Frame]] = deque()
        self._size = size
        self._ttl = ttl_seconds
        self._clock = clock
        #: The newest sequence number ever appended (0 before the first).
        self.last_seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, seq: int, target: Target, frame: Frame) -> None:
        now = self._clock()
        entries = self._entries
        entries.append((seq, now, target, frame))
        self.last_seq = seq
        while len(entries) > self._size:
            entries.popleft()
        # Expired events go now, not at the next resume: a quiet server's memory holds what the TTL
        # allows, not PUSHSVC_HISTORY_SIZE events (the entry just added is never older than the horizon).
        horizon = now - self._ttl
        while entries[0][1] < horizon:
            entries.popleft()

    def trim(self) -> None:
        """Forget events older than the TTL."""
        horizon = self._clock() - self._ttl
        entries = self._entries
        while entries and entries[0][1] < horizon:
            entries.popleft()

    def covers(self, seq: int) -> bool:
        """Is every event after ``seq`` still here?"""
        self.trim()
        first = self._entries[0][0] if self._entries else self.last_seq + 1
        return first - 1 <= seq <= self.last_seq

    def after(self, seq: int, client_id: str, groups: Sequence[str]) -> list[Frame]:
        """The frames after ``seq`` that ``client_id`` in ``groups`` would have received, in order."""
        if not self._entries:
            return []
        start = max(0, seq - self._entries[0][0] + 1)
        return [frame for _, _, target, frame in islice(self._entries, start, None)
                if target.matches(client_id, groups)]
