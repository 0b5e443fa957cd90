"""The facade: admission, publish, close, presence, and the worker's life cycle. No Flask here.

One :class:`Service` per application per worker process, started lazily in the worker: the broker's
delivery and a housekeeping greenlet (heartbeats, stalled sockets). Every subscribe is decided in
:meth:`Service.subscribe`; the HTTP layer only renders the answer.
"""

from __future__ import annotations

import logging
import os
import random
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gevent
from gevent.queue import Full

from . import wire
from .auth import AuthError, Authorizer, Credentials, Gate
from .brokers import create_broker
from .brokers.base import Broker, BrokerUnavailable
from .config import Settings
from .hooks import Hooks, Stream
from .idempotency import Entry, IdempotencyStore, answer_again
from .lifecycle import DRAIN_CUT, Lifecycle
from .limits import LIMIT_REPORTED, file_limit, stream_cap
from .messages import close_message, is_event_id
from .model import ClientInfo, Frame, Message, Published, Target, is_close_id
from .registry import Connection, Registry
from .stats import Stats
from .stream import Peer, open_stream

log = logging.getLogger(__name__)

HEARTBEAT_FRAME = Frame(wire.HEARTBEAT)
SLICE_PAUSE_SECONDS = 0.001  # a timer, not sleep(0): the loop polls its sockets between two slices
NO_CREDENTIALS = Credentials()


@dataclass(frozen=True, slots=True)
class Subscription:
    """How to answer a subscribe: ``200`` with a body (a stream, or a soft refusal that ends at once),
    ``204`` (closed for good), or ``401``/``403`` with the :class:`AuthError` to show."""

    status: int
    body: Iterator[bytes] | None = None
    #: Why it is not a stream: "closed", "restarting", "full", "broker unavailable", or the auth error's.
    reason: str = ""
    error: AuthError | None = None


class Service:
    """Everything pushsvc does, for one application in one worker process."""

    #: The services started in this process; the gunicorn worker drains them all on shutdown.
    started: ClassVar[weakref.WeakSet[Service]] = weakref.WeakSet()

    def __init__(self, settings: Settings, broker: Broker | None = None, *,
                 authorizers: Sequence[Authorizer] = (), hooks: Hooks | None = None):
        self.settings = settings
        self.stats = Stats()
        #: The application's hooks (register them before the first request) and the streams they see.
        self.lifecycle = Lifecycle(settings, hooks or Hooks(), self.stats)
        self.broker = broker or create_broker(settings)
        self.gate = Gate(settings, self.broker.tickets, authorizers=authorizers)
        self.registry = Registry(on_slow=self._on_slow)
        self.registry.delivered = self.stats.delivered
        self.registry.listeners.append(self.stats.on_connection)
        self._started_in: int | None = None
        self.max_streams = settings.max_connections
        self._housekeeper: gevent.Greenlet | None = None
        self.draining = False

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker's delivery and the housekeeping greenlet in this process, once."""
        if self._started_in == os.getpid():
            return
        self._started_in = os.getpid()
        # Read in the worker: the limit is the one in force after gunicorn (or the host) set it.
        self.max_streams = stream_cap(self.settings.max_connections, file_limit())
        if self.max_streams < self.settings.max_connections and not os.environ.get(LIMIT_REPORTED):
            log.warning("worker %s holds at most %d streams: its file limit is %s", os.getpid(),
                        self.max_streams, file_limit())
        tracking = self.lifecycle.tracking()
        if tracking is not None:
            self.broker.track_presence(tracking)
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
            self.registry.drop(conn, DRAIN_CUT)
        self.stats.drained += asked
        log.info("draining worker %s: %d streams asked to reconnect later, %d cut off", os.getpid(),
                 asked, len(full))
        return asked

    def _housekeeping(self) -> None:
        settings = self.settings
        # Each stream's beat comes within half a period (a second at most) of its due time.
        tick = min(1.0, settings.heartbeat_seconds / 2)
        while True:
            gevent.sleep(tick)
            try:
                for beats in self.registry.housekeep(HEARTBEAT_FRAME, every=settings.heartbeat_seconds,
                                                     write_timeout=settings.write_timeout_seconds):
                    # Between slices the loop reads sockets: publishes wait for one slice, not 10,000.
                    gevent.sleep(SLICE_PAUSE_SECONDS if beats else 0)
            except Exception:  # never let housekeeping die: heartbeats keep every stream alive
                log.exception("housekeeping failed in worker %s", os.getpid())

    def _on_slow(self, conn: Connection, reason: str) -> None:
        self.lifecycle.cut(conn, reason)
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
                published = self.broker.publish(messages)
        except BrokerUnavailable:
            self.stats.broker_errors += 1
            raise
        for message in messages:
            self.stats.published[message.target.kind] += 1
        if log.isEnabledFor(logging.DEBUG):
            for message, result in zip(messages, published, strict=True):
                log.debug("published %s to %s %s (%d online)", result.id, message.target.kind,
                          ",".join(message.target.values), result.online)
        return published

    def publish_once(self, key: str, fingerprint: str,
                     messages: Sequence[Message]) -> tuple[list[Published], bool]:
        """Publish under an Idempotency-Key: ``(answer, replayed)``.

        The first call with ``key`` publishes. A repeat with the same ``fingerprint`` within
        ``idempotency_ttl_seconds`` publishes nothing and gets the first answer again (``replayed``);
        another fingerprint raises :class:`IdempotencyConflict` (422), and so does a repeat while the
        first is still being published (409). Only an accepted publish (202) is kept: a publish that
        fails (:class:`BrokerUnavailable`, 503) frees the key so that a retry publishes, and a refused
        body (400, 413, 415) never gets here. A store that cannot be reached is ``BrokerUnavailable`` too.
        """
        self.start()
        store, ttl = self.broker.idempotency, self.settings.idempotency_ttl_seconds
        claim = store.claim(key, fingerprint, ttl)
        if claim.token is None:
            return answer_again(claim.entry, fingerprint), True
        try:
            published = self.publish(messages)
        except BaseException:
            _release(store, key, claim.token)
            raise
        try:
            store.record(key, claim.token, Entry(fingerprint, tuple(published)), ttl)
        except BrokerUnavailable as error:
            # Published, so answered 202; a retry gets 409 until the claim expires, then publishes again.
            log.warning("published %s but could not keep its Idempotency-Key: %s", published[0].id, error)
        return published, False

    def close(self, client_id: str) -> int:
        """End every stream of ``client_id``, on every worker; returns how many were open."""
        result = self.publish([close_message(client_id)])[0]
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
        """What ``/healthz`` reports: the broker's own answer, within a second."""
        self.start()
        return self.broker.probe()

    # -- subscribing --------------------------------------------------------------------------------

    def subscribe(
        self,
        client_id: str,
        groups: Iterable[str] = (),
        *,
        last_event_id: str | None = None,
        credentials: Credentials = NO_CREDENTIALS,
        peer: Peer | None = None,
        presence: bool = False,
    ) -> Subscription:
        """Decide a subscribe, in order: its credentials (tokens, tickets, the application's own
        ``authorize``), a reconnect after a close, then whether this worker can take a stream now.

        ``peer`` is the client's socket, to cut off or watch; ``presence`` asks for ``event: presence``
        of the other members of its groups. Every refusal is counted, by reason.
        """
        self.start()
        groups = tuple(groups)
        try:
            self.gate.subscriber(client_id, groups, credentials)
            self.gate.application(client_id, groups)
        except AuthError as error:
            self.stats.refused["unauthorized" if error.status == 401 else "forbidden"] += 1
            return Subscription(error.status, reason=error.message, error=error)
        except BrokerUnavailable:
            # The ticket could not be looked up (nor spent): the browser comes back with it later.
            return self._busy("broker unavailable", last_event_id)
        if last_event_id and is_close_id(last_event_id):
            self.stats.refused["closed"] += 1
            return Subscription(204, reason="closed")
        busy = self._no_room(client_id)
        if busy:
            return self._busy(busy, last_event_id)
        conn = Connection(client_id, groups, queue_size=self.settings.queue_size,
                          cut=peer.cut if peer is not None else None)
        body = open_stream(conn, broker=self.broker, registry=self.registry, stats=self.stats,
                           retry_ms=self.settings.retry_ms, last_event_id=last_event_id, peer=peer,
                           refuse=self._refuse,
                           lifecycle=self.lifecycle.of(Stream(client_id, groups, presence=presence)))
        return Subscription(200, body)

    def _no_room(self, client_id: str) -> str:
        """Why this worker cannot take a stream of ``client_id`` now (a soft refusal's reason), or ``""``."""
        if self.draining:
            return "restarting"
        if len(self.registry) >= self.max_streams:
            return "full"
        # Per worker, like the cap above: one client id (a leaked tab loop, a script) cannot take a worker.
        if self.registry.count(Target.clients((client_id,))) >= self.settings.max_streams_per_client:
            return "client limit"
        if not self.broker.health().get("ok"):
            return "broker unavailable"
        return ""

    def _busy(self, reason: str, last_event_id: str | None) -> Subscription:
        return Subscription(200, iter([self._refuse(reason, last_event_id)]), reason=reason)

    def _refuse(self, reason: str, last_event_id: str | None) -> bytes:
        """Count a soft refusal and give its bytes: ``retry:`` with jitter and ``event: busy``, so the
        browser comes back later, all of them at different times.

        The event repeats the client's own Last-Event-ID, so its resume point survives the refusal.
        """
        self.stats.refused[reason] += 1
        delay = self.jittered_retry_ms()
        echo = last_event_id if last_event_id and is_event_id(last_event_id) else ""
        return wire.retry(delay) + wire.encode(echo, {"reason": reason, "retry": delay}, event="busy")

    def jittered_retry_ms(self) -> int:
        """A reconnection delay of ``busy_retry_ms``, give or take half, different for every caller."""
        return int(self.settings.busy_retry_ms * random.uniform(0.5, 1.5))


def _release(store: IdempotencyStore, key: str, token: str) -> None:
    try:
        store.release(key, token)
    except BrokerUnavailable as error:  # the claim then expires by itself, IN_FLIGHT_SECONDS at most
        log.warning("could not free an Idempotency-Key after a failed publish: %s", error)
