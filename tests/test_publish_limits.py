"""Publishing safely (contract, section 9): streams per client id per worker, and a publish body read as JSON
only when it says so (415 otherwise), on real servers; the legacy forms and their switch."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from pushsvc import ConfigError, Settings, create_app
from pushsvc.config import DEFAULT_MAX_STREAMS_PER_CLIENT
from pushsvc.registry import Connection

from .helpers import BROKERS, assert_next_is_marker, connections, publisher, wait_for
from .servers import Gunicorn, RedisServer
from .sse import RawStream

CAP = 3


@pytest.fixture(scope="module", params=BROKERS)
def capped(request) -> Iterator[Gunicorn]:
    """One worker (the cap is per worker) with PUSHSVC_MAX_STREAMS_PER_CLIENT=3, on each broker."""
    env = {"PUSHSVC_MAX_STREAMS_PER_CLIENT": str(CAP), "PUSHSVC_HEARTBEAT_SECONDS": "1"}
    if request.param == "memory":
        with Gunicorn(env=env) as gunicorn:
            yield gunicorn
        return
    redis_server = RedisServer().start()
    try:
        with Gunicorn(env={**env, "PUSHSVC_BROKER_URL": redis_server.url}) as gunicorn:
            yield gunicorn
    finally:
        redis_server.cleanup()


def refused_by_reason(server: Gunicorn, reason: str) -> float:
    text = httpx.get(server.url("/metrics"), timeout=5).text
    name = f'pushsvc_refused_total{{reason="{reason}"}}'
    line = next((ln for ln in text.splitlines() if ln.startswith(name)), None)
    return float(line.split()[-1]) if line else 0.0


def test_one_client_over_its_cap_gets_busy_and_its_other_streams_carry_on(capped):
    """Inputs: 3 streams of one id (each registered before the next), a 4th and a 5th of that id (busy),
    a stream of another id (accepted), then a 4th again once one of the three has gone (accepted)."""
    held = [RawStream(capped.port, "/sse/subscribe/cap-one") for _ in range(CAP)]
    others: list[RawStream] = []
    try:
        for s in held:
            assert s.status == 200 and s.read_until(b"retry:")
        refused_before = refused_by_reason(capped, "client limit")
        for _ in range(2):
            extra = RawStream(capped.port, "/sse/subscribe/cap-one", {"Last-Event-ID": "1-2"})
            others.append(extra)
            assert extra.status == 200, "a soft refusal: EventSource comes back later"
            assert extra.wait_closed(5)
            events = extra.events()
            assert [e.event for e in events] == ["busy"]
            assert json.loads(events[0].data)["reason"] == "client limit"
            assert events[0].id == "1-2" and b"retry: " in extra.body
        assert refused_by_reason(capped, "client limit") == refused_before + 2
        someone_else = RawStream(capped.port, "/sse/subscribe/cap-two")
        others.append(someone_else)
        assert someone_else.read_until(b"retry:") and not someone_else.closed
        publish = publisher(lambda path, **kw: httpx.post(capped.url(path), timeout=10, **kw), to="cap-one")
        assert_next_is_marker(held, publish)  # the three carry on, and got nothing else
        held.pop().close()
        assert wait_for(lambda: connections(capped) == CAP)  # two of cap-one, one of cap-two
        again = RawStream(capped.port, "/sse/subscribe/cap-one")
        held.append(again)
        assert again.read_until(b"retry:")
        assert_next_is_marker(held, publish)
    finally:
        for s in held + others:
            s.close()
    assert wait_for(lambda: connections(capped) == 0, 10)


def test_the_cap_defaults_to_100_per_client_and_is_a_setting():
    """Inputs: no setting (100); PUSHSVC_MAX_STREAMS_PER_CLIENT=3 in the environment; 0 (refused)."""
    assert DEFAULT_MAX_STREAMS_PER_CLIENT == 100
    assert Settings.load(environ={}).max_streams_per_client == 100
    assert Settings.load(environ={"PUSHSVC_MAX_STREAMS_PER_CLIENT": "3"}).max_streams_per_client == 3
    with pytest.raises(ConfigError, match="PUSHSVC_MAX_STREAMS_PER_CLIENT"):
        Settings.load(environ={"PUSHSVC_MAX_STREAMS_PER_CLIENT": "0"})


def test_the_101st_stream_of_one_id_is_refused_by_default():
    """Inputs: 100 registered streams of one id, then a subscribe of it (busy) and of another id (a
    stream)."""
    app = create_app()
    service = app.extensions["pushsvc"]
    for _ in range(100):
        service.registry.add(Connection("crowd", queue_size=10))
    assert service.subscribe("crowd").reason == "client limit"
    assert service.stats.refused["client limit"] == 1
    accepted = service.subscribe("alone")
    assert accepted.status == 200 and accepted.reason == ""
    accepted.body.close()


# -- what a publish body must say it is --------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


def test_json_in_another_type_is_415_and_publishes_nothing(server, streams, client):
    """Inputs: a JSON body as text/plain (what a cross-site form can send), with no Content-Type, as
    application/octet-stream, as text/json, as application/jsonp; a legacy POST /push with a text/plain
    body. Each 415 names the accepted types; a marker proves nothing was published."""
    s = streams.raw("/sse/subscribe/ct-a")
    assert s.read_until(b"retry:")
    body = json.dumps({"to": "ct-a", "data": "forged"}).encode()
    for kind in ("text/plain", None, "application/octet-stream", "text/json", "application/jsonp"):
        headers = {} if kind is None else {"Content-Type": kind}
        reply = client.post("/sse/publish", content=body, headers=headers)
        assert reply.status_code == 415, (kind, reply.text)
        assert reply.json()["field"] == "Content-Type" and "application/json" in reply.json()["error"]
    legacy = client.post("/sse/push?id=ct-a", content=b"content=forged",
                         headers={"Content-Type": "text/plain"})
    assert legacy.status_code == 415 and FORM in legacy.json()["error"]
    assert_next_is_marker(s, publisher(client.post, to="ct-a"))


def test_json_types_and_forms_are_read(server, streams, client):
    """Inputs: application/json with a charset, application/merge-patch+json, application/ld+json, a
    urlencoded form, a multipart form; the legacy GET and POST /push and /send (query, form, no body)."""
    s = streams.raw("/sse/subscribe/ct-b")
    assert s.read_until(b"retry:")
    sent = []
    for n, kind in enumerate(("application/json; charset=utf-8", "application/merge-patch+json",
                              "application/ld+json")):
        reply = client.post("/sse/publish", content=json.dumps({"to": "ct-b", "data": f"j{n}"}),
                            headers={"Content-Type": kind})
        assert reply.status_code == 202, (kind, reply.text)
        sent.append(f"j{n}")
    assert client.post("/sse/publish", data={"to": "ct-b", "data": "form"}).status_code == 202
    multipart = {"to": (None, "ct-b"), "data": (None, "multi")}
    assert client.post("/sse/publish", files=multipart).status_code == 202
    assert client.get("/sse/push?id=ct-b&content=get-push").status_code == 202
    assert client.get("/sse/send?clientId=ct-b&content=get-send").status_code == 202
    assert client.post("/sse/push?id=ct-b&content=post-query").status_code == 202
    assert client.post("/sse/send", data={"clientId": "ct-b", "content": "post-form"}).status_code == 202
    sent += ["form", "multi", "get-push", "get-send", "post-query", "post-form"]
    assert s.read_until(b"data: post-form\n")
    assert [e.data for e in s.events()] == sent


def test_the_legacy_routes_can_be_turned_off():
    """Inputs: PUSHSVC_LEGACY_ROUTES off (as false, 0 and no), GET and POST /push and /send; and a value
    that is not a boolean."""
    for off in (False, "0", "no"):
        http = create_app(legacy_routes=off).test_client()
        for method, path in (("GET", "/sse/push?id=u&content=x"), ("POST", "/sse/push?id=u&content=x"),
                             ("GET", "/sse/send?clientId=u&content=x")):
            reply = http.open(path, method=method)
            assert reply.status_code == 404 and "PUSHSVC_LEGACY_ROUTES" in reply.json["error"]
        assert http.post("/sse/publish", json={"to": "u", "data": "x"}).status_code == 202
    assert create_app().test_client().get("/sse/push?id=u&content=x").status_code == 202
    with pytest.raises(ConfigError, match="PUSHSVC_LEGACY_ROUTES must be true or false"):
        Settings.load(environ={"PUSHSVC_LEGACY_ROUTES": "maybe"})
