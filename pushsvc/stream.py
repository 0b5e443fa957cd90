"""The life of one open stream, from registering its connection to writing its last byte. No Flask here.

:func:`open_stream` is the generator a subscribe's response iterates. It owns the connection's whole life
(habit 4 of the style guide): the broker's :meth:`~pushsvc.brokers.base.Broker.on_subscribe` step, then
the registry, then the first chunk, the resume, the live frames; and in ``finally`` (gunicorn closes the
iterator when the client is gone) it leaves the registry, however it ended.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Generator, Iterator
from typing import Protocol

from gevent.queue import Full

from . import wire
from .brokers.base import Broker, BrokerUnavailable
from .model import Frame
from .registry import Connection, Registry
from .stats import Stats

log = logging.getLogger(__name__)

# Queued when the client hangs up, to wake its stream; never written.
HANG_UP = Frame(b"", end=True)
# A connection that is behind gets up to this many queued events in one socket write.
MAX_FRAMES_PER_WRITE = 256


# Why a stream ended, as on_disconnect hears it: the client hung up; a close event (or the resume found
# one); cut off for not keeping up; the worker's drain before a restart; the broker failed or a bug.
CLIENT, CLOSED, SLOW, DRAIN, ERROR = "client", "closed", "slow", "drain", "error"
REASONS = (CLIENT, CLOSED, SLOW, DRAIN, ERROR)


class Lifecycle(Protocol):
    """Who hears of a stream's opening and end (the service, for the application's hooks)."""

    def opened(self, conn: Connection) -> None: ...

    def ended(self, conn: Connection, reason: str) -> str:
        """Hear that ``conn`` ended for ``reason``; returns the reason as it was reported (the service
        may know better: a stream it cut off for being slow ends in a failed write)."""
        ...


class Peer(Protocol):
    """The client's socket as a stream needs it (see :class:`pushsvc.server.peer.SocketPeer`)."""

    def cut(self) -> None: ...

    def watch(self, on_hangup: Callable[[], None]) -> Callable[[], None]: ...


def open_stream(conn: Connection, *, broker: Broker, registry: Registry, stats: Stats, retry_ms: int,
                last_event_id: str | None, peer: Peer | None,
                refuse: Callable[[str, str | None], bytes],
                lifecycle: Lifecycle | None = None) -> Iterator[bytes]:
    """The bytes of one stream: ``retry:``, the replay (or ``event: reset``), then live events.

    ``refuse(reason, last_event_id)`` gives the soft refusal to end with when the broker cannot take the
    stream after all (its ``on_subscribe`` or the resume failed). ``lifecycle`` hears, once each, that
    the stream opened (it is in the registry) and why it ended: one of :data:`REASONS`.
    """
    try:
        conn.skip_through(broker.on_subscribe(conn))
    except BrokerUnavailable:
        yield refuse("broker unavailable", last_event_id)
        return
    registry.add(conn)
    broker.on_registered(conn)
    unwatch = peer.watch(lambda: _hung_up(registry, conn)) if peer is not None else None
    stats.connections_opened += 1
    log.info("connect %s groups=%s worker=%s resume=%s", conn.client_id, ",".join(conn.groups),
             os.getpid(), last_event_id or "-")
    ended = CLIENT
    try:
        if lifecycle is not None:
            lifecycle.opened(conn)
        yield wire.retry(retry_ms)
        closed = yield from _replay(conn, broker, stats, last_event_id)
        ended = CLOSED if closed else (yield from _live(conn))
    except BrokerUnavailable:
        ended = ERROR
        yield refuse("broker unavailable", last_event_id)
    except Exception:
        ended = ERROR
        raise
    finally:
        if unwatch is not None:
            unwatch()
        _closed(conn, registry, stats, ended, lifecycle)


def _replay(conn: Connection, broker: Broker, stats: Stats,
            last_event_id: str | None) -> Generator[bytes, None, bool]:
    """The resume's bytes, if the stream resumes; True when it ended on a close."""
    if not last_event_id:
        return False
    head, end = _resume(conn, broker, stats, last_event_id)
    if head:
        yield head
    return end


def _closed(conn: Connection, registry: Registry, stats: Stats, ended: str,
            lifecycle: Lifecycle | None) -> None:
    """The stream's generator is done: leave the registry, count it and say why it ended."""
    registry.remove(conn)
    stats.connections_closed += 1
    if lifecycle is not None:
        ended = lifecycle.ended(conn, ended)
    log.info("disconnect %s worker=%s after %.1f s, %d events: %s", conn.client_id, os.getpid(),
             time.monotonic() - conn.opened, conn.sent, ended)


def _hung_up(registry: Registry, conn: Connection) -> None:
    """The client closed its end: leave the registry now and wake the stream so it ends."""
    if conn.dead:
        return
    conn.dead = True
    registry.remove(conn)
    try:
        conn.queue.put_nowait(HANG_UP)
    except Full:
        conn.cut()  # the stream is in a write, which the shutdown fails


def _resume(conn: Connection, broker: Broker, stats: Stats, last_event_id: str) -> tuple[bytes, bool]:
    """The replayed bytes (or a reset event), and whether the stream must end after them."""
    replay = broker.replay(last_event_id, conn.client_id, conn.groups)
    stats.replays += 1
    if replay.reset:
        stats.resets[replay.reset] += 1
        log.info("reset %s worker=%s: %s (Last-Event-ID %s)", conn.client_id, os.getpid(),
                 replay.reset, last_event_id)
        data = {"reason": replay.reset, "lastEventId": last_event_id}
        return wire.encode(replay.head_id, data, event="reset"), False
    frames = replay.frames
    if not frames:
        return b"", False
    stats.replayed_events += len(frames)
    conn.sent += len(frames)
    conn.skip_through(frames[-1].key)
    for index, frame in enumerate(frames):
        if frame.end:
            return b"".join(f.data for f in frames[: index + 1]), True
    return b"".join(f.data for f in frames), False


def _live(conn: Connection) -> Iterator[bytes]:
    """Write queued frames until one ends the stream; returns why it ended.

    A frame that ends the stream without an id is the drain's farewell (a close event has an id).
    """
    queue = conn.queue
    get, get_nowait, qsize = queue.get, queue.get_nowait, queue.qsize
    clock = time.monotonic
    while True:
        frame = get()
        if frame is HANG_UP:
            return CLIENT
        if qsize() == 0 and conn.skip_until is None:
            # The common case: one event, written as it is.
            conn.writing_since = clock()
            yield frame.data
            conn.writing_since = None
            if frame.event_id is not None:
                conn.sent += 1
            if frame.end:
                return CLOSED if frame.event_id is not None else DRAIN
            continue
        batch = [frame]
        for _ in range(min(qsize(), MAX_FRAMES_PER_WRITE)):
            batch.append(get_nowait())
        if HANG_UP in batch:
            return CLIENT
        if conn.skip_until is not None:
            batch = _skip_replayed(conn, batch)
        end = next((i for i, f in enumerate(batch) if f.end), None)
        if end is not None:
            batch = batch[: end + 1]
        if batch:
            conn.writing_since = clock()
            yield b"".join(f.data for f in batch)
            conn.writing_since = None
            conn.sent += sum(1 for f in batch if f.event_id is not None)
        if end is not None:
            return CLOSED if batch[-1].event_id is not None else DRAIN


def _skip_replayed(conn: Connection, batch: list[Frame]) -> list[Frame]:
    """Drop frames already written another way; once a newer one is seen, stop checking."""
    kept = []
    for frame in batch:
        if frame.key is None or conn.skip_until is None:
            kept.append(frame)
        elif frame.key > conn.skip_until:
            conn.skip_until = None
            kept.append(frame)
    return kept
