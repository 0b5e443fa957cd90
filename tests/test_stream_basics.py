"""Subscribe and publish over real HTTP against gunicorn: headers, first chunk, wire bytes, isolation."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from .helpers import BROKERS, assert_next_is_marker, publisher, wait_for
from .servers import Gunicorn, service

# Longer than anything here takes: a first chunk that waited for the first heartbeat would come a minute late.
HEARTBEAT_SECONDS = 60


@pytest.fixture(scope="module", params=BROKERS)
def server(request) -> Iterator[Gunicorn]:
    """The service under test, as in conftest, but with a heartbeat that cannot flush anything in time."""
    with service(request.param, {"PUSHSVC_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS)}) as gunicorn:
        yield gunicorn


def test_subscribe_headers_and_first_chunk_arrive_at_once(streams):
    started = time.monotonic()
    s = streams.raw("/sse/subscribe/basics-head")
    assert s.status == 200
    assert s.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert s.headers["cache-control"] == "no-cache"
    assert s.headers["x-accel-buffering"] == "no"
    assert "content-length" not in s.headers
    assert s.read_until(b"retry: 3000\n")
    # "At once" is anything well before the first heartbeat, the next write that would push a held
    # response out: generous for a loaded machine, still a sixth of the heartbeat period.
    assert time.monotonic() - started < HEARTBEAT_SECONDS / 6


def test_a_hang_up_is_noticed_at_once_not_at_the_next_heartbeat(streams, client):
    s = streams.raw("/sse/subscribe/basics-gone")
    assert s.read_until(b"retry:")
    assert wait_for(lambda: client.get("/sse/clients/basics-gone").status_code == 200)
    s.close()
    started = time.monotonic()
    assert wait_for(lambda: client.get("/sse/clients/basics-gone").status_code == 404, HEARTBEAT_SECONDS)
    # Seen only on the next write, the hang-up would wait for the heartbeat: a sixth of it is "at once"
    # with room for a loaded machine.
    assert time.monotonic() - started < HEARTBEAT_SECONDS / 6


def test_event_bytes_on_the_wire(streams, client):
    s = streams.raw("/sse/subscribe/basics-wire")
    s.read_until(b"retry:")
    reply = client.post("/sse/publish", json={"to": "basics-wire", "data": "a\r\nb\rc\nd", "event": "greet"})
    assert reply.status_code == 202
    event_id = reply.json()["id"]
    assert reply.json()["online"] == 1
    expected = f"id: {event_id}\nevent: greet\ndata: a\ndata: b\ndata: c\ndata: d\n\n".encode()
    assert s.read_until(expected)


def test_json_and_unicode_data(streams, client):
    listener = streams.listen("/sse/subscribe/basics-json")
    client.post("/sse/publish", json={"to": "basics-json", "data": {"order": 1001, "名前": "ü\u2028x"}})
    event = listener.get()
    assert event.event == "message"
    assert event.data == '{"order":1001,"名前":"ü\u2028x"}'
    assert json.loads(event.data)["名前"] == "ü\u2028x"


def test_clients_are_isolated(streams, client):
    a = streams.raw("/sse/subscribe/basics-iso-a")
    b = streams.raw("/sse/subscribe/basics-iso-b")
    client.post("/sse/publish", json={"to": "basics-iso-a", "data": "for-a"})
    assert a.read_until(b"data: for-a\n")
    assert_next_is_marker(b, publisher(client.post, to="basics-iso-b"))


def test_clients_listing(streams, client):
    streams.raw("/sse/subscribe/basics-list?group=g1&group=g2")
    streams.raw("/sse/subscribe/basics-list")
    assert wait_for(lambda: client.get("/sse/clients/basics-list").status_code == 200)
    entry = client.get("/sse/clients/basics-list").json()
    assert entry == {"id": "basics-list", "connections": 2, "groups": ["g1", "g2"]}
    listing = client.get("/sse/clients").json()
    assert listing["count"] >= 1 and listing["connections"] >= 2
    assert client.get("/sse/clients/nobody-here").status_code == 404
