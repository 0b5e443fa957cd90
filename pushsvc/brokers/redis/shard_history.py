"""Resume from one shard of a Redis Cluster: what a connection missed after its Last-Event-ID, or why it
cannot be told.

Unlike one Redis, a shard's generation also rises without a loss (a fan-out raises it to the largest of
the shards it reaches), so an id of an older generation is resumed from as long as it is from `since` on,
the generation the shard's server started with (:mod:`.shard_scripts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from ...model import RESET_EXPIRED, RESET_UNKNOWN, Replay
from .errors import UNAVAILABLE, unavailable
from .history import REPLAY_PAGE, frames_after
from .schema import Keys, event_id, parse_event_id, stream_id_tuple
from .shard_scripts import REPLAY


class ShardHistory:
    def __init__(self, client: redis.Redis, keys: Keys, *, ttl_ms: int):
        self.redis = client
        self.keys = keys
        self.ttl_ms = ttl_ms
        self._replay = client.register_script(REPLAY)

    def replay(self, last_id: str, client_id: str, groups: Sequence[str]) -> Replay:
        parsed = parse_event_id(last_id)
        generation, stream_id = parsed if parsed is not None else ("", "0-0")
        keys = self.keys
        try:
            reply = self._replay(keys=[keys.stream, keys.generation, keys.epoch, keys.since],
                                 args=[generation or "x", stream_id, REPLAY_PAGE, self.ttl_ms])
            current, last, held, page, since = (reply[0].decode(), reply[1].decode(), reply[2], reply[3],
                                                reply[4].decode())
            head = event_id(current, last)
            if not held:
                lost = (parsed is None or int(generation) < int(since)
                        or stream_id_tuple(stream_id) > stream_id_tuple(last))
                return Replay(reset=RESET_UNKNOWN if lost else RESET_EXPIRED, head_id=head)
            frames = frames_after(self.redis, keys.stream, page, client_id, groups)
        except UNAVAILABLE as error:
            raise unavailable(error) from error
        return Replay(frames, head_id=head)
