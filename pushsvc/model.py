"""The nouns every layer shares: who an event is for, an event on its way, and what a replay returns.

Standard library only. A :class:`Message` is what a publisher hands a broker (a target and the encoded
fields after ``id:``); a :class:`Frame` is what a broker hands the registry (the bytes of one event, made
once and shared by every connection it reaches). Event ids are the broker's, opaque to everyone else,
except for the close mark below.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["to", "group", "prefix", "all"]
KINDS: tuple[Kind, ...] = ("to", "group", "prefix", "all")

# The id of a close event carries this mark, so the browser's automatic reconnect after a close (whose
# Last-Event-ID is that id) can be answered 204 on any worker without looking anything up.
CLOSE_MARK = ".close"

# Why a resume could not be served (the data of ``event: reset``), also the label of its metric.
RESET_UNKNOWN = "unknown-id"
RESET_EXPIRED = "expired"
RESET_REASONS = (RESET_UNKNOWN, RESET_EXPIRED)


def is_close_id(event_id: str) -> bool:
    return event_id.endswith(CLOSE_MARK)


def strip_close_mark(event_id: str) -> str:
    return event_id.removesuffix(CLOSE_MARK)


@dataclass(frozen=True, slots=True)
class Target:
    """``to`` a set of client ids, a ``group``, a client id ``prefix``, or ``all`` connections."""

    kind: Kind
    values: tuple[str, ...] = ()

    @classmethod
    def clients(cls, ids: Iterable[str]) -> Target:
        return cls("to", tuple(dict.fromkeys(ids)))

    @classmethod
    def group(cls, name: str) -> Target:
        return cls("group", (name,))

    @classmethod
    def prefix(cls, prefix: str) -> Target:
        return cls("prefix", (prefix,))

    @classmethod
    def everyone(cls) -> Target:
        return cls("all")

    def matches(self, client_id: str, groups: Iterable[str]) -> bool:
        """Would a connection of ``client_id`` in ``groups`` receive an event for this target?"""
        if self.kind == "all":
            return True
        if self.kind == "to":
            return client_id in self.values
        if self.kind == "prefix":
            return client_id.startswith(self.values[0])
        return self.values[0] in groups


@dataclass(frozen=True, slots=True)
class Message:
    """One event to publish: who it is for, and its encoded fields after ``id:`` (see :mod:`wire`).

    ``close`` makes it the last event of every stream it reaches. Build one with :mod:`pushsvc.messages`.
    """

    target: Target
    body: bytes
    close: bool = False


class Frame:
    """Encoded bytes for the wire, with the broker's ordering ``key`` (``None`` for comments).

    One frame is made per event and shared by every connection it goes to. ``end`` asks the stream to
    stop after writing it.
    """

    __slots__ = ("data", "end", "event_id", "key")

    def __init__(self, data: bytes, key: Any = None, *, event_id: str | None = None, end: bool = False):
        self.data = data
        self.key = key
        self.event_id = event_id
        self.end = end

    def __repr__(self) -> str:
        return f"Frame(id={self.event_id!r}, end={self.end}, {len(self.data)} bytes)"


@dataclass(frozen=True, slots=True)
class Published:
    """A published event's id, and how many open streams its target addressed when it was published,
    across the whole service (what ``POST /sse/publish`` answers as ``online``)."""

    id: str
    online: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "online": self.online}


@dataclass(slots=True)
class Replay:
    """What a resuming connection gets before the live stream.

    ``reset`` is a reason when the gap cannot be filled (the frames are then empty); ``head_id`` is the id
    of the newest event, which the reset event carries so the next reconnect starts from now.
    """

    frames: list[Frame] = field(default_factory=list)
    reset: str | None = None
    head_id: str = ""


@dataclass(slots=True)
class ClientInfo:
    """One client id's open streams and the groups they joined, for ``/sse/clients``."""

    id: str
    connections: int = 0
    groups: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "connections": self.connections, "groups": sorted(self.groups)}
