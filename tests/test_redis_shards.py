"""The Redis broker on a Redis Cluster (``redis+cluster://…/?shards=16``), as a user sees it over HTTP:
two gunicorn servers of two workers each on one six-node cluster (contract section 10).

Events for a client id live on its shard, so a unicast touches one master; group, prefix and broadcast
events reach every shard. Every promise of sections 2-4 holds for each client: the answer's id is the
id its streams see, ids increase in publish order, resume is exact, nothing arrives twice, and close,
``/sse/clients``, tickets and Idempotency-Key cover the whole service."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import httpx
import jwt
import pytest

from .flood import Flood, Opened, client_connections, open_streams, ordered, post, send, two_servers
from .helpers import assert_next_is_marker, connections, publisher, wait_for
from .redis_cluster_env import Cluster
from .redis_tools import fresh_post, shard_of, workers_holding_on
from .servers import Gunicorn, free_port
from .sse import RawStream

SHARDS = 16
SECRET = "shards-test-secret-0123456789-abcdefghijkl"


def broker_url(cluster: Cluster) -> str:
    return cluster.url(SHARDS)


@pytest.fixture(scope="module")
def servers(redis_cluster: Cluster) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    with two_servers(broker_url(redis_cluster)) as pair:
        yield pair


@pytest.fixture
def opened(servers: tuple[Gunicorn, Gunicorn]) -> Iterator[Opened]:
    streams = Opened(servers)
    try:
        yield streams
    finally:
        streams.close_all()
    assert wait_for(lambda: connections(servers[0]) == 0, 20), "streams leaked past the test"


def seen(stream: RawStream) -> list[tuple[str, str]]:
    return [(e.id, e.data) for e in stream.events()]


def test_unicasts_to_ids_on_every_shard_arrive_once_with_the_answered_id(servers, opened, redis_cluster):
    ids = [f"uni-{i}" for i in range(24)]
    streams = opened.many({cid: f"/sse/subscribe/{cid}" for cid in ids})
    assert len(workers_holding_on(redis_cluster, ids, SHARDS)) >= 3, "streams not spread over workers"
    answered = {}
    for n, cid in enumerate(ids):
        reply = post(servers[n % 2], {"to": cid, "data": f"for-{cid}"})
        assert reply.status_code == 202 and reply.json()["online"] == 1, reply.text
        answered[cid] = reply.json()["id"]
    for n, (cid, stream) in enumerate(streams.items()):
        assert stream.read_until(f"data: for-{cid}\n\n".encode(), 10), stream.body[-300:]
        assert seen(stream) == [(answered[cid], f"for-{cid}")]
        assert_next_is_marker(stream, publisher(partial(fresh_post, servers[(n + 1) % 2]), to=cid))
    keys = {shard_of(redis_cluster, answered[cid], cid) for cid in ids}
    assert None not in keys and len(keys) >= 8, keys
    assert len({redis_cluster.master_for_key(key) for key in keys}) == 3, "not every master holds a shard"


def test_the_history_of_unicasts_to_random_ids_spreads_over_every_master(servers, redis_cluster):
    before = redis_cluster.stream_entries("*:events")
    rng = random.Random(14)
    bodies = [{"to": f"spread-{rng.randrange(10**9)}", "data": "x"} for _ in range(300)]
    with ThreadPoolExecutor(4) as pool:  # four at a time: the test is about where they land, not order
        list(pool.map(send, itertools.cycle(servers), bodies))
    after = redis_cluster.stream_entries("*:events")
    added = {master: after[master] - before.get(master, 0) for master in after}
    assert sum(added.values()) == 300, added
    assert all(0 < count <= 0.7 * 300 for count in added.values()), added


def test_group_prefix_and_broadcast_reach_every_shard_once_with_the_answered_id(servers, opened,
                                                                              redis_cluster):
    ids = [f"fan-{i}" for i in range(12)]
    streams = opened.many({cid: f"/sse/subscribe/{cid}?group=crew" for cid in ids})
    hello = {cid: send(servers[n % 2], {"to": cid, "data": "hello"}) for n, cid in enumerate(ids)}
    assert len({shard_of(redis_cluster, eid, cid) for cid, eid in hello.items()}) >= 6
    sent = [hello]
    for n, target in enumerate([{"group": "crew"}, {"prefix": "fan-"}, {"broadcast": True}]):
        reply = post(servers[n % 2], {**target, "data": f"all-{n}"})
        assert reply.status_code == 202 and reply.json()["online"] == len(ids), reply.text
        sent.append(dict.fromkeys(ids, reply.json()["id"]))
    for cid, stream in streams.items():
        assert stream.read_until(b"data: all-2\n\n", 10), stream.body[-300:]
        assert seen(stream) == [(sent[0][cid], "hello"), (sent[1][cid], "all-0"), (sent[2][cid], "all-1"),
                                (sent[3][cid], "all-2")]
        assert ordered([eid for eid, _ in seen(stream)])
    assert_next_is_marker(list(streams.values()), publisher(partial(fresh_post, servers[1]), broadcast=True))


def test_ids_increase_per_client_when_unicasts_and_broadcasts_interleave(servers, opened):
    ids = [f"mix-{i}" for i in range(6)]
    streams = opened.many({cid: f"/sse/subscribe/{cid}" for cid in ids})
    rng = random.Random(10)
    expected: dict[str, list[tuple[str, str]]] = {cid: [] for cid in ids}
    for n in range(60):
        if n % 4 == 3:
            event_id = send(servers[n % 2], {"broadcast": True, "data": f"b{n}"})
            for cid in ids:
                expected[cid].append((event_id, f"b{n}"))
        else:
            cid = rng.choice(ids)
            expected[cid].append((send(servers[n % 2], {"to": cid, "data": f"u{n}"}), f"u{n}"))
    for cid, stream in streams.items():
        assert stream.read_until(b"data: b59\n\n", 10), stream.body[-300:]
        assert seen(stream) == expected[cid]
        assert ordered([eid for eid, _ in expected[cid]]), "ids out of publish order"


def test_a_flood_from_two_publishers_arrives_once_in_increasing_order(servers, opened):
    ids = [f"two-{i}" for i in range(4)]
    streams = opened.many({f"{cid}/{k}": f"/sse/subscribe/{cid}" for cid in ids for k in range(2)})

    def body(thread: int):
        return lambda n: ({"broadcast": True, "data": f"t{thread}-{n}"} if n % 5 == 0 else
                          {"to": ids[(n + thread) % len(ids)], "data": f"t{thread}-{n}"})
    first, second = Flood(servers, body=body(0), pause=0), Flood(servers[::-1], body=body(1), pause=0)
    with first, second:
        assert wait_for(lambda: len(first.answers) >= 120 and len(second.answers) >= 120, 60)
    floods = (first, second)
    assert all(status == 202 for flood in floods for status, _, _ in flood.answers), "a publish failed"
    end = send(servers[0], {"broadcast": True, "data": "end"})
    for name, stream in streams.items():
        cid = name.partition("/")[0]
        assert stream.read_until(b"data: end\n\n", 20), stream.body[-300:]
        got = [eid for eid, _ in seen(stream)]
        assert got[-1] == end and ordered(got), "ids out of order, or an event twice"
        mine = [flood.accepted_for(partial(addressed_to, cid)) for flood in floods]
        for ids_of_one_publisher in mine:
            assert [eid for eid in got if eid in set(ids_of_one_publisher)] == ids_of_one_publisher, \
                "a 202 missing, or out of its publisher's order"
        assert len(got) == 1 + sum(map(len, mine)), "an event this stream was not sent"


def addressed_to(client_id: str, body: dict) -> bool:
    return bool(body.get("broadcast")) or body.get("to") == client_id


def test_resume_is_exact_across_servers_and_shards(servers, opened):
    stream = opened.one(servers[0], "/sse/subscribe/back-1")
    assert stream.read_until(b"retry:") and wait_for(lambda: client_connections(servers[0], "back-1") == 1)
    first = send(servers[0], {"to": "back-1", "data": "r0"})
    assert stream.read_until(b"data: r0\n\n")
    stream.close()
    assert wait_for(lambda: client_connections(servers[0], "back-1") == 0, 10)
    missed = [(send(servers[1], {"to": "back-1", "data": "r1"}), "r1"),
              (send(servers[0], {"broadcast": True, "data": "r2"}), "r2")]
    send(servers[1], {"to": "back-2", "data": "not-for-back-1"})
    missed.append((send(servers[0], {"to": "back-1", "data": "r3"}), "r3"))
    for how, server in (("header", servers[1]), ("query", servers[0])):
        if how == "header":
            again = opened.one(server, "/sse/subscribe/back-1", {"Last-Event-ID": first})
        else:
            again = opened.one(server, f"/sse/subscribe/back-1?lastEventId={first}")
        assert again.read_until(f"data: {missed[-1][1]}\n\n".encode(), 10), again.body[-300:]
        assert seen(again) == missed, how
        assert_next_is_marker(again, publisher(partial(fresh_post, server), to="back-1"))
        missed.append(seen(again)[-1])  # the marker: the next resume from "first" replays it too
        again.close()
        assert wait_for(lambda: client_connections(servers[0], "back-1") == 0, 10)


@pytest.mark.parametrize("bad_id", ["123-456", "garbage"])
def test_an_unknown_last_event_id_starts_with_reset(servers, opened, bad_id):
    stream = opened.one(servers[1], "/sse/subscribe/back-unknown", {"Last-Event-ID": bad_id})
    assert stream.read_until(b"}\n\n", 10), stream.body[-300:]
    reset = stream.events()[0]
    assert reset.event == "reset" and reset.id
    assert json.loads(reset.data) == {"reason": "unknown-id", "lastEventId": bad_id}
    assert wait_for(lambda: client_connections(servers[0], "back-unknown") == 1, 10)
    assert_next_is_marker(stream, publisher(partial(fresh_post, servers[0]), to="back-unknown"))


def test_close_ends_the_streams_of_an_id_on_every_worker_and_clients_counts_them_all(servers, opened,
                                                                                   redis_cluster):
    shut = open_streams(servers, "shut", per_server=3)
    opened.streams += shut
    stay = opened.many({"stay": "/sse/subscribe/stay?group=g1"})["stay"]
    assert len(workers_holding_on(redis_cluster, ["shut"], SHARDS)) >= 3, "streams not spread"
    for server in servers:
        listing = httpx.get(server.url("/sse/clients"), timeout=10).json()
        assert (listing["count"], listing["connections"]) == (2, 7)
        assert {c["id"]: (c["connections"], c["groups"]) for c in listing["clients"]} == \
            {"shut": (6, []), "stay": (1, ["g1"])}
    reply = httpx.post(servers[1].url("/sse/close/shut"), timeout=10)
    assert reply.status_code == 200 and reply.json() == {"closed": 6}
    for stream in shut:
        assert stream.wait_closed(10), stream.body[-300:]
        close = stream.events()[-1]
        assert close.event == "close"
    again = opened.one(servers[0], "/sse/subscribe/shut", {"Last-Event-ID": close.id})
    assert again.status == 204
    fresh = opened.one(servers[1], "/sse/subscribe/shut")
    assert fresh.status == 200 and fresh.read_until(b"retry:")
    assert_next_is_marker(stay, publisher(partial(fresh_post, servers[0]), to="stay"))


def test_an_idempotency_key_answers_the_first_answer_on_any_server(servers, opened):
    stream = opened.many({"once": "/sse/subscribe/once"})["once"]
    body = {"to": "once", "data": "only once"}
    first = httpx.post(servers[0].url("/sse/publish"), json=body, headers={"Idempotency-Key": "k-shards"},
                       timeout=10)
    again = httpx.post(servers[1].url("/sse/publish"), json=body, headers={"Idempotency-Key": "k-shards"},
                       timeout=10)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
    other = httpx.post(servers[1].url("/sse/publish"), json={**body, "data": "other"},
                       headers={"Idempotency-Key": "k-shards"}, timeout=10)
    assert other.status_code == 422
    assert stream.read_until(b"data: only once\n\n")
    assert seen(stream) == [(first.json()["id"], "only once")]
    assert_next_is_marker(stream, publisher(partial(fresh_post, servers[1]), to="once"))


def test_a_ticket_bought_from_one_worker_works_once_on_any(redis_cluster):
    env = {"PUSHSVC_BROKER_URL": broker_url(redis_cluster), "PUSHSVC_JWT_SECRET": SECRET}
    with Gunicorn(workers=2, env=env) as server:
        token = jwt.encode({"sub": "tk", "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")
        tickets = []
        for _ in range(6):
            reply = httpx.post(server.url("/sse/tickets"), headers={"Authorization": f"Bearer {token}"},
                               timeout=10)
            assert reply.status_code == 200, reply.text
            tickets.append(reply.json()["ticket"])
        for expected in (200, 401):
            for ticket in tickets:
                stream = RawStream(server.port, f"/sse/subscribe/tk?ticket={ticket}", timeout=10)
                stream.close()
                assert stream.status == expected


def test_a_batch_of_unicasts_and_broadcasts_arrives_in_order_on_each_stream(servers, opened, redis_cluster):
    streams = opened.many({cid: f"/sse/subscribe/{cid}" for cid in ("batch-a", "batch-b", "batch-c")})
    batch = [{"to": "batch-a", "data": "1"}, {"broadcast": True, "data": "2"}, {"to": "batch-b", "data": "3"},
             {"to": ["batch-a", "batch-c"], "data": "4"}, {"to": "batch-a", "data": "5"},
             {"broadcast": True, "data": "6"}, {"to": "batch-c", "data": "7"}]
    reply = post(servers[1], batch)
    assert reply.status_code == 202, reply.text
    answered = [a["id"] for a in reply.json()]
    assert ordered(answered)
    wanted = {"batch-a": [0, 1, 3, 4, 5], "batch-b": [1, 2, 5], "batch-c": [1, 3, 5, 6]}
    for cid, indexes in wanted.items():
        stream = streams[cid]
        assert stream.read_until(f"data: {batch[indexes[-1]]['data']}\n\n".encode(), 10), stream.body[-300:]
        assert seen(stream) == [(answered[i], batch[i]["data"]) for i in indexes]
    shards = {shard_of(redis_cluster, answered[i], batch[i]["to"]) for i in (0, 2, 6)}
    assert None not in shards and len(shards) == 3, shards
    assert_next_is_marker(list(streams.values()), publisher(partial(fresh_post, servers[0]), broadcast=True))


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+cluster://127.0.0.1:{port}/?shards=0", "shards"),
    ("redis+cluster://127.0.0.1:{port}/?shards=abc", "shards"),
    ("redis+cluster://", "host"),
    ("redis+cluster:///?shards=4", "host"),
])
def test_a_bad_cluster_url_stops_start_up_with_one_line(url, problem):
    url = url.format(port=free_port())
    server = Gunicorn(env={"PUSHSVC_BROKER_URL": url})
    try:
        with pytest.raises(RuntimeError):
            server.start(timeout=30)
        lines = [ln for ln in server.output().splitlines() if ln.startswith("pushsvc:")]
        assert len(lines) == 1, server.output()
        assert "PUSHSVC_BROKER_URL" in lines[0], lines[0]
        # The problem is named in the sentence, not only in the URL it quotes; and it is not the scheme.
        said = lines[0].replace(url, "")
        assert problem in said.lower() and "memory://" not in said, lines[0]
        assert "Traceback" not in server.output()
    finally:
        server.stop()
