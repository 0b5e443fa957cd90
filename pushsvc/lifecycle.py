"""The life of streams as the application sees it: hooks per stream, and the presence transitions.

:class:`Lifecycle` is the service's half of it: it hears every stream open and end (from
:func:`pushsvc.stream.open_stream`), knows why the service itself ended one, calls ``on_connect`` and
``on_disconnect``, and tells the broker what its presence transitions feed (the hooks, the webhook, and the
in-band ``event: presence`` of ``?presence=1`` streams, :class:`GroupWatchers`). No Flask here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from gevent.queue import Full

from . import wire
from .config import Settings
from .hooks import Hooks, Stream
from .model import Frame
from .registry import Connection
from .stats import Stats
from .stream import DRAIN, SLOW
from .transitions import Consumer, Tracking, Transition
from .webhook import Webhook

log = logging.getLogger(__name__)

# Transitions are kept (with Redis) for the webhook's retry period and this much more: a worker that dies
# while it retries leaves them to another, which must still find them.
KEEP_MARGIN_SECONDS = 60.0
# The registry's reason when the drain cuts off a stream whose queue is full.
DRAIN_CUT = "queue full at shutdown"


class Lifecycle:
    """The open streams of one service, as its hooks see them."""

    def __init__(self, settings: Settings, hooks: Hooks, stats: Stats):
        self.settings = settings
        self.hooks = hooks
        self.stats = stats
        self.watchers = GroupWatchers()
        self.streams: dict[Connection, Stream] = {}

    def tracking(self) -> Tracking | None:
        """What the broker's presence tracking feeds, or ``None`` when it is off."""
        settings = self.settings
        if not settings.presence_tracking:
            if self.hooks.transitions:
                log.warning("on_online/on_offline hooks are registered but PUSHSVC_PRESENCE_TRACKING is "
                            "off: they are never called")
            return None
        consumers: list[Consumer] = []
        if self.hooks.transitions:
            consumers.append(self.hooks.consumer(self.stats))
        if settings.webhook_url is not None:
            consumers.append(Webhook(settings, self.stats).consumer())
        return Tracking(settings.presence_grace_seconds, tuple(consumers), self.watchers.deliver,
                        self.stats.transitions,
                        keep_seconds=settings.webhook_retry_seconds + KEEP_MARGIN_SECONDS)

    def of(self, stream: Stream) -> StreamLife:
        """The :class:`~pushsvc.stream.Lifecycle` of one stream about to open."""
        return StreamLife(self, stream)

    def cut(self, conn: Connection, reason: str) -> None:
        """The registry cut ``conn`` off (``reason`` is the registry's): remember why it will end."""
        stream = self.streams.get(conn)
        if stream is not None:
            stream.cause = DRAIN if reason == DRAIN_CUT else SLOW

    def opened(self, conn: Connection, stream: Stream) -> None:
        self.streams[conn] = stream
        if stream.presence:
            self.watchers.add(conn)
        for hook in self.hooks.connect:
            self.hooks.spawn(self.stats, "connect", hook, conn.client_id, stream)

    def ended(self, conn: Connection, reason: str) -> str:
        stream = self.streams.pop(conn, None)
        if stream is None:
            return reason
        reason = stream.cause or reason
        if stream.presence:
            self.watchers.remove(conn)
        for hook in self.hooks.disconnect:
            self.hooks.spawn(self.stats, "disconnect", hook, conn.client_id, stream, reason)
        return reason


class StreamLife:
    """One stream's :class:`~pushsvc.stream.Lifecycle`: the service's, with that stream's hook view."""

    __slots__ = ("lifecycle", "stream")

    def __init__(self, lifecycle: Lifecycle, stream: Stream):
        self.lifecycle = lifecycle
        self.stream = stream

    def opened(self, conn: Connection) -> None:
        self.lifecycle.opened(conn, self.stream)

    def ended(self, conn: Connection, reason: str) -> str:
        return self.lifecycle.ended(conn, reason)


class GroupWatchers:
    """The ``?presence=1`` streams of this worker, by group, and the in-band events they get."""

    def __init__(self) -> None:
        self.by_group: dict[str, set[Connection]] = {}

    def add(self, conn: Connection) -> None:
        for group in conn.groups:
            self.by_group.setdefault(group, set()).add(conn)

    def remove(self, conn: Connection) -> None:
        for group in conn.groups:
            members = self.by_group.get(group)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self.by_group[group]

    def deliver(self, transitions: Sequence[Transition]) -> None:
        """Queue ``event: presence`` on every watching stream of each transition's group, but not on the
        streams of the client id that moved. It carries no ``id:``: the browser's resume point stays."""
        for transition in transitions:
            watchers = self.by_group.get(transition.group or "")
            if not watchers:
                continue
            data = {"group": transition.group, "client": transition.client, "state": transition.type}
            frame = Frame(wire.encode_body(json.dumps(data, ensure_ascii=False, separators=(",", ":")),
                                           event="presence"))
            for conn in list(watchers):
                if conn.client_id == transition.client:
                    continue
                try:
                    conn.queue.put_nowait(frame)
                except Full:  # behind already: its next event cuts it off, and it resumes
                    log.debug("presence event for %s dropped: queue full", conn.client_id)
