"""The ``text/event-stream`` format, to the letter of the HTML Living Standard.

An event is encoded once, when it is published; everything downstream carries bytes. The id line is
kept apart from the rest (``frame``) because a broker may learn the id only after it stored the event.

Deliberate choices:

* Data is split on ``\\r\\n``, ``\\r`` and ``\\n`` only (``str.splitlines`` would also split on U+2028 and
  friends, which a browser keeps inside a line).
* An empty string is sent as one empty ``data:`` line, so the browser still dispatches the event.
* CR, LF and NUL in an event name or id are refused, never stripped: a caller that sends them has a bug.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")

HEARTBEAT = b": keep-alive\n\n"


class WireError(ValueError):
    """A value that cannot be written to an event stream as it is."""


def data_text(data: Any) -> str:
    """Return ``data`` as the text of an event: strings as they are, anything else as compact JSON."""
    if isinstance(data, str):
        return data
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def check_field(name: str, value: str) -> str:
    """Return ``value`` if it can stand on one ``name:`` line, else raise :class:`WireError`."""
    if _FORBIDDEN_IN_FIELD.search(value):
        raise WireError(f"{name} must not contain CR, LF or NUL")
    return value


@dataclass(frozen=True, slots=True)
class Event:
    """One event, before it has an id. ``data`` is any JSON value or a string."""

    data: Any
    event: str | None = None
    retry: int | None = None

    def encode(self) -> bytes:
        """Return the event's fields after ``id:``, ending with the blank line that dispatches it."""
        return encode_body(data_text(self.data), event=self.event, retry=self.retry)


def encode_body(text: str, *, event: str | None = None, retry: int | None = None) -> bytes:
    """Encode the ``event``, ``retry`` and ``data`` lines of one event and the closing blank line."""
    parts: list[str] = []
    if event is not None:
        parts.append(f"event: {check_field('event', event)}\n")
    if retry is not None:
        parts.append(f"retry: {int(retry)}\n")
    for line in _LINE_BREAK.split(text):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def frame(event_id: str, body: bytes) -> bytes:
    """Put the ``id:`` line in front of an encoded body."""
    return b"id: " + check_field("id", event_id).encode("utf-8") + b"\n" + body


def encode(event_id: str, data: Any, *, event: str | None = None, retry: int | None = None) -> bytes:
    """Encode a whole event, id included."""
    return frame(event_id, encode_body(data_text(data), event=event, retry=retry))


def comment(text: str = "") -> bytes:
    """A comment line (ignored by clients; keeps proxies and dead-peer detection busy)."""
    lines = _LINE_BREAK.split(text)
    return "".join(f": {line}\n" if line else ":\n" for line in lines).encode("utf-8") + b"\n"


def retry(milliseconds: int) -> bytes:
    """A lone ``retry:`` field: sets the client's reconnection delay without dispatching an event."""
    return f"retry: {int(milliseconds)}\n\n".encode("ascii")
