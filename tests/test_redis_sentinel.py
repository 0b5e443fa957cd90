"""Redis behind Sentinel (``redis+sentinel://``): a master, replicas, three sentinels and two gunicorn
servers of two workers each. A failover, asked for or forced by a killed master during a publish flood
(with ``PUSHSVC_REDIS_MIN_REPLICAS=1`` and two replicas, so the new master still has one): every 202 is
delivered, no stream sees a gap or an event twice, events flow again within 30 s, and no
pushsvc process restarts. While no master answers, publish is 503 within a second, open streams keep their
heartbeats, new subscribes are refused softly; a client whose last event was lost with the old master
gets ``event: reset``, and new ids never collide with old ones."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest

from pushsvc.brokers.redis.connect import parse_sentinel_url
from pushsvc.config import ConfigError, Settings

from .flood import Flood, client_connections, healthy, open_streams, ordered, post, two_servers, worker_pids
from .helpers import assert_next_is_marker, publisher, wait_for
from .redis_ha import sentinels
from .servers import Gunicorn, free_port
from .sse import RawStream

# Generous for a loaded 2-core machine; the contract says a second. In a flood through a failover, the
# slowest of a few hundred publishes: a new connection asks a sentinel, connects, runs the script, WAITs.
FAST = 2.0
FLOOD_FAST = 3.0
RECOVERY_SECONDS = 30


@pytest.mark.parametrize("how", ["sentinel-failover", "master-killed"])
def test_a_failover_during_a_publish_flood_delivers_every_202_and_no_gap(how):
    with sentinels(replicas=2) as ha, two_servers(ha.url, PUSHSVC_REDIS_MIN_REPLICAS="1") as servers:
        streams = open_streams(servers, "flood")
        pids = worker_pids(servers)
        old = ha.master_port()
        assert old is not None
        try:
            with Flood(servers, "flood") as flood:
                assert wait_for(lambda: len(flood.accepted()) >= 20, 20)
                before = len(flood.answers)
                started = time.monotonic()
                if how == "sentinel-failover":
                    ha.failover()
                    ha.wait_new_master(old)
                else:
                    ha.kill(old)
                    ha.wait_new_master(old)
                assert wait_for(lambda: flood.accepted_since(before) >= 20, RECOVERY_SECONDS), \
                    flood.answers[before:][-20:]
                recovered = time.monotonic() - started
            answers = flood.answers
            accepted = flood.accepted()
            # A worker may still have to find the new master on its next call: 503 means "try again".
            replies: list[httpx.Response] = []
            assert wait_for(lambda: replies.append(post(servers[0], {"to": "flood", "data": "end"}))
                            or replies[-1].status_code == 202, 10), replies[-1].text
            for stream in streams:
                assert stream.read_until(b"data: end\n", 20), stream.body[-500:]
                seen = [e.id for e in stream.events()]
                assert ordered(seen), "ids out of publish order, or an event twice"
                missing = set(accepted) - set(seen)
                assert not missing, f"{len(missing)} events answered 202 never arrived"
                assert not stream.closed
            assert ordered(accepted)
            # Resuming from before the failover is a reset (the new master cannot tell what the old one
            # took last), never a replay with a hole in it.
            resumed = RawStream(servers[1].port, "/sse/subscribe/flood", {"Last-Event-ID": accepted[0]},
                                timeout=10)
            streams.append(resumed)
            assert resumed.read_until(b"}\n\n", 10), resumed.body[-300:]
            assert resumed.events()[0].event == "reset"
            assert recovered < RECOVERY_SECONDS
            assert any(status != 202 for status, _, _ in answers[before:]) or how == "sentinel-failover"
            slow = [(status, round(took, 2)) for status, _, took in answers if took > FLOOD_FAST]
            assert not slow, f"publishes answered slowly: {slow}"
            assert worker_pids(servers) == pids, "a pushsvc worker restarted"
        finally:
            for stream in streams:
                stream.close()


def test_no_master_is_503_fast_and_lost_events_give_reset_not_a_gap():
    with sentinels() as ha, two_servers(ha.url) as servers:
        first, second = servers
        pids = worker_pids(servers)
        stream = RawStream(first.port, "/sse/subscribe/gap", timeout=10)
        opened = [stream]
        replica = None
        try:
            assert stream.read_until(b"retry:")
            assert wait_for(lambda: client_connections(first, "gap") == 1, 10)
            kept = post(first, {"to": "gap", "data": "kept"}).json()["id"]
            dead = ha.master_port()
            assert dead is not None
            master = ha.node(dead)
            replica = next(n for n in ha.nodes if n.port != dead)
            # "kept" is on the replica; then it follows a server that is not there, so what comes next is
            # on the master alone (Redis replication is asynchronous: this is what a failover can lose).
            assert wait_for(lambda: replica.client().xlen("{pushsvc}:events") == 1, 10)
            replica.client().replicaof("127.0.0.1", free_port())
            assert wait_for(lambda: master.client().info("replication")["connected_slaves"] == 0, 10)
            # Stopped, the replica cannot be chosen (no master at all, for as long as the test needs),
            # nor pointed back at the master by a sentinel before the events it must miss.
            replica.signal(signal.SIGSTOP)
            lost = [post(second, {"to": "gap", "data": f"lost{i}"}).json()["id"] for i in range(2)]
            assert stream.read_until(b"data: lost1\n", 10)
            ha.kill(dead)
            # No master now, and none can be chosen while the replica is stopped.
            for server in (first, second):
                started = time.monotonic()
                refused = post(server, {"to": "gap", "data": "refused"})
                assert refused.status_code == 503 and "error" in refused.json()
                assert time.monotonic() - started < FAST
            assert wait_for(lambda: httpx.get(first.url("/healthz"), timeout=5).status_code == 503, 10)
            newcomer = RawStream(second.port, "/sse/subscribe/gap-new", timeout=10)
            opened.append(newcomer)
            assert newcomer.status == 200 and newcomer.wait_closed(10)
            assert b"event: busy\n" in newcomer.body
            beats = stream.body.count(b": keep-alive\n\n")
            assert stream.read_until(b": keep-alive\n\n", 10, count=beats + 2) and not stream.closed

            replica.signal(signal.SIGCONT)
            ha.wait_new_master(dead)
            started = time.monotonic()
            after = None
            while after is None and time.monotonic() - started < RECOVERY_SECONDS:
                reply = post(first, {"to": "gap", "data": "after"})
                after = reply.json()["id"] if reply.status_code == 202 else time.sleep(0.2)
            assert after is not None, "no publish accepted within 30 s of the failover"
            assert stream.read_until(b"data: after\n", 10)
            assert [e.data for e in stream.events()] == ["kept", "lost0", "lost1", "after"]
            assert ordered([kept, *lost, after]), "a new id must sort after every id handed out before"

            for server in servers:  # every worker's reader has found the new master
                assert wait_for(lambda: healthy(server), 20, interval=0.2)  # noqa: B023
            # Presence and idempotency keys live on the new master too.
            assert wait_for(lambda: client_connections(second, "gap") == 1, 20)
            once = {"json": {"to": "gap", "data": "once"}, "headers": {"Idempotency-Key": "after-failover"}}
            first_try = httpx.post(second.url("/sse/publish"), timeout=10, **once)
            again = httpx.post(first.url("/sse/publish"), timeout=10, **once)
            assert first_try.status_code == again.status_code == 202
            assert again.headers.get("Idempotent-Replayed") == "true"
            assert again.json() == first_try.json()
            assert stream.read_until(b"data: once\n", 10)
            # The new master never had lost1: resuming from it is a reset, never a silent gap.
            resumed = RawStream(second.port, "/sse/subscribe/gap", {"Last-Event-ID": lost[1]}, timeout=10)
            opened.append(resumed)
            assert resumed.read_until(b"event: reset\n"), resumed.body
            assert resumed.read_until(b"}\n\n")
            reset = resumed.events()[0]
            assert json.loads(reset.data) == {"reason": "unknown-id", "lastEventId": lost[1]}
            marker = assert_next_is_marker(resumed, publisher(lambda path, **kw: httpx.post(
                second.url(path), timeout=10, **kw), to="gap"))
            # The new master holds "kept", but cannot know what the old one took after it ("lost0" here):
            # a reset too, never a replay with a hole in it.
            older = RawStream(first.port, "/sse/subscribe/gap", {"Last-Event-ID": kept}, timeout=10)
            opened.append(older)
            assert older.read_until(b"}\n\n")
            assert [(e.event, json.loads(e.data)["lastEventId"]) for e in older.events()] == [("reset", kept)]
            # From an id of the new master's own, resume is exact.
            last = post(first, {"to": "gap", "data": "last"}).json()["id"]
            exact = RawStream(second.port, "/sse/subscribe/gap", {"Last-Event-ID": marker}, timeout=10)
            opened.append(exact)
            assert exact.read_until(b"data: last\n")
            assert [(e.id, e.data) for e in exact.events()] == [(last, "last")]
            assert worker_pids(servers) == pids, "a pushsvc worker restarted"
        finally:
            if replica is not None and replica.proc is not None and replica.proc.poll() is None:
                replica.signal(signal.SIGCONT)
            for s in opened:
                s.close()


@pytest.mark.parametrize(("url", "sentinels_", "master", "db"), [
    ("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster", [("10.0.0.1", 26379), ("10.0.0.2", 26380)],
     "mymaster", 0),
    ("redis+sentinel://sentinel.local/main/3", [("sentinel.local", 26379)], "main", 3),
    ("redis+sentinel://:s3cret@[::1]:5000/m/", [("::1", 5000)], "m", 0),
])
def test_sentinel_urls_are_read(url, sentinels_, master, db):
    target = parse_sentinel_url(url)
    assert (list(target.sentinels), target.master, target.db) == (sentinels_, master, db)


@pytest.mark.parametrize("url", [
    "redis+sentinel://10.0.0.1:26379",             # no master name
    "redis+sentinel://10.0.0.1:port/mymaster",     # not a port
    "redis+sentinel://10.0.0.1:26379,/mymaster",   # an empty host
    "redis+sentinel://10.0.0.1:26379/mymaster/x",  # not a database number
    "redis+sentinel://10.0.0.1:26379/a/1/2",       # too many parts
    "redis+sentinel://:hunter2@h:99999/mymaster",  # port out of range; the password stays out of the error
])
def test_bad_sentinel_urls_are_refused_in_one_line(url):
    with pytest.raises(ConfigError) as error:
        parse_sentinel_url(url)
    assert "PUSHSVC_BROKER_URL" in str(error.value) and "hunter2" not in str(error.value)


def test_min_replicas_must_not_be_negative():
    with pytest.raises(ConfigError, match="PUSHSVC_REDIS_MIN_REPLICAS"):
        Settings.load(redis_min_replicas=-1)


def test_sentinels_that_do_not_answer_stop_start_up_with_one_line():
    url = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/mymaster/0"
    server = Gunicorn(env={"PUSHSVC_BROKER_URL": url})
    with pytest.raises(RuntimeError):
        server.start(timeout=30)
    lines = [ln for ln in server.output().splitlines() if ln.startswith("pushsvc:")]
    assert len(lines) == 1 and "cannot be reached" in lines[0], server.output()
    assert "Traceback" not in server.output()
    server.stop()
