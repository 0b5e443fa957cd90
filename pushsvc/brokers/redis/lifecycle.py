"""Presence transitions with Redis, for one worker: its :class:`~.tracker.Tracker` and :class:`~.feed.Feed`.

The broker starts this when the worker first serves (with the reader, the canary and presence) and stops
it with the broker. See docs/PRESENCE.md for the design.
"""

from __future__ import annotations

import os

import redis

from ...registry import Registry
from ...transitions import Tracking
from .feed import Feed
from .schema import Keys
from .tracker import Tracker


class RedisTracking:
    """Counts this worker's streams and reads the transitions, for ``tracking``."""

    def __init__(self, url: str, client: redis.Redis, keys: Keys, tracking: Tracking, *,
                 connect_timeout: float, ttl_seconds: float):
        self.url = url
        self.redis = client
        self.keys = keys
        self.tracking = tracking
        self.connect_timeout = connect_timeout
        self.ttl_seconds = ttl_seconds
        self.tracker: Tracker | None = None
        self.feed: Feed | None = None
        self._pid = os.getpid()

    def start(self, registry: Registry, worker: str) -> None:
        """Serve as ``worker`` (its id is new in every process, so this starts afresh after a fork)."""
        if self._pid == os.getpid():
            self.stop()
        self._pid = os.getpid()  # a forked child leaves its parent's share alone
        self.tracker = Tracker(self.redis, self.keys, worker, self.tracking, ttl_seconds=self.ttl_seconds)
        self.feed = Feed(self.url, self.redis, self.keys, worker, self.tracking,
                         connect_timeout=self.connect_timeout)
        # The consumer groups exist before this worker's first count can make a transition.
        self.feed.start()
        self.tracker.attach(registry)

    def stop(self) -> None:
        if self.tracker is not None:
            self.tracker.stop()
            self.tracker = None
        if self.feed is not None:
            self.feed.stop()
            self.feed = None
