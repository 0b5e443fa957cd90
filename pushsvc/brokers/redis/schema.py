"""What the Redis broker keeps in Redis: key names, the fields of a stream entry, event ids, presence.

One stream is both the bus between workers and the replay history. Every entry carries the *generation*
of the stream: a token (Redis time in milliseconds) created with the stream and kept in a key beside it.
When Redis comes back empty, or another server takes over the stream (a failover, a restart from a
snapshot), the next user creates a new, larger generation, so an event id from before
(``<generation>-<stream id>``) never collides with a new event's id; each entry keeps the generation it
was stored in, so its id stays the same.

Every key shares one hash tag (``{pushsvc}``), so a Lua script (:mod:`.scripts`) may touch them all, on a
cluster too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ... import wire
from ...model import CLOSE_MARK, ClientInfo, Frame, Target, strip_close_mark

DEFAULT_NAMESPACE = "pushsvc"
# Names are validated to hold no whitespace and no '/', so these separators cannot occur inside them.
VALUE_SEP = "\n"
GROUP_SEP = " "
# The presence field holding a worker's total connection count: '/' is never part of a group name.
TOTAL_FIELD = "/"


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one pushsvc deployment (``namespace`` separates several on one Redis)."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def base(self) -> str:
        return "{" + self.namespace + "}"

    @property
    def stream(self) -> str:
        return f"{self.base}:events"

    @property
    def generation(self) -> str:
        return f"{self.base}:generation"

    @property
    def epoch(self) -> str:
        """The replication id of the server that made the generation (see :mod:`.scripts`)."""
        return f"{self.base}:epoch"

    @property
    def since(self) -> str:
        """The generation a shard's server started with (a Redis Cluster's shards, :mod:`.shard_scripts`)."""
        return f"{self.base}:since"

    @property
    def fan_lock(self) -> str:
        """The lock one fan-out to every shard holds at a time (:mod:`.fanout`)."""
        return f"{self.base}:fan:lock"

    @property
    def fan_last(self) -> str:
        """The newest id (ms) handed out to a fan-out."""
        return f"{self.base}:fan:last"

    @property
    def workers(self) -> str:
        return f"{self.base}:workers"

    @property
    def worker_prefix(self) -> str:
        return f"{self.base}:w:"

    def worker_clients(self, worker: str) -> str:
        """Hash: client id -> ``"<connections> <group> <group>…"`` for one worker."""
        return f"{self.worker_prefix}{worker}:c"

    def worker_groups(self, worker: str) -> str:
        """Hash: group -> connections, plus :data:`TOTAL_FIELD`, for one worker. Its presence is the
        worker's liveness."""
        return f"{self.worker_prefix}{worker}:g"

    # Presence transitions (see docs/PRESENCE.md and :mod:`.transitions`).

    @property
    def presence_counts(self) -> str:
        """Hash: unit (client id, or ``"<client> <group>"``) -> open streams, whole service."""
        return f"{self.base}:presence:counts"

    @property
    def presence_pending(self) -> str:
        """Sorted set: units whose last stream ended, scored by when their ``offline`` is due (ms)."""
        return f"{self.base}:presence:pending"

    @property
    def presence_workers(self) -> str:
        """Set: the workers whose streams are counted in :attr:`presence_counts`."""
        return f"{self.base}:presence:workers"

    @property
    def transitions(self) -> str:
        """Stream: every transition (``type``, ``unit``, ``time``); read by consumer groups and workers."""
        return f"{self.base}:presence:transitions"

    @property
    def presence_worker_prefix(self) -> str:
        return f"{self.base}:presence:w:"

    def presence_units(self, worker: str) -> str:
        """Hash: unit -> open streams in one worker (its share of :attr:`presence_counts`)."""
        return f"{self.presence_worker_prefix}{worker}:units"

    def presence_alive(self, worker: str) -> str:
        """String with a TTL: the worker is alive. Once it expires, a sweep takes the worker's share back."""
        return f"{self.presence_worker_prefix}{worker}:alive"

    def canary(self, worker: str) -> str:
        return f"{self.base}:canary:{worker}"

    def ticket(self, ticket: str) -> str:
        return f"{self.base}:ticket:{ticket}"

    def idempotency(self, key: str) -> str:
        """A publisher's Idempotency-Key (printable ASCII; see :mod:`.idempotency`)."""
        return f"{self.base}:idem:{key}"


# -- stream entries ----------------------------------------------------------------------------------


def encode_target(target: Target) -> str:
    return target.kind + VALUE_SEP + VALUE_SEP.join(target.values)


def decode_target(raw: bytes) -> Target:
    kind, *values = raw.decode("utf-8").split(VALUE_SEP)
    if kind == "all":
        return Target("all")
    return Target(kind, tuple(values))  # type: ignore[arg-type]


def entry_fields(fields: Any) -> dict[bytes, bytes]:
    """Stream entry fields: a dict from XRANGE/XREAD, a flat list from inside a Lua script."""
    if isinstance(fields, dict):
        return fields
    return {fields[i]: fields[i + 1] for i in range(0, len(fields), 2)}


def frames_for(entries: list[Any], client_id: str, groups: Sequence[str]) -> list[Frame]:
    """The frames of the entries (from XRANGE or a script) that a connection of ``client_id`` gets."""
    frames = []
    for raw_id, raw_fields in entries:
        fields = entry_fields(raw_fields)
        if decode_target(fields[b"t"]).matches(client_id, groups):
            frames.append(entry_frame(raw_id, fields))
    return frames


def entry_frame(raw_id: bytes, fields: dict[bytes, bytes]) -> Frame:
    """The frame of one stream entry, as every worker writes it: its id, ordering key and close flag."""
    stream_id, generation, close = raw_id.decode(), fields[b"g"].decode(), b"c" in fields
    eid = event_id(generation, stream_id, close=close)
    return Frame(wire.frame(eid, fields[b"b"]), event_key(generation, stream_id), event_id=eid, end=close)


# -- event ids ---------------------------------------------------------------------------------------


def event_id(generation: str, stream_id: str, *, close: bool = False) -> str:
    return f"{generation}-{stream_id}" + (CLOSE_MARK if close else "")


def event_key(generation: str, stream_id: str) -> tuple[int, int, int]:
    """The ordering key of an event: generations grow, and stream ids grow within one."""
    ms, _, seq = stream_id.partition("-")
    return int(generation), int(ms), int(seq)


def parse_event_id(value: str) -> tuple[str, str] | None:
    """``(generation, stream id)`` of an id this broker could have issued, or ``None``."""
    parts = strip_close_mark(value).split("-")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 20 for p in parts):
        return None
    return parts[0], f"{int(parts[1])}-{int(parts[2])}"


def stream_id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


# -- presence ----------------------------------------------------------------------------------------


def encode_presence(info: ClientInfo) -> str:
    return GROUP_SEP.join([str(info.connections), *sorted(info.groups)])


def merge_presence(into: dict[str, ClientInfo], client_id: str, raw: Any) -> None:
    """Add one worker's presence entry for ``client_id`` to ``into``."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    count, *groups = text.split(GROUP_SEP)
    info = into.get(client_id)
    if info is None:
        info = into[client_id] = ClientInfo(client_id)
    info.connections += int(count)
    info.groups.update(groups)
