"""The facade: publish, close, presence, and the life of one stream. No Flask here.

One :class:`Service` per application per worker process. It starts lazily, in the worker, on first use:
the broker's reader and one housekeeping greenlet that sends heartbeats and cuts off stalled sockets.
"""

from __future__ import annotations

import logging
import os
import random
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import gevent
from gevent.queue import Full

from . import wire
from .broker import Broker, BrokerUnavailable, Message, is_close_id
from .brokers import create_broker
from .config import Settings
from .messages import is_event_id
from .registry import ClientInfo, Connection, Frame, Registry
from .stats import Stats
from .targets import Target

log = logging.getLogger(__name__)

HEARTBEAT_FRAME = Frame(wire.HEARTBEAT)
# Queued when the client hangs up, to wake its stream; never written.
HANG_UP = Frame(b"", end=True)
# A connection that is behind gets up to this many queued events in one socket write.
MAX_FRAMES_PER_WRITE = 256
CLOSE_DATA = {"reason": "closed by the server"}


class Peer(Protocol):
    """The client's socket as the service needs it (see :class:`pushsvc.peer.SocketPeer`)."""

    def cut(self) -> None: ...

    def watch(self, on_hangup: Callable[[], None]) -> Callable[[], None]: ...


@dataclass(frozen=True, slots=True)
class Published:
    id: str
    online: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "online": self.online}


@dataclass(frozen=True, slots=True)
class Subscription:
    """What to answer a subscribe with: a status, and the body when it is a stream."""

    status: int
    body: Iterator[bytes] | None = None
    reason: str = ""


class Service:
    """Everything pushsvc does, for one application in one worker process."""

    #: The services started in this process; the gunicorn worker drains them all on shutdown.
    started: ClassVar[weakref.WeakSet[Service]] = weakref.WeakSet()

    def __init__(self, settings: Settings, broker: Broker | None = None):
        self.settings = settings
        self.broker = broker or create_broker(settings)
        self.stats = Stats()
        self.registry = Registry(on_slow=self._on_slow)
        self.registry.delivered = self.stats.delivered
        self.registry.listeners.append(self.stats.on_connection)
        self._started_in: int | None = None
        self._housekeeper: gevent.Greenlet | None = None
        self.draining = False

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker's delivery and the housekeeping greenlet in this process, once."""
        if self._started_in == os.getpid():
            return
        self._started_in = os.getpid()
        self.broker.start(self.registry)
        self._housekeeper = gevent.spawn(self._housekeeping)
        Service.started.add(self)
        log.info("pushsvc started in worker %s with the %s broker", os.getpid(), self.broker.name)

    def stop(self) -> None:
        if self._housekeeper is not None:
            self._housekeeper.kill(block=False)
        self.broker.stop()
        self._started_in = None
        Service.started.discard(self)

    def drain(self) -> int:
        """Before a restart: refuse new streams, and end every open one with its own ``retry:`` delay.

        Events already queued are written first. The delays are spread out so that thousands of browsers
        do not all come back in the same second. A stream whose queue is full is cut off at once (it
        resumes from history). Returns how many streams were asked to end.
        """
        self.draining = True
        asked = 0
        full = []
        for conn in list(self.registry.connections):
            farewell = wire.comment("restarting") + wire.retry(self.jittered_retry_ms())
            try:
                conn.queue.put_nowait(Frame(farewell, end=True))
                asked += 1
            except Full:
                full.append(conn)
        for conn in full:
            self.registry.drop(conn, "queue full at shutdown")
        self.stats.drained += asked
        log.info("draining worker %s: %d streams asked to reconnect later, %d cut off", os.getpid(),
                 asked, len(full))
        return asked

    def _housekeeping(self) -> None:
        settings = self.settings
        tick = min(1.0, settings.heartbeat_seconds)
        next_beat = time.monotonic() + settings.heartbeat_seconds
        while True:
            gevent.sleep(tick)
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + settings.heartbeat_seconds
                    self.registry.heartbeat(HEARTBEAT_FRAME)
                for conn in self.registry.stalled(now, settings.write_timeout_seconds):
                    self.registry.drop(conn, "write timeout")
            except Exception:  # never let housekeeping die: heartbeats keep every stream alive
                log.exception("housekeeping failed in worker %s", os.getpid())

    def _on_slow(self, conn: Connection, reason: str) -> None:
        self.stats.slow_disconnects[reason] += 1
        log.warning("cut off slow client %s worker=%s: %s after %.1f s, %d events",
                    conn.client_id, os.getpid(), reason, time.monotonic() - conn.opened, conn.sent)

    # -- publishing ---------------------------------------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> list[Published]:
        """Publish in order, all or none. Raises :class:`BrokerUnavailable` when nothing was stored."""
        self.start()
        if self.draining and not self.broker.shared:
            # This worker's history ends with it: a 503 sends the publisher to the next server instead.
            self.stats.broker_errors += 1
            raise BrokerUnavailable("this worker is shutting down and its broker keeps nothing")
        try:
            with self.stats.publish_seconds.time():
                published = self.broker.publish_counted(messages)
        except BrokerUnavailable:
            self.stats.broker_errors += 1
            raise
        for message in messages:
            self.stats.published[message.target.kind] += 1
        if log.isEnabledFor(logging.DEBUG):
            for message, (event_id, count) in zip(messages, published, strict=True):
                log.debug("published %s to %s %s (%d online)", event_id, message.target.kind,
                          ",".join(message.target.values), count)
        return [Published(i, n) for i, n in published]

    def send(self, target: Target, data: Any, *, event: str | None = None, retry: int | None = None) -> str:
        """Publish one event built from Python values; returns its id. Validation is the caller's."""
        body = wire.encode_body(wire.data_text(data), event=event, retry=retry)
        return self.publish([Message(target, body)])[0].id

    def close(self, client_id: str) -> int:
        """End every stream of ``client_id``, on every worker; returns how many were open."""
        body = wire.encode_body(wire.data_text(CLOSE_DATA), event="close")
        result = self.publish([Message(Target.clients([client_id]), body, close=True)])[0]
        log.info("close %s: %d streams, event %s", client_id, result.online, result.id)
        return result.online

    # -- presence -----------------------------------------------------------------------------------

    def clients(self) -> dict[str, ClientInfo]:
        self.start()
        return self.broker.clients()

    def client(self, client_id: str) -> ClientInfo | None:
        self.start()
        return self.broker.client(client_id)

    def health(self) -> dict[str, Any]:
        self.start()
        return self.broker.health()

    # -- subscribing --------------------------------------------------------------------------------

    def subscribe(
        self,
        client_id: str,
        groups: Iterable[str] = (),
        *,
        last_event_id: str | None = None,
        peer: Peer | None = None,
    ) -> Subscription:
        """Admit a stream, or say why not. ``peer`` is the client's socket, to cut off or watch."""
        self.start()
        if last_event_id and is_close_id(last_event_id):
            self.stats.refused["closed"] += 1
            return Subscription(204, reason="closed")
        if self.draining:
            return self._busy("restarting", last_event_id)
        if len(self.registry) >= self.settings.max_connections:
            return self._busy("full", last_event_id)
        if not self.broker.health().get("ok"):
            return self._busy("broker unavailable", last_event_id)
        conn = Connection(client_id, groups, queue_size=self.settings.queue_size,
                          cut=peer.cut if peer is not None else None)
        return Subscription(200, self._stream(conn, last_event_id, peer))

    def _busy(self, reason: str, last_event_id: str | None) -> Subscription:
        self.stats.refused[reason] += 1
        return Subscription(200, iter([self.soft_refusal(reason, last_event_id)]), reason=reason)

    def soft_refusal(self, reason: str, last_event_id: str | None) -> bytes:
        """``retry:`` with jitter and ``event: busy``: the browser comes back later, all at different times.

        The event repeats the client's own Last-Event-ID, so its resume point survives the refusal.
        """
        delay = self.jittered_retry_ms()
        echo = last_event_id if last_event_id and is_event_id(last_event_id) else ""
        return wire.retry(delay) + wire.encode(echo, {"reason": reason, "retry": delay}, event="busy")

    def jittered_retry_ms(self) -> int:
        """A reconnection delay of ``busy_retry_ms``, give or take half, different for every caller."""
        return int(self.settings.busy_retry_ms * random.uniform(0.5, 1.5))

    def _stream(self, conn: Connection, last_event_id: str | None, peer: Peer | None) -> Iterator[bytes]:
        registry = self.registry
        registry.add(conn)
        unwatch = peer.watch(lambda: self._hung_up(conn)) if peer is not None else None
        self.stats.connections_opened += 1
        log.info("connect %s groups=%s worker=%s resume=%s", conn.client_id, ",".join(conn.groups),
                 os.getpid(), last_event_id or "-")
        ended = "client gone"
        try:
            yield wire.retry(self.settings.retry_ms)
            if last_event_id:
                head, end = self._resume(conn, last_event_id)
                if head:
                    yield head
                if end:
                    ended = "closed"
                    return
            ended = yield from self._live(conn)
        except BrokerUnavailable:
            ended = "broker unavailable"
            yield self.soft_refusal("broker unavailable", None)
        finally:
            if unwatch is not None:
                unwatch()
            registry.remove(conn)
            self.stats.connections_closed += 1
            if conn.dead and ended == "client gone":
                ended = "cut off"
            log.info("disconnect %s worker=%s after %.1f s, %d events: %s", conn.client_id, os.getpid(),
                     time.monotonic() - conn.opened, conn.sent, ended)

    def _hung_up(self, conn: Connection) -> None:
        """The client closed its end: leave the registry now and wake the stream so it ends."""
        if conn.dead:
            return
        conn.dead = True
        self.registry.remove(conn)
        try:
            conn.queue.put_nowait(HANG_UP)
        except Full:
            conn.cut()  # the stream is in a write, which the shutdown fails

    def _resume(self, conn: Connection, last_event_id: str) -> tuple[bytes, bool]:
        """The replayed bytes (or a reset event), and whether the stream must end after them."""
        replay = self.broker.replay(last_event_id, conn.client_id, conn.groups)
        self.stats.replays += 1
        if replay.reset:
            self.stats.resets[replay.reset] += 1
            log.info("reset %s worker=%s: %s (Last-Event-ID %s)", conn.client_id, os.getpid(),
                     replay.reset, last_event_id)
            data = {"reason": replay.reset, "lastEventId": last_event_id}
            return wire.encode(replay.head_id, data, event="reset"), False
        frames = replay.frames
        if not frames:
            return b"", False
        self.stats.replayed_events += len(frames)
        conn.sent += len(frames)
        conn.skip_until = frames[-1].key
        for index, frame in enumerate(frames):
            if frame.end:
                return b"".join(f.data for f in frames[: index + 1]), True
        return b"".join(f.data for f in frames), False

    def _live(self, conn: Connection) -> Iterator[bytes]:
        """Write queued frames until one ends the stream; returns why it ended."""
        queue = conn.queue
        get, get_nowait, qsize = queue.get, queue.get_nowait, queue.qsize
        clock = time.monotonic
        while True:
            frame = get()
            if frame is HANG_UP:
                return "client gone"
            if qsize() == 0 and conn.skip_until is None:
                # The common case: one event, written as it is.
                conn.writing_since = clock()
                yield frame.data
                conn.writing_since = None
                if frame.event_id is not None:
                    conn.sent += 1
                if frame.end:
                    return "closed"
                continue
            batch = [frame]
            for _ in range(min(qsize(), MAX_FRAMES_PER_WRITE)):
                batch.append(get_nowait())
            if HANG_UP in batch:
                return "client gone"
            if conn.skip_until is not None:
                batch = self._skip_replayed(conn, batch)
            end = next((i for i, f in enumerate(batch) if f.end), None)
            if end is not None:
                batch = batch[: end + 1]
            if batch:
                conn.writing_since = clock()
                yield b"".join(f.data for f in batch)
                conn.writing_since = None
                conn.sent += sum(1 for f in batch if f.event_id is not None)
            if end is not None:
                return "closed"

    @staticmethod
    def _skip_replayed(conn: Connection, batch: list[Frame]) -> list[Frame]:
        """Drop frames already written by the replay; once a newer one is seen, stop checking."""
        kept = []
        for frame in batch:
            if frame.key is None or conn.skip_until is None:
                kept.append(frame)
            elif frame.key > conn.skip_until:
                conn.skip_until = None
                kept.append(frame)
        return kept
