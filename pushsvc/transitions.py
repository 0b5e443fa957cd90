"""Presence transitions: a client id (or a client id within a group) came online or went offline.

Standard library only. Brokers decide the transitions (debounced by the grace period, for the whole
service) and hand them to *consumers*: the application's ``on_online``/``on_offline`` hooks and the
webhook each get every transition once for the whole service (:class:`Consumer`), and every worker gets
the group transitions for its ``?presence=1`` streams (best effort, in-band).

A *unit* is what is counted: the client id alone (``on_online``/``on_offline``, webhooks), or a client id
in one group (``event: presence``). Names never hold whitespace, so a space separates the two.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

State = Literal["online", "offline"]
ONLINE: State = "online"
OFFLINE: State = "offline"
UNIT_SEP = " "
# Transitions one consumer call gets at most (a webhook POST carries as many).
BATCH = 100


@dataclass(frozen=True, slots=True)
class Transition:
    """One debounced change: ``client`` came ``online`` or went ``offline`` (in ``group``, when set).

    ``id`` is unique for the whole service; ``time`` is when it was decided, in Unix milliseconds.
    """

    id: str
    type: State
    client: str
    time: int
    group: str | None = None

    def to_json(self) -> dict[str, object]:
        """The webhook's form: ``{"id", "type", "client", "time"}``."""
        return {"id": self.id, "type": self.type, "client": self.client, "time": self.time}


@dataclass(frozen=True, slots=True)
class Consumer:
    """Someone who must see every client transition once for the whole service.

    ``handle(transitions)`` returns when they are dealt with (then they count as delivered) and may
    block; it runs in a greenlet of its own, at most ``concurrency`` at once in one process. ``name``
    names its Redis consumer group.
    """

    name: str
    handle: Callable[[Sequence[Transition]], None]
    concurrency: int = 1


def _uncounted(state: State, scope: str, count: int) -> None:
    """The default of :attr:`Tracking.decided`: count nothing."""


@dataclass(frozen=True, slots=True)
class Tracking:
    """What a broker's presence tracking feeds: ``consumers`` (client transitions, once each), and
    ``local`` (this worker's group transitions, for its ``?presence=1`` streams). ``decided(state,
    scope, count)`` counts the transitions this process decided (scope ``client`` or ``group``)."""

    grace_seconds: float
    consumers: tuple[Consumer, ...] = ()
    local: Callable[[Sequence[Transition]], None] | None = None
    decided: Callable[[State, str, int], None] = _uncounted
    #: How long a broker that keeps transitions keeps them, at least (a consumer's retries outlast it).
    keep_seconds: float = 660.0


class Member(Protocol):
    client_id: str
    groups: tuple[str, ...]


def unit(client_id: str, group: str | None = None) -> str:
    return client_id if group is None else client_id + UNIT_SEP + group


def split_unit(value: str) -> tuple[str, str | None]:
    client_id, sep, group = value.partition(UNIT_SEP)
    return client_id, (group if sep else None)


def units_of(conn: Member) -> list[str]:
    """The units one stream counts towards: its client id, and its client id in each of its groups."""
    return [conn.client_id, *(conn.client_id + UNIT_SEP + g for g in conn.groups)]


class UnitCounts:
    """Streams per unit in this worker, and the units changed since they were last taken."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.dirty: set[str] = set()
        # Units that went from none to some since they were last taken: one that is back to none by
        # then still came online (and goes offline after the grace), as with the memory broker.
        self.arrived: set[str] = set()

    def change(self, conn: Member, delta: int) -> None:
        for name in units_of(conn):
            before = self.counts[name]
            count = before + delta
            if count > 0:
                self.counts[name] = count
                if before <= 0:
                    self.arrived.add(name)
            else:
                del self.counts[name]
            self.dirty.add(name)

    def take(self) -> list[tuple[str, int]]:
        """The changed units and their counts now, in order (0: none left here); a unit that came and
        went since the last take is given as 1, then 0."""
        dirty, arrived = self.dirty, self.arrived
        self.dirty, self.arrived = set(), set()
        changes = []
        for name in dirty:
            count = self.counts.get(name, 0)
            if count == 0 and name in arrived:
                changes.append((name, 1))
            changes.append((name, count))
        return changes

    def everything(self) -> list[tuple[str, int]]:
        self.dirty.clear()
        self.arrived.clear()
        return list(self.counts.items())


def client_transitions(transitions: Iterable[Transition]) -> list[Transition]:
    return [t for t in transitions if t.group is None]


def group_transitions(transitions: Iterable[Transition]) -> list[Transition]:
    return [t for t in transitions if t.group is not None]
