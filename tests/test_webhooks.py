"""Presence webhooks against a receiver in the test: signed batches, retried until taken, never lost
when workers die with Redis, each transition once for the whole service."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from .helpers import wait_for
from .hooklog import PRESENCE_APP, HookLog, presence_env
from .receiver import Receiver
from .servers import Gunicorn, RedisServer
from .sse import RawStream

SECRET = "webhook-secret-for-tests"


def webhook_env(log: HookLog, receiver: Receiver, redis: RedisServer | None = None) -> dict[str, str]:
    env = presence_env(log, PUSHSVC_WEBHOOK_URL=receiver.url, PUSHSVC_WEBHOOK_SECRET=SECRET)
    if redis is not None:
        env["PUSHSVC_BROKER_URL"] = redis.url
    return env


@pytest.fixture
def log() -> Iterator[HookLog]:
    hooks = HookLog()
    yield hooks
    hooks.remove()


def visit(server: Gunicorn, client: str) -> RawStream:
    stream = RawStream(server.port, f"/sse/subscribe/{client}")
    assert stream.read_until(b"retry:"), stream.body
    return stream


def by_time(events: list[dict]) -> list[str]:
    return [e["type"] for e in sorted(events, key=lambda e: (e["time"], e["type"] == "offline"))]


def test_memory_broker_webhook_retries_until_the_receiver_takes_it(log):
    with Receiver(SECRET, fail_first=3) as receiver, Gunicorn(app=PRESENCE_APP,
                                                               env=webhook_env(log, receiver)) as server:
        visit(server, "wm-1").close()
        assert wait_for(lambda: len(receiver.of("wm-1")) == 2, 30), receiver.events
        assert receiver.failed == 3 and receiver.bad_signatures == 0
        assert by_time(receiver.of("wm-1")) == ["online", "offline"]
        hooked = {e["id"] for e in log.entries(client="wm-1") if e["hook"] in ("online", "offline")}
        assert hooked == {e["id"] for e in receiver.of("wm-1")}
        # Now that it answers, a transition arrives within a second of being decided.
        visit(server, "wm-2").close()
        assert wait_for(lambda: len(receiver.of("wm-2")) == 2, 15)
        assert all(e["received"] - e["time"] <= 1000 for e in receiver.of("wm-2")), receiver.of("wm-2")
        metrics = httpx.get(server.url("/metrics"), timeout=10).text
        assert "pushsvc_webhook_retries_total 3.0" in metrics
        assert 'pushsvc_presence_transitions_total{scope="client",type="online"} 2.0' in metrics




def test_two_masters_report_each_transition_once_and_a_failing_receiver_gets_every_one(log, redis_server):
    with Receiver(SECRET, fail_first=4) as receiver:
        env = webhook_env(log, receiver, redis_server)
        with Gunicorn(app=PRESENCE_APP, env=env, workers=2) as one, \
                Gunicorn(app=PRESENCE_APP, env=env, workers=2) as two:
            clients = [f"wt-{n}" for n in range(6)]
            streams = [visit(one if n % 2 else two, client) for n, client in enumerate(clients)]
            for stream in streams:
                stream.close()
            for client in clients:
                assert wait_for(lambda c=client: len(receiver.of(c)) >= 2, 40), \
                    (client, receiver.types(client), log.transitions(client), one.output()[-3000:],
                     two.output()[-3000:])
                log.wait("offline", client)
            assert receiver.failed == 4 and receiver.bad_signatures == 0
            for client in clients:
                assert by_time(receiver.of(client)) == ["online", "offline"]
                assert log.transitions(client) == ["online", "offline"]
            ids = [e["id"] for e in log.entries() if e["hook"] in ("online", "offline")]
            assert len(ids) == len(set(ids)) == 2 * len(clients)
            assert {e["id"] for e in receiver.events} == set(ids)
            assert len(Counter(e["pid"] for e in log.entries("online"))) >= 1


def test_transitions_held_by_workers_that_die_reach_the_receiver_later(log, redis_server):
    with Receiver(SECRET) as receiver:
        receiver.down = True
        # The dead workers' transitions wait for their liveness keys to expire: 5 s here, not 15 s.
        env = {**webhook_env(log, receiver, redis_server), "PUSHSVC_PRESENCE_TTL_SECONDS": "5"}
        with Gunicorn(app=PRESENCE_APP, env=env) as one, Gunicorn(app=PRESENCE_APP, env=env) as two:
            first = [visit(server, f"wd-waker-{server.port}") for server in (one, two)]
            visit(one, "wd-1").close()
            log.wait("offline", "wd-1")
            assert wait_for(lambda: receiver.failed >= 2, 15)  # some worker holds it, retrying
            victims = one.worker_pids() + two.worker_pids()
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            for stream in first:
                stream.close()
            # New workers come up; a stream wakes each. Once the dead workers' liveness has expired (5 s)
            # their transitions are taken over, and the receiver, back by then, gets them.
            for server in (one, two):
                assert wait_for(lambda s=server: set(s.worker_pids()) - set(victims), 20)
            receiver.down = False
            wakers = [visit(server, f"wd-waker2-{server.port}") for server in (one, two)]
            # At least once: a batch a killed worker was sending may come again, so dedupe by id.
            def distinct() -> list[dict]:
                return list({e["id"]: e for e in receiver.of("wd-1")}.values())
            assert wait_for(lambda: len(distinct()) >= 2, 45), receiver.events
            assert by_time(distinct()) == ["online", "offline"]
            for stream in wakers:
                stream.close()
