"""The embedded broker: one worker process, events and history in memory.

Event ids are ``<epoch>-<seq>``: ``epoch`` is the broker's start time in milliseconds, so ids keep
increasing across a restart, and an id from before the restart is recognised as unknown (its client gets
``reset``), never mistaken for an id of this run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import gevent
from gevent import monkey

from .. import wire
from ..idempotency import MemoryIdempotency
from ..model import (
    CLOSE_MARK,
    RESET_EXPIRED,
    RESET_UNKNOWN,
    ClientInfo,
    Frame,
    Message,
    Published,
    Replay,
    strip_close_mark,
)
from ..registry import Registry
from ..tickets import MemoryTickets
from ..transitions import Tracking
from .base import Broker
from .history import History
from .local_presence import LocalTracker

log = logging.getLogger(__name__)

T = TypeVar("T")

# The real thread identity, even when threading is monkey-patched (then every greenlet shares it).
_real_get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
_RealEvent = monkey.get_original("threading", "Event")


class MemoryBroker(Broker):
    name = "memory"
    shared = False

    def __init__(self, *, history_size: int, history_ttl_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.epoch = int(time.time() * 1000)
        self.history = History(size=history_size, ttl_seconds=history_ttl_seconds, clock=clock)
        self.tickets = MemoryTickets(clock=clock)
        self.idempotency = MemoryIdempotency(clock=clock)
        # Until start(), events go to an empty registry: stored for replay, delivered to nobody.
        self.registry = Registry()
        self._hub = None
        self._hub_thread: int | None = None
        self._tracker: LocalTracker | None = None

    def track_presence(self, tracking: Tracking) -> None:
        self._tracker = LocalTracker(tracking)

    def start(self, registry: Registry) -> None:
        self.registry = registry
        self._hub = gevent.get_hub()
        self._hub_thread = _real_get_ident()
        if self._tracker is not None:
            self._tracker.attach(registry)

    def stop(self) -> None:
        self._hub = None
        self._hub_thread = None
        if self._tracker is not None:
            self._tracker.detach()

    def publish(self, messages: Sequence[Message]) -> list[Published]:
        # One trip to the hub: the connections an event was queued on are its audience.
        return self._on_hub(lambda: self._publish(messages))

    def _publish(self, messages: Sequence[Message]) -> list[Published]:
        # Runs on the hub's thread without a switch, so ids, history and fan-out keep one order.
        published = []
        registry = self.registry
        for message in messages:
            seq = self.history.last_seq + 1
            event_id = f"{self.epoch}-{seq}" + (CLOSE_MARK if message.close else "")
            frame = Frame(wire.frame(event_id, message.body), seq, event_id=event_id, end=message.close)
            self.history.append(seq, message.target, frame)
            published.append(Published(event_id, registry.dispatch(message.target, frame)))
        return published

    def replay(self, last_id: str, client_id: str, groups: Sequence[str]) -> Replay:
        return self._on_hub(lambda: self._replay(last_id, client_id, groups))

    def _replay(self, last_id: str, client_id: str, groups: Sequence[str]) -> Replay:
        head = f"{self.epoch}-{self.history.last_seq}"
        seq = self._parse(last_id)
        if seq is None:
            return Replay(reset=RESET_UNKNOWN, head_id=head)
        if not self.history.covers(seq):
            return Replay(reset=RESET_EXPIRED, head_id=head)
        return Replay(self.history.after(seq, client_id, groups), head_id=head)

    def _parse(self, last_id: str) -> int | None:
        epoch, _, seq = strip_close_mark(last_id).partition("-")
        if epoch != str(self.epoch) or not seq.isdigit() or not seq.isascii():
            return None
        number = int(seq)
        return number if number <= self.history.last_seq else None

    # Presence reads the registry, which only the hub's thread may walk.

    def clients(self) -> dict[str, ClientInfo]:
        return self._on_hub(self.registry.clients)

    def client(self, client_id: str) -> ClientInfo | None:
        return self._on_hub(lambda: self.registry.client(client_id))

    def health(self) -> dict[str, Any]:
        return {"ok": True, "history": len(self.history)}

    def _on_hub(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the thread that owns the connections' queues, and wait for it.

        Under the gevent worker every "thread" is a greenlet of that thread and this is a plain call; an
        application thread that was not patched (a thread pool, a scheduler) is handed over safely.
        """
        if self._hub is None or _real_get_ident() == self._hub_thread:
            return fn()
        done = _RealEvent()
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append((True, fn()))
            except BaseException as error:  # handed back to the calling thread
                outcome.append((False, error))
            finally:
                done.set()

        self._hub.loop.run_callback_threadsafe(run)
        if not done.wait(10):
            raise TimeoutError("the worker's event loop did not answer within 10 s")
        ok, value = outcome[0]
        if not ok:
            raise value
        return value
