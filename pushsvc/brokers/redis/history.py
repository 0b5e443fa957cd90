"""Resume from the Redis stream: what a connection missed after its Last-Event-ID, or why it cannot be told.

An id of another generation is never resumed from (see :mod:`.scripts`): after a failover the new master
may lack events that the old one took after the newest entry it passed on, and nobody can tell which.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from ...model import RESET_EXPIRED, RESET_UNKNOWN, Frame, Replay
from .errors import UNAVAILABLE, unavailable
from .schema import Keys, event_id, frames_for, parse_event_id, stream_id_tuple
from .scripts import REPLAY

# Entries per XRANGE while replaying a long gap.
REPLAY_PAGE = 1000


class RedisHistory:
    """The replay of one deployment's stream, on the broker's fast-failing client."""

    def __init__(self, client: redis.Redis, keys: Keys, *, ttl_ms: int, follow: str):
        self.redis = client
        self.keys = keys
        self.ttl_ms = ttl_ms
        self.follow = follow
        self._replay = client.register_script(REPLAY)

    def replay(self, last_id: str, client_id: str, groups: Sequence[str]) -> Replay:
        """The frames after ``last_id`` for a connection of ``client_id`` in ``groups``, or a reset."""
        parsed = parse_event_id(last_id)
        generation, stream_id = parsed if parsed is not None else ("", "0-0")
        try:
            reply = self._replay(keys=[self.keys.stream, self.keys.generation, self.keys.epoch],
                                 args=[generation, stream_id, REPLAY_PAGE, self.ttl_ms, self.follow])
            current, last, held, page = reply[0].decode(), reply[1].decode(), reply[2], reply[3]
            head = event_id(current, last)
            if parsed is None or generation != current:
                return Replay(reset=RESET_UNKNOWN, head_id=head)
            if stream_id == last:
                return Replay(head_id=head)
            if stream_id_tuple(stream_id) > stream_id_tuple(last):
                return Replay(reset=RESET_UNKNOWN, head_id=head)  # lost with the server that issued it
            if not held:
                return Replay(reset=RESET_EXPIRED, head_id=head)
            frames = frames_after(self.redis, self.keys.stream, page, client_id, groups)
        except UNAVAILABLE as error:
            raise unavailable(error) from error
        return Replay(frames, head_id=head)


def frames_after(client: redis.Redis, stream: str, page: list[Any], client_id: str,
                 groups: Sequence[str]) -> list[Frame]:
    """The frames for a connection in the first ``page`` of a replay and in the pages after it."""
    frames = frames_for(page, client_id, groups)
    while len(page) == REPLAY_PAGE:
        page = client.xrange(stream, b"(" + page[-1][0], "+", count=REPLAY_PAGE)
        frames += frames_for(page, client_id, groups)
    return frames
