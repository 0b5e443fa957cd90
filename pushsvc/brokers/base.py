"""The broker interface: how events travel from a publisher to every worker, and what resume can replay.

A broker knows nothing of HTTP. It stores each published event (its history is the replay window), hands
it to the local :class:`~pushsvc.registry.Registry` of every worker that serves streams, and answers
presence questions for the whole service. What it must do is the abstract methods below; both brokers
implement every one of them, and nothing else is shared. Choose one with
:func:`pushsvc.brokers.create_broker`.

The life of a stream, as the broker sees it (see :meth:`pushsvc.service.Service.subscribe`):

1. :meth:`Broker.on_subscribe` (before the connection is in the registry),
2. the registry lists the connection; published events reach its queue from then on,
3. :meth:`Broker.replay` when it resumes,
4. the registry forgets it when the stream ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ..idempotency import IdempotencyStore
from ..model import ClientInfo, Message, Published, Replay
from ..registry import Connection, Registry
from ..tickets import TicketStore
from ..transitions import Tracking


class BrokerUnavailable(RuntimeError):
    """The broker cannot take or give events right now. Nothing was published."""

    #: What the publisher is told (the message itself, for the log, may name servers).
    answer = "the broker cannot take events right now; nothing was published"


class NotReplicated(BrokerUnavailable):
    """The events were stored, but fewer replicas than required confirmed them in time: they may be
    delivered all the same, or lost if the server fails before its replicas catch up."""

    answer = ("the broker stored the events but too few replicas confirmed them in time; they may be "
              "delivered anyway, and a retry may deliver them twice")


class Broker(ABC):
    """A bus and history for events, and the whole service's view of who is connected."""

    #: Shown in ``/healthz``.
    name = "broker"
    #: Whether several processes can share this broker (the memory broker cannot).
    shared = False
    #: Where one-time subscribe tickets live: as far as this broker reaches.
    tickets: TicketStore
    #: Where Idempotency-Keys of publishes live: as far as this broker reaches.
    idempotency: IdempotencyStore

    @abstractmethod
    def start(self, registry: Registry) -> None:
        """Deliver published events to ``registry`` from now on. Idempotent; again after :meth:`stop`,
        or in a forked child, it starts afresh."""

    @abstractmethod
    def stop(self) -> None:
        """Stop delivering and release connections. Idempotent."""

    @abstractmethod
    def track_presence(self, tracking: Tracking) -> None:
        """Report debounced presence transitions of the whole service to ``tracking`` (call before
        :meth:`start`). Client transitions reach each of its consumers once for the whole service (at
        least once under faults); group transitions reach ``tracking.local`` in every worker that serves.
        """

    def on_subscribe(self, conn: Connection) -> Any:
        """A stream is about to be registered: get ready to feed it. Returns the ordering key of the
        newest event it must not get live (one already on its way when it registered), or ``None``.

        The memory broker fans out synchronously, so it has nothing to do.
        """
        return None

    def on_registered(self, conn: Connection) -> None:
        """The stream is in the registry, its first byte not yet sent: return once every worker's
        ``online`` counts it (a publish right after the browser saw the stream open must count it).

        The memory broker counts its registry, so it has nothing to wait for.
        """
        return None

    @abstractmethod
    def publish(self, messages: Sequence[Message]) -> list[Published]:
        """Store and send ``messages`` in order, all or none.

        Each :class:`Published` has the event's id and how many open streams of the whole service its
        target addressed. Raises :class:`BrokerUnavailable` when they cannot be stored.
        """

    @abstractmethod
    def replay(self, last_id: str, client_id: str, groups: Sequence[str]) -> Replay:
        """The retained events after ``last_id`` that a connection of ``client_id`` in ``groups`` gets."""

    @abstractmethod
    def health(self) -> dict[str, Any]:
        """``{"ok": bool, ...}``: can this worker publish and receive right now? No I/O: cached state,
        asked on every subscribe."""

    def probe(self) -> dict[str, Any]:
        """Like :meth:`health`, for ``/healthz``: may ask the broker itself, within a second."""
        return self.health()

    @abstractmethod
    def clients(self) -> dict[str, ClientInfo]:
        """Every client id with an open stream anywhere in the service."""

    @abstractmethod
    def client(self, client_id: str) -> ClientInfo | None:
        """One client id's streams across the service, or ``None`` when it has none."""
