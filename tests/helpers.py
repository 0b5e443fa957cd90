"""Tools the test modules share (fixtures live in ``conftest.py``): polling, the marker that proves nothing
else arrived, a clock that moves only when told."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from .servers import Gunicorn
from .sse import Listener, RawStream

# The brokers every behaviour test runs over: in process, and a real Redis under two workers.
BROKERS = ["memory", "redis"]

_markers = itertools.count()


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def connections(server: Gunicorn, headers: dict[str, str] | None = None) -> int:
    """Open streams of the whole service, as ``GET /sse/clients`` counts them."""
    return httpx.get(server.url("/sse/clients"), headers=headers, timeout=5).json()["connections"]


def publisher(post: Callable[..., httpx.Response], *, headers: dict[str, str] | None = None,
              **target: Any) -> Callable[[str], str]:
    """``publish(data) -> id`` for :func:`assert_next_is_marker`: ``post("/sse/publish", json=...)`` to
    ``target`` (``to=``, ``group=``, ``prefix=`` or ``broadcast=True``), which must answer 202."""
    def publish(data: str) -> str:
        reply = post("/sse/publish", json={**target, "data": data}, headers=headers)
        assert reply.status_code == 202, reply.text
        return reply.json()["id"]
    return publish


def assert_next_is_marker(streams: RawStream | Listener | Sequence[RawStream | Listener],
                          publish: Callable[[str], str]) -> str:
    """Prove that nothing reached ``streams`` since what was last read from them; return the marker's id.

    ``publish(data)`` sends one event with that data to every one of the streams and returns its id.
    Events reach a stream in publish order, so anything that wrongly went to a stream before the marker
    shows up ahead of it; waiting a while and seeing nothing would prove nothing (it may be on its way).
    """
    streams = [streams] if isinstance(streams, RawStream | Listener) else list(streams)
    marker = f"marker-{next(_markers)}"
    seen = [len(s.events()) if isinstance(s, RawStream) else 0 for s in streams]
    event_id = publish(marker)
    for stream, before in zip(streams, seen, strict=True):
        if isinstance(stream, RawStream):
            assert stream.read_until(f"data: {marker}\n\n".encode()), f"no marker: {stream.body[-300:]!r}"
            got = [(e.event, e.data, e.id) for e in stream.events()[before:]]
        else:
            event = stream.get()
            got = [(event.event, event.data, event.id)]
        assert got == [("message", marker, event_id)], "something arrived before the marker"
    return event_id


class FakeClock:
    """A monotonic clock that moves only when told: ``clock()`` reads it, ``clock.advance(s)`` moves it."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
