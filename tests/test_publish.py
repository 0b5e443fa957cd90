"""Publish over HTTP: every target, batches, forms, the legacy forms, and every refusal."""

from __future__ import annotations

import pytest

from .helpers import assert_next_is_marker, publisher, wait_for


def online(client, client_id: str) -> bool:
    return client.get(f"/sse/clients/{client_id}").status_code == 200


def test_several_tabs_on_one_id_each_get_every_event(streams, client):
    tabs = [streams.listen("/sse/subscribe/pub-tabs") for _ in range(3)]
    assert wait_for(lambda: client.get("/sse/clients/pub-tabs").json().get("connections") == 3)
    reply = client.post("/sse/publish", json={"to": "pub-tabs", "data": "to all tabs"})
    assert reply.json()["online"] == 3
    for tab in tabs:
        assert tab.get().data == "to all tabs"


def test_group_prefix_list_and_broadcast(streams, client):
    a = streams.listen("/sse/subscribe/shopA-1?group=admins")
    b = streams.listen("/sse/subscribe/shopA-2")
    c = streams.listen("/sse/subscribe/shopB-1?group=admins")
    assert wait_for(lambda: all(online(client, i) for i in ("shopA-1", "shopA-2", "shopB-1")))
    assert client.post("/sse/publish", json={"group": "admins", "data": "g"}).json()["online"] == 2
    assert client.post("/sse/publish", json={"prefix": "shopA-", "data": "p"}).json()["online"] == 2
    assert client.post("/sse/publish", json={"to": ["shopA-2", "shopB-1", "nobody"], "data": "l"}).json()[
        "online"] == 2
    client.post("/sse/publish", json={"broadcast": True, "data": "b"})
    assert [e.data for e in a.take(3)] == ["g", "p", "b"]
    assert [e.data for e in b.take(3)] == ["p", "l", "b"]
    assert [e.data for e in c.take(3)] == ["g", "l", "b"]


def test_nobody_online_is_not_an_error(client):
    reply = client.post("/sse/publish", json={"to": "pub-nobody", "data": "kept for later"})
    assert reply.status_code == 202 and reply.json()["online"] == 0


def test_batch_publishes_each_in_order(streams, client):
    a = streams.listen("/sse/subscribe/pub-batch-a")
    b = streams.listen("/sse/subscribe/pub-batch-b")
    assert wait_for(lambda: online(client, "pub-batch-a") and online(client, "pub-batch-b"))
    reply = client.post("/sse/publish", json=[
        {"to": "pub-batch-a", "data": "1"},
        {"to": "pub-batch-b", "data": "2", "event": "two"},
        {"to": ["pub-batch-a", "pub-batch-b"], "data": "3"},
    ])
    assert reply.status_code == 202
    results = reply.json()
    assert [r["online"] for r in results] == [1, 1, 2]
    assert [e.data for e in a.take(2)] == ["1", "3"]
    got_b = b.take(2)
    assert [(e.event, e.data, e.id) for e in got_b] == [("two", "2", results[1]["id"]),
                                                       ("message", "3", results[2]["id"])]


def test_form_fields_and_legacy_forms(streams, client):
    s = streams.listen("/sse/subscribe/pub-form")
    assert wait_for(lambda: online(client, "pub-form"))
    form = {"to": "pub-form", "data": "from a form", "event": "f"}
    assert client.post("/sse/publish", data=form).status_code == 202
    assert client.get("/sse/push", params={"id": "pub-form", "content": "legacy push"}).status_code == 202
    assert client.post("/sse/push", data={"id": "pub-form", "content": "legacy post"}).status_code == 202
    reply = client.get("/sse/send", params={"clientId": "pub-form", "content": "legacy send"})
    assert reply.status_code == 202 and set(reply.json()) == {"id", "online"}
    assert [(e.event, e.data) for e in s.take(4)] == [("f", "from a form"), ("message", "legacy push"),
                                                      ("message", "legacy post"), ("message", "legacy send")]


BAD_BODIES = [
    ({"data": "x"}, 400, "no target"),
    ({"to": "pub-bad", "group": "g", "data": "x"}, 400, "two targets"),
    ({"to": "pub-bad"}, 400, "missing data"),
    ({"to": "pub-bad", "data": "x", "event": "a\nb"}, 400, "event with LF"),
    ({"to": "pub-bad", "data": "x", "event": "a\rb"}, 400, "event with CR"),
    ({"to": "pub-bad", "data": "x", "event": "close"}, 400, "reserved event"),
    ({"to": "pub-bad", "data": "x", "event": "reset"}, 400, "reserved event"),
    ({"to": "pub-bad", "data": "x", "event": "e" * 65}, 400, "long event"),
    ({"to": "a b", "data": "x"}, 400, "bad client id"),
    ({"to": "a/b", "data": "x"}, 400, "slash in client id"),
    ({"to": "pub-bad", "data": "x", "retry": "soon"}, 400, "bad retry"),
    ({"to": "pub-bad", "data": "x" * 65537}, 413, "data over the limit"),
    ([{"to": "pub-bad", "data": "ok"}, {"to": "pub-bad"}], 400, "batch with a bad entry"),
]


@pytest.mark.parametrize(("body", "status", "what"), BAD_BODIES, ids=[b[2] for b in BAD_BODIES])
def test_bad_publish_is_refused_and_publishes_nothing(streams, client, body, status, what):
    s = streams.raw("/sse/subscribe/pub-bad")
    assert s.read_until(b"retry:")
    reply = client.post("/sse/publish", json=body)
    assert reply.status_code == status, what
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["error"]
    if isinstance(body, list):
        assert reply.json()["index"] == 1
    assert_next_is_marker(s, publisher(client.post, to="pub-bad"))


@pytest.mark.parametrize(
    ("content", "content_type", "what"),
    [
        (b"", "application/json", "empty body"),
        (b"{not json", "application/json", "not JSON"),
        (b'{"to": "x", "data": "\xff"}', "application/json", "not UTF-8"),
        (b"to=x&data=%FF", "application/x-www-form-urlencoded", "form not UTF-8"),
        (b"[]", "application/json", "empty batch"),
        (b'"just a string"', "application/json", "not an object"),
    ],
)
def test_unreadable_bodies_are_400(client, content, content_type, what):
    reply = client.post("/sse/publish", content=content, headers={"Content-Type": content_type})
    assert reply.status_code == 400, what
    assert "error" in reply.json()


def test_huge_body_is_413(client):
    reply = client.post("/sse/publish", content=b"[" + b'{"to":"x","data":"y"},' * 300_000 + b"]",
                        headers={"Content-Type": "application/json"})
    assert reply.status_code == 413
    assert "error" in reply.json()


@pytest.mark.parametrize("path", ["/sse/subscribe/a%20b", "/sse/subscribe/" + "x" * 129,
                                  "/sse/subscribe/a%2Fb", "/sse/subscribe/a%00b", "/sse/subscribe",
                                  "/sse/subscribe?clientId=", "/sse/subscribe/ok?group=bad%20group"])
def test_bad_subscribe_is_400_json(client, path):
    reply = client.get(path)
    assert reply.status_code == 400
    assert "error" in reply.json()


@pytest.mark.parametrize("param", ["clientId", "id", "uid"])
def test_subscribe_by_query_parameter(streams, client, param):
    s = streams.listen(f"/sse/subscribe?{param}=pub-q-{param}")
    assert wait_for(lambda: online(client, f"pub-q-{param}"))
    client.post("/sse/publish", json={"to": f"pub-q-{param}", "data": "q"})
    assert s.get().data == "q"


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("/sse/push?id=pub-q&content=%ED%B0%92", "a lone surrogate, escaped"),
        ("/sse/push?id=pub-q&content=%FF%FE", "bytes that are not UTF-8"),
        ("/sse/send?clientId=pub-q&content=%C3", "a truncated sequence"),
        ("/sse/subscribe?clientId=%ED%B0%92", "a subscribe id that is not UTF-8"),
        ("/sse/close?id=%FF", "a close id that is not UTF-8"),
    ],
)
def test_queries_that_are_not_utf8_are_400(client, path, what):
    reply = client.get(path)
    assert reply.status_code == 400, what
    assert "UTF-8" in reply.json()["error"]


def test_escaped_utf8_in_a_query_is_understood(streams, client):
    s = streams.raw("/sse/subscribe/pub-esc")
    assert s.read_until(b"retry:")
    assert client.get("/sse/push?id=pub-esc&content=%C3%BC-ok%E2%80%A8x").status_code == 202
    assert s.read_until("data: ü-ok\u2028x\n\n".encode())
