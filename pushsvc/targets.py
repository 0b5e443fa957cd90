"""Who an event is for: one rule shared by live fan-out, replay and presence counts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["to", "group", "prefix", "all"]
KINDS: tuple[Kind, ...] = ("to", "group", "prefix", "all")


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

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "values": list(self.values)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Target:
        kind = obj["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown target kind {kind!r}")
        return cls(kind, tuple(obj.get("values", ())))
