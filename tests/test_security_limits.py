"""Limits on everything a client controls, over real HTTP: each bad value is refused with a clear 400/413
JSON answer, the values at the limit are accepted, and nothing refused ever reaches a stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from .helpers import assert_next_is_marker, publisher
from .servers import Gunicorn


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    """Validation happens before any broker sees an event: the memory broker is enough here."""
    with Gunicorn(env={"PUSHSVC_HEARTBEAT_SECONDS": "0.5"}) as gunicorn:
        yield gunicorn


ID_128 = "é" * 64  # 128 bytes of UTF-8
ID_129 = "a" + "é" * 64

BAD_IDS = [ID_129, "", "has space", "tab\there", "new\nline", "cr\rhere", "nul\x00", "slash/inside",
           "del\x7f", "c1\x85", "nbsp\u00a0", "ideographic\u3000space", "line\u2028sep"]


def path_id(value: str) -> str:
    return quote(value, safe="")


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_client_ids_are_400(client, bad):
    for path in (f"/sse/subscribe?clientId={path_id(bad)}", f"/sse/subscribe?id={path_id(bad)}"):
        reply = client.get(path)
        assert reply.status_code == 400, (path, reply.text)
        assert reply.json()["error"]
    reply = client.post("/sse/publish", json={"to": bad, "data": "x"})
    assert reply.status_code == 400 and reply.json()["field"] == "to"
    reply = client.post("/sse/publish", json={"group": bad, "data": "x"})
    assert reply.status_code == 400 and reply.json()["field"] == "group"


@pytest.mark.parametrize("bad", [b for b in BAD_IDS if b], ids=repr)
def test_bad_group_names_are_400(client, bad):
    reply = client.get(f"/sse/subscribe/lim-ok?group=fine&group={path_id(bad)}")
    assert reply.status_code == 400 and reply.json()["field"] == "group"


def test_names_at_the_limit_are_accepted(streams, client):
    s = streams.raw(f"/sse/subscribe/{path_id(ID_128)}?group={path_id(ID_128)}")
    assert s.status == 200
    assert client.post("/sse/publish", json={"group": ID_128, "data": "edge"}).json()["online"] == 1
    assert s.read_until(b"data: edge\n\n")


def test_too_many_groups_is_400(streams, client):
    many = "&".join(f"group=g{i}" for i in range(33))
    reply = client.get(f"/sse/subscribe/lim-groups?{many}")
    assert reply.status_code == 400 and "32" in reply.json()["error"]
    thirty_two = "&".join(f"group=g{i}" for i in range(32))
    assert streams.raw(f"/sse/subscribe/lim-groups?{thirty_two}").status == 200


@pytest.mark.parametrize("event", ["", "x" * 65, "é" * 33, "a\nb", "a\rb", "a\x00b", "tab\t", "open", "error",
                                   "close", "reset", "busy", "\ud800", 42, ["a"]], ids=repr)
def test_bad_event_names_are_400(client, event):
    # ASCII-escaped JSON, so a lone surrogate travels as \ud800 the way a buggy client would send it.
    body = json.dumps({"broadcast": True, "data": "x", "event": event})
    reply = client.post("/sse/publish", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 400 and reply.json()["field"] == "event"


def test_data_over_the_limit_is_413(client):
    reply = client.post("/sse/publish", json={"broadcast": True, "data": "x" * 65537})
    assert reply.status_code == 413 and reply.json()["field"] == "data"
    reply = client.post("/sse/publish", json={"broadcast": True, "data": "é" * 32769})
    assert reply.status_code == 413
    assert client.post("/sse/publish", json={"broadcast": True, "data": "x" * 65536}).status_code == 202


def test_body_over_the_limit_is_413(client):
    body = b'{"broadcast": true, "data": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    reply = client.post("/sse/publish", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 413 and reply.json()["error"]


def test_long_query_is_refused(client):
    # gunicorn refuses a request line over 8190 bytes itself, before the app sees it.
    reply = client.get("/sse/subscribe/lim-q?group=" + "a" * 9000)
    assert reply.status_code in (400, 414)
    reply = client.get("/sse/push?id=lim-q&content=" + "a" * 9000)
    assert reply.status_code in (400, 414)


BAD_PUBLISHES = [
    {"data": "no target"},
    {"to": "lim-a", "group": "lim-g", "data": "two targets"},
    {"to": "lim-a"},
    {"to": "lim-a", "data": None},
    {"to": [], "data": "empty list"},
    {"to": ["lim-a", "bad id"], "data": "one bad id"},
    {"to": "lim-a", "data": "x", "extra": 1},
    {"to": "lim-a", "data": "x", "retry": -1},
    {"to": "lim-a", "data": "x", "retry": "soon"},
    {"to": "lim-a", "data": "x", "event": "evil\n\ndata: injected"},
    {"to": "lim-a", "data": "x", "event": "message\rid: 999"},
    {"broadcast": "maybe", "data": "x"},
    [{"to": "lim-a", "data": "first is fine"}, {"to": "lim-a"}],
    [],
    "just a string",
]


def test_refused_publishes_reach_no_stream(streams, client):
    s = streams.raw("/sse/subscribe/lim-a?group=lim-g")
    assert s.read_until(b"retry:")
    for bad in BAD_PUBLISHES:
        reply = client.post("/sse/publish", json=bad)
        assert reply.status_code == 400, (bad, reply.text)
    form = "application/x-www-form-urlencoded"
    for body, kind in [(b"\xff\xfe not utf-8", "application/json"), (b"{not json", "application/json"),
                       (b"to=lim-a&data=%ff", form), (b"", "application/json")]:
        assert client.post("/sse/publish", content=body, headers={"Content-Type": kind}).status_code == 400
    assert client.get("/sse/push?id=lim%20a&content=x").status_code == 400
    assert client.get("/sse/push?content=x").status_code == 400
    assert_next_is_marker(s, publisher(client.post, to="lim-a"))
