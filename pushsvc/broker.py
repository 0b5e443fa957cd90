"""The broker interface: how events travel from a publisher to every worker, and what resume can replay.

A broker knows nothing of HTTP. It stores each published event (its history is the replay window), hands
it to the local :class:`~pushsvc.registry.Registry` of every worker, and answers presence questions for
the whole service. Subclasses fill in ``publish``, ``replay`` and, when presence spans processes, the
presence methods. Choose one with :func:`pushsvc.brokers.create_broker`.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .registry import ClientInfo, Frame, Registry
from .targets import Target

log = logging.getLogger(__name__)

# The id of a close event carries this mark, so the browser's automatic reconnect after a close (whose
# Last-Event-ID is that id) can be answered 204 on any worker without looking anything up.
CLOSE_MARK = ".close"

RESET_UNKNOWN = "unknown-id"
RESET_EXPIRED = "expired"


class BrokerUnavailable(RuntimeError):
    """The broker cannot take or give events right now. Nothing was published."""


@dataclass(frozen=True, slots=True)
class Message:
    """One event to publish: who it is for, and its encoded fields after ``id:`` (see :mod:`wire`)."""

    target: Target
    body: bytes
    close: bool = False


@dataclass(slots=True)
class Replay:
    """What a resuming connection gets before the live stream.

    ``reset`` is a reason when the gap cannot be filled (the frames are then empty); ``head_id`` is the id
    of the newest event, which the reset event carries so the next reconnect starts from now.
    """

    frames: list[Frame] = field(default_factory=list)
    reset: str | None = None
    head_id: str = ""


def is_close_id(event_id: str) -> bool:
    return event_id.endswith(CLOSE_MARK)


def strip_close_mark(event_id: str) -> str:
    return event_id.removesuffix(CLOSE_MARK)


class Broker(ABC):
    """Base class: a worker-local registry plus the bus and history that subclasses provide."""

    #: Shown in ``/healthz``.
    name = "broker"
    #: Whether several processes can share this broker (the memory broker cannot).
    shared = False

    def __init__(self) -> None:
        self.registry: Registry | None = None
        self._tickets: dict[str, tuple[str, float]] = {}

    def start(self, registry: Registry) -> None:
        """Begin delivering published events to ``registry``. Called once per worker, lazily."""
        self.registry = registry

    def stop(self) -> None:  # noqa: B027 - most brokers hold nothing to release
        """Stop delivering and release connections."""

    @abstractmethod
    def publish(self, messages: Sequence[Message]) -> list[str]:
        """Store and send ``messages`` in order, all or none; return their ids.

        Raises :class:`BrokerUnavailable` when they cannot be stored.
        """

    def publish_counted(self, messages: Sequence[Message]) -> list[tuple[str, int]]:
        """Publish like :meth:`publish`; return each id with the open connections its target addresses.

        A shared broker overrides this to count and store in one round trip.
        """
        online = [self.online(message.target) for message in messages]
        return list(zip(self.publish(messages), online, strict=True))

    @abstractmethod
    def replay(self, last_id: str, client_id: str, groups: Sequence[str]) -> Replay:
        """The retained events after ``last_id`` that a connection of ``client_id`` in ``groups`` gets."""

    def health(self) -> dict[str, Any]:
        """``{"ok": bool, ...}``: can this worker publish and receive right now?"""
        return {"ok": True}

    # Presence. The defaults answer from this worker's registry, which is the whole service when the
    # broker is not shared.

    def clients(self) -> dict[str, ClientInfo]:
        return self._local().clients()

    def client(self, client_id: str) -> ClientInfo | None:
        return self._local().client(client_id)

    def online(self, target: Target) -> int:
        return self._local().count(target)

    def _local(self) -> Registry:
        if self.registry is None:
            return Registry()
        return self.registry

    # One-time tickets (see auth): stored with a TTL, taken at most once across the whole service. The
    # defaults keep them in this process, which is the whole service when the broker is not shared.

    def put_ticket(self, ticket: str, value: str, ttl_seconds: float) -> None:
        now = time.monotonic()
        self._tickets = {k: v for k, v in self._tickets.items() if v[1] > now}
        self._tickets[ticket] = (value, now + ttl_seconds)

    def take_ticket(self, ticket: str) -> str | None:
        """The value stored under ``ticket``, once; ``None`` if unknown, expired or already taken."""
        entry = self._tickets.pop(ticket, None)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]
