"""A Redis Cluster that changes under the sharded broker (``redis+cluster://…/?shards=4``) while events
flow, seen over HTTP by two gunicorn servers of two workers each (contract section 10, as
test_redis_sentinel does it for Sentinel): a master's failover (``CLUSTER FAILOVER``, and a SIGKILL) and
a live reshard of a shard's slot. Every 202 reaches its streams once, ids increase on each stream,
publishing works again without a restart of pushsvc, and a resume across the change gives the events
or ``event: reset``, never a silent gap."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from functools import partial

import httpx
import pytest

from .flood import Flood, open_streams, ordered, post, send, two_servers, worker_pids
from .helpers import assert_next_is_marker, publisher, wait_for
from .redis_cluster_env import Cluster, ClusterNode
from .redis_tools import fresh_post, shard_of
from .servers import Gunicorn
from .sse import RawStream

SHARDS = 4
RECOVERY_SECONDS = 30
# A failover or a move takes the shard away for a moment; the slowest publish through it (a worker
# finds the new master, reconnects, runs the script again) on a loaded 2-core machine.
FLOOD_FAST = 3.0


@pytest.fixture(scope="module")
def servers(redis_cluster: Cluster) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    with two_servers(redis_cluster.url(SHARDS)) as pair:
        yield pair


def shard_key(cluster: Cluster, event_id: str, client_id: str) -> str:
    """The shard stream that holds the event ``event_id`` to ``client_id``."""
    key = shard_of(cluster, event_id, client_id)
    assert key is not None, f"no shard holds {event_id}"
    return key


def elsewhere(servers: tuple[Gunicorn, ...], cluster: Cluster, master: ClusterNode, prefix: str) -> str:
    """A client id whose shard is on another master than ``master``."""
    for n in range(40):
        cid = f"{prefix}-{n}"
        if cluster.master_for_key(shard_key(cluster, send(servers[0], {"to": cid, "data": "probe"}), cid)) \
                is not master:
            return cid
    raise AssertionError(f"every {prefix}-* lives on {master}")


def watched(servers: tuple[Gunicorn, Gunicorn], cluster: Cluster, flooded: str,
            prefix: str) -> tuple[str, str, dict[str, list[RawStream]]]:
    """The flooded client's shard key, a bystander on another master, and their open streams (two per
    server for the flooded client, one for the bystander)."""
    first = send(servers[0], {"to": flooded, "data": "probe"})
    key = shard_key(cluster, first, flooded)
    bystander = elsewhere(servers, cluster, cluster.master_for_key(key), prefix)
    streams = {flooded: open_streams(servers, flooded, per_server=2),
               bystander: open_streams(servers, bystander, per_server=1)}
    return key, bystander, streams


def mixed(flooded: str, bystander: str) -> Callable[[int], dict]:
    """The flood's n-th publish: mostly to ``flooded``, some to ``bystander``, every fifth to everyone."""
    def body(n: int) -> dict:
        if n % 5 == 0:
            return {"broadcast": True, "data": f"n{n}"}
        return {"to": bystander if n % 5 == 4 else flooded, "data": f"n{n}"}
    return body


def addressed_to(client_id: str, body: dict) -> bool:
    return bool(body.get("broadcast")) or body.get("to") == client_id


def publish_again(server: Gunicorn, body: dict) -> str:
    """The id of ``body`` published, once a worker takes it: just after a change, one that has yet to
    find the new master answers 503, which means try again."""
    replies: list[httpx.Response] = []
    assert wait_for(lambda: replies.append(post(server, body)) or replies[-1].status_code == 202, 20), \
        replies[-1].text
    return replies[-1].json()["id"]


def check_delivery(flood: Flood, streams: dict[str, list[RawStream]], end: str, *,
                   before: dict[str, str]) -> None:
    """Every stream got ``before[client id]`` (if any), every 202 of the flood addressed to it once, in
    increasing order, and the ``end`` event."""
    for client_id, opened in streams.items():
        earlier = [before[client_id]] if client_id in before else []
        accepted = earlier + flood.accepted_for(partial(addressed_to, client_id))
        for stream in opened:
            assert stream.read_until(b"data: end\n\n", 20), stream.body[-500:]
            got = [e.id for e in stream.events() if e.data != "probe"]
            assert got[-1] == end, stream.body[-500:]
            assert ordered(got), f"{client_id}: ids out of order, or an event twice: {disorder(stream)}"
            missing = set(accepted) - set(got)
            assert not missing, f"{len(missing)} events answered 202 never reached {client_id}"
            extra = [(e.id, e.data, flood.status_of(e.data)) for e in stream.events()
                     if e.id not in set(accepted) and e.id != end]
            assert not extra, f"{client_id}: events that were not answered 202 (id, data, status): {extra}"
            assert not stream.closed


def disorder(stream: RawStream) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """The neighbouring events (id, data) of ``stream`` whose ids do not increase."""
    events = [(e.id, e.data) for e in stream.events()]
    return [(a, b) for a, b in itertools.pairwise(events) if not ordered([a[0], b[0]])]


def check_resume(server: Gunicorn, client_id: str, since: str, live: RawStream) -> RawStream:
    """Resuming ``client_id`` from ``since`` (before the change): a reset, or exactly what the live
    stream ``live`` got after ``since``."""
    resumed = RawStream(server.port, f"/sse/subscribe/{client_id}", {"Last-Event-ID": since}, timeout=10)

    def answered() -> bool:
        resumed.read_for(0.2)
        return b"data: end\n\n" in resumed.body or b"event: reset\n" in resumed.body
    assert wait_for(answered, 20), resumed.body[-300:]
    if b"event: reset\n" in resumed.body:
        assert resumed.read_until(b"}\n\n"), resumed.body[-300:]
    events = resumed.events()
    if events[0].event == "reset":
        assert json.loads(events[0].data)["lastEventId"] == since
    else:
        after = list(itertools.dropwhile(lambda e: e != since, (e.id for e in live.events())))[1:]
        assert [e.id for e in events] == after, "a resume with a hole in it, or an event twice"
    marker = publisher(partial(fresh_post, server), to=client_id)
    assert_next_is_marker([resumed, live], marker)
    return resumed


def check_afterwards(servers: tuple[Gunicorn, Gunicorn], flood: Flood, streams: dict[str, list[RawStream]],
                     flooded: str, since: str) -> None:
    """Once the change is over: publishing works, every stream got its 202s once and in order, no
    publish was slow, and a resume of ``flooded`` from ``since`` (before the change) is exact or a reset."""
    end = publish_again(servers[0], {"broadcast": True, "data": "end"})
    check_delivery(flood, streams, end, before={flooded: since})
    slow = [(status, round(took, 2)) for status, _, took in flood.answers if took > FLOOD_FAST]
    assert not slow, f"publishes answered slowly: {slow}"
    opened = streams[flooded]
    opened.append(check_resume(servers[1], flooded, since, opened[0]))


@pytest.mark.parametrize("how", ["failover", "kill"])
def test_a_masters_failover_during_a_flood_delivers_every_202_once(servers, redis_cluster, how):
    """The master of the flooded client's shard is failed over (``CLUSTER FAILOVER`` on its replica) or
    killed (SIGKILL; the cluster promotes the replica). Publishes to that shard may be 503 for a
    moment; none is a 202 that is lost."""
    flooded = f"flood-{how}"
    key, bystander, streams = watched(servers, redis_cluster, flooded, f"calm-{how}")
    master = redis_cluster.master_for_key(key)
    pids = worker_pids(servers)
    try:
        since = send(servers[1], {"to": flooded, "data": "before"})
        with Flood(servers, body=mixed(flooded, bystander)) as flood:
            assert wait_for(lambda: len(flood.accepted()) >= 20, 20)
            before = len(flood.answers)
            started = time.monotonic()
            promoted = redis_cluster.failover(master) if how == "failover" else redis_cluster.kill(master)
            assert redis_cluster.master_for_key(key) is promoted
            assert wait_for(lambda: flood.accepted_since(before) >= 20, RECOVERY_SECONDS), \
                flood.answers[before:][-20:]
            recovered = time.monotonic() - started
        assert recovered < RECOVERY_SECONDS
        check_afterwards(servers, flood, streams, flooded, since)
        assert worker_pids(servers) == pids, "a pushsvc worker restarted"
    finally:
        for stream in itertools.chain(*streams.values()):
            stream.close()
        if not master.alive():
            redis_cluster.restart(master)  # back as a replica, for the next test


def test_a_live_reshard_of_a_shards_slot_loses_nothing(servers, redis_cluster):
    """The slot of the flooded client's shard moves to another master while events flow, as
    ``redis-cli --cluster reshard`` moves it: first marked migrating, then its keys (the shard's stream
    with all its history) copied over, then handed to the new master.

    What a client sees meanwhile: its stream stays open and gets every event once, in order, with ids
    that keep increasing; publishing goes on (the contract allows a 503 for a moment, never a 202 that is
    lost; on this machine every publish was a 202 within a third of a second). A resume from an id of
    before the move gets the events after it, or ``event: reset`` (what it gets today: the shard's new
    master starts a new generation, as after a failover), never a silent gap."""
    flooded = "moving"
    key, bystander, streams = watched(servers, redis_cluster, flooded, "still")
    source = redis_cluster.master_for_key(key)
    target = next(m for m in redis_cluster.masters() if m is not source)
    pids = worker_pids(servers)
    try:
        since = send(servers[1], {"to": flooded, "data": "before"})
        with Flood(servers, body=mixed(flooded, bystander)) as flood:
            assert wait_for(lambda: len(flood.accepted()) >= 20, 20)

            def some_flow() -> None:
                mark = len(flood.answers)
                wait_for(lambda: len(flood.answers) >= mark + 10, 5)
            redis_cluster.move_slot(redis_cluster.slot_of(key), target, during=some_flow, moved=some_flow)
            assert redis_cluster.master_for_key(key) is target
            before = len(flood.answers)
            assert wait_for(lambda: flood.accepted_since(before) >= 20, RECOVERY_SECONDS), \
                flood.answers[before:][-20:]
        with target.client() as direct:
            assert direct.xlen(key) >= len(flood.accepted_for(partial(addressed_to, flooded)))
        check_afterwards(servers, flood, streams, flooded, since)
        assert worker_pids(servers) == pids, "a pushsvc worker restarted"
    finally:
        for stream in itertools.chain(*streams.values()):
            stream.close()
