"""Hostile input, generated: arbitrary unicode, control characters, CR/LF/NUL, lone surrogates and huge values
in every publish field (JSON, batches, forms, raw bytes, the legacy GET form) and in client ids, groups and
``lastEventId`` of a subscribe, all against a real gunicorn.

Every answer must be 202 (200 for a subscribe) or 4xx, never 5xx; and the streams that stay open all along
must parse, as a browser would, into exactly the accepted events addressed to them, each with the event
name and data that were sent: no field injected, no event split, lost or invented.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .servers import Gunicorn
from .sse import RawStream, parse

MAX_DATA = 2048
IDS = ("fz-a", "fz-b")
GROUP = "fz-g"
# Streams that stay open through the whole module: client id and query.
STREAMS = {"fz-a": f"/sse/subscribe/fz-a?group={GROUP}", "fz-b": "/sse/subscribe/fz-b"}

NASTY = st.sampled_from(["\r", "\n", "\r\n", "\n\n", "\x00", "\x85", "\u2028", "\u2029", "\ufeff", "\ud800",
                         "\udfff", " ", "\t", ":", "/", "%", "&", "=", "+", "data: x", "id: 7", "event: evil",
                         "retry: 1", "\n\ndata: injected\n\n", "\r\nid: 1\r\n\r\n", '"', "\\", "é", "😀"])
CHARS = st.characters(exclude_categories=())
# Text made mostly of the pieces that break encoders: line breaks, NUL, field names, surrogates.
SPIKY = st.lists(st.one_of(NASTY, st.text(CHARS, max_size=4)), min_size=1, max_size=8).map("".join)
TEXT = st.one_of(
    st.text(CHARS, max_size=30),
    SPIKY,
    st.builds(operator.mul, st.sampled_from(["x", "é", "\n", "\x00", "😀"]),
              st.integers(MAX_DATA - 8, MAX_DATA * 3)),
)
NAME = st.one_of(st.sampled_from([*IDS, GROUP, "fz-", "fz", "f"]), TEXT,
                 st.builds(operator.add, st.sampled_from([*IDS, GROUP]), TEXT))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8)
FIELD = {
    "to": NAME | st.lists(NAME, max_size=3) | JSON,
    "group": NAME | JSON,
    "prefix": NAME | JSON,
    "broadcast": st.booleans() | st.sampled_from(["true", "false", "1", "yes", "maybe", ""]) | JSON,
    "data": TEXT | JSON,
    "event": st.sampled_from(["update", "message", "close", "busy", ""]) | TEXT | JSON,
    "retry": st.integers(-5, 10**12) | TEXT | JSON,
}
PUBLISH = st.fixed_dictionaries({}, optional={**FIELD, "extra": JSON})
# Mostly targeted at our streams, so that accepted events really travel.
OURS = st.sampled_from(IDS)
DATA = SPIKY | FIELD["data"]
TARGETED = st.one_of(
    st.fixed_dictionaries({"to": OURS | st.lists(OURS, min_size=1, max_size=2), "data": DATA},
                          optional={"event": FIELD["event"], "retry": FIELD["retry"]}),
    st.fixed_dictionaries({"group": st.just(GROUP), "data": DATA}, optional={"event": FIELD["event"]}),
    st.fixed_dictionaries({"prefix": st.sampled_from(["fz-", "fz-a", "f"]), "data": DATA}),
    st.fixed_dictionaries({"broadcast": st.just(True), "data": DATA}, optional={"event": TEXT}),
)
OBJECT = TARGETED | PUBLISH
FORM = st.dictionaries(st.sampled_from([*FIELD, "extra"]), TEXT | NAME, max_size=5)


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    env = {"PUSHSVC_MAX_MESSAGE_BYTES": str(MAX_DATA), "PUSHSVC_MAX_BODY_BYTES": str(MAX_DATA * 4),
           "PUSHSVC_HEARTBEAT_SECONDS": "0.5"}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


class Watch:
    """The long-lived streams, and every accepted event with the streams it must reach."""

    def __init__(self, server: Gunicorn):
        self.http = httpx.Client(base_url=server.base, timeout=10)
        self.streams = {cid: RawStream(server.port, path) for cid, path in STREAMS.items()}
        self.expected: dict[str, list[tuple[str, str, str]]] = {cid: [] for cid in STREAMS}
        for s in self.streams.values():
            assert s.status == 200 and s.read_until(b"retry:")

    def accepted(self, event_id: str, fields: dict[str, Any], *, form: bool) -> None:
        for cid in receivers(fields, form=form):
            self.expected[cid].append((event_id, expected_event(fields), expected_data(fields)))

    def drain(self) -> None:
        for s in self.streams.values():
            s.read_for(0.005)

    def close(self) -> None:
        self.http.close()
        for s in self.streams.values():
            s.close()


@pytest.fixture(scope="module")
def watch(server: Gunicorn) -> Iterator[Watch]:
    w = Watch(server)
    yield w
    w.close()


def receivers(fields: dict[str, Any], *, form: bool) -> list[str]:
    """Which of our streams an accepted publish addresses (its one target is known to be valid)."""
    set_ = [k for k in ("to", "group", "prefix") if fields.get(k) is not None]
    if not set_:
        return list(IDS)  # broadcast
    kind, value = set_[0], fields[set_[0]]
    if kind == "to":
        return [cid for cid in IDS if cid in ([value] if isinstance(value, str) else value)]
    if kind == "group":
        return ["fz-a"] if value == GROUP else []
    return [cid for cid in IDS if cid.startswith(value)]


def expected_event(fields: dict[str, Any]) -> str:
    return fields.get("event") or "message"


def expected_data(fields: dict[str, Any]) -> str:
    data = fields["data"]
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return re.sub(r"\r\n|\r|\n", "\n", text)


def json_body(value: Any) -> bytes:
    # ASCII escapes let lone surrogates and NaN through, as a careless client would send them.
    return json.dumps(value).encode("ascii")


def check(reply: httpx.Response, accepted: int = 202) -> bool:
    assert reply.status_code == accepted or 400 <= reply.status_code < 500, (reply.status_code, reply.text)
    if reply.status_code != accepted and reply.status_code != 414:  # 414: gunicorn's own, before the app
        assert reply.json()["error"]
    return reply.status_code == accepted


FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.one_of(OBJECT, st.lists(OBJECT, min_size=1, max_size=3)))
def test_fuzz_json_publish(watch, body):
    reply = watch.http.post("/sse/publish", content=json_body(body),
                            headers={"Content-Type": "application/json"})
    if check(reply):
        results = reply.json()
        for fields, result in zip(body if isinstance(body, list) else [body],
                                  results if isinstance(results, list) else [results], strict=True):
            watch.accepted(result["id"], fields, form=False)
    watch.drain()


@FUZZ
@given(FORM)
def test_fuzz_form_publish(watch, form):
    body = urlencode(form, encoding="utf-8", errors="surrogatepass").encode("ascii")
    reply = watch.http.post("/sse/publish", content=body,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    if check(reply):
        watch.accepted(reply.json()["id"], form, form=True)
    watch.drain()


RAW_TYPES = ["application/json", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain",
             "", "application/json; charset=latin-1", "multipart/form-data; boundary=x"]


@settings(FUZZ, max_examples=40)
@given(st.binary(max_size=300), st.sampled_from(RAW_TYPES))
def test_fuzz_raw_bodies(watch, body, kind):
    reply = watch.http.post("/sse/publish", content=body, headers={"Content-Type": kind})
    # Random bytes that form a valid publish to one of our streams would show in the final check.
    assert reply.status_code == 202 or 400 <= reply.status_code < 500, reply.text


@settings(FUZZ, max_examples=40)
# httpx refuses URLs over 64 KiB; gunicorn refuses request lines over 8 KiB long before that.
@given(NAME.map(lambda t: t[:2000]), TEXT.map(lambda t: t[:2000]), st.sampled_from(["push", "send"]))
def test_fuzz_legacy_get(watch, client_id, content, form):
    param = "id" if form == "push" else "clientId"
    query = urlencode({param: client_id, "content": content}, encoding="utf-8", errors="surrogatepass")
    reply = watch.http.get(f"/sse/{form}?{query}")
    if check(reply):
        watch.accepted(reply.json()["id"], {"to": client_id, "data": content}, form=True)
    watch.drain()


@settings(FUZZ, max_examples=60)
@given(NAME, st.lists(NAME, max_size=3), st.none() | TEXT, st.booleans())
def test_fuzz_subscribe(server, watch, client_id, groups, last_event_id, in_path):
    def q(value: str) -> str:
        return quote(value, safe="", errors="surrogatepass")
    params = [f"group={q(g)}" for g in groups]
    if last_event_id is not None:
        params.append(f"lastEventId={q(last_event_id)}")
    if in_path:
        path = f"/sse/subscribe/{q(client_id)}"
    else:
        path, params = "/sse/subscribe", [f"clientId={q(client_id)}", *params]
    s = RawStream(server.port, path + "?" + "&".join(params))
    try:
        assert s.status == 200 or 400 <= s.status < 500, (s.status, s.body)
        if s.status == 200:
            assert s.read_until(b"retry:")
            # Up to a marker sent to it, whatever it got (a reset at most, the id it sent echoed inside
            # JSON) parses into known events only. The marker counts for the watched streams too.
            fields = {"to": client_id, "data": "fz-marker"}
            reply = watch.http.post("/sse/publish", json=fields)
            assert reply.status_code == 202, reply.text
            watch.accepted(reply.json()["id"], fields, form=False)
            assert s.read_until(b"data: fz-marker\n\n")
            *before, marker = parse(s.body.decode("utf-8"))
            assert [e.event for e in before] in ([], ["reset"])
            assert (marker.event, marker.data, marker.id) == ("message", "fz-marker", reply.json()["id"])
    finally:
        s.close()
    watch.drain()


def test_streams_hold_exactly_the_accepted_events(watch):
    """Runs last: every stream parses into the accepted events addressed to it, in order, intact."""
    reply = watch.http.post("/sse/publish", json={"broadcast": True, "data": "the end", "event": "end"})
    assert reply.status_code == 202
    watch.accepted(reply.json()["id"], {"broadcast": True, "data": "the end", "event": "end"}, form=False)
    for cid, stream in watch.streams.items():
        assert stream.read_until(b"event: end\ndata: the end\n\n", 10), cid
        assert not stream.closed, f"{cid} was cut off"
        got = [(e.id, e.event, e.data) for e in parse(stream.body.decode("utf-8"))]
        assert got == watch.expected[cid]
    assert sum(len(v) for v in watch.expected.values()) > 20, "too few events were accepted to mean much"

