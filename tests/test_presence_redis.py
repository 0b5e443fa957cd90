"""Presence transitions with Redis across gunicorn masters: a move between them is no transition, a
worker killed without a word has its clients go offline within the expiry plus the grace, and every
transition is reported once for the whole service."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from .helpers import wait_for
from .hooklog import PRESENCE_APP, HookLog, presence_env
from .servers import Gunicorn, RedisServer
from .sse import RawStream

# The contract's bound for a dead worker's clients: the presence expiry (the liveness key's TTL, plus the
# sweep's dead-worker check every 2 s) plus the grace used here. The TTL is a third of the default 15 s,
# so the killed worker's test waits seconds; the bound is twice the TTL, as the contract's 30 s is for 15.
PRESENCE_TTL_SECONDS = 5
EXPIRY_SECONDS = 2 * PRESENCE_TTL_SECONDS
GRACE_SECONDS = 2
SLACK_SECONDS = 5


@pytest.fixture(scope="module")
def masters() -> Iterator[tuple[Gunicorn, Gunicorn, HookLog, RedisServer]]:
    """Two gunicorn masters (one worker each) on one private Redis, writing to one hook log."""
    log = HookLog()
    redis = RedisServer().start()
    env = presence_env(log, grace=GRACE_SECONDS, PUSHSVC_BROKER_URL=redis.url,
                       PUSHSVC_PRESENCE_TTL_SECONDS=str(PRESENCE_TTL_SECONDS))
    try:
        with Gunicorn(app=PRESENCE_APP, env=env) as one, Gunicorn(app=PRESENCE_APP, env=env) as two:
            yield one, two, log, redis
    finally:
        redis.cleanup()
        log.remove()


def visit(server: Gunicorn, client: str) -> RawStream:
    stream = RawStream(server.port, f"/sse/subscribe/{client}")
    assert stream.read_until(b"retry:"), stream.body
    return stream


def test_a_client_moving_to_another_master_within_the_grace_is_no_transition(masters):
    one, two, log, _ = masters
    mover, marker = visit(one, "mover"), visit(one, "move-marker")
    log.wait("online", "mover")
    log.wait("online", "move-marker")
    mover.close()
    marker.close()  # its offline falls due just after the mover's would
    moved = visit(two, "mover")
    log.wait("offline", "move-marker")
    assert log.transitions("mover") == ["online"]
    assert {e["pid"] for e in log.entries("connect", "mover")} == {one.worker_pids()[0], two.worker_pids()[0]}
    moved.close()
    log.wait("offline", "mover")
    assert log.transitions("mover") == ["online", "offline"]


def test_tabs_on_both_masters_are_one_client(masters):
    one, two, log, _ = masters
    tabs = [visit(one, "two-tabs"), visit(two, "two-tabs"), visit(one, "two-tabs")]
    log.wait("online", "two-tabs")
    tabs[0].close()
    tabs[1].close()
    log.wait("disconnect", "two-tabs", 2)
    probe = visit(two, "tabs-probe")
    probe.close()
    log.wait("offline", "tabs-probe")
    assert log.transitions("two-tabs") == ["online"]
    tabs[2].close()
    log.wait("offline", "two-tabs")


def test_the_clients_of_a_killed_worker_go_offline_within_expiry_and_grace(masters):
    one, two, log, _ = masters
    survivor = visit(two, "survivor")
    victim = visit(one, "victim")
    log.wait("online", "victim")
    log.wait("online", "survivor")
    pid = one.worker_pids()[0]
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    victim.close()
    log.wait("offline", "victim", timeout=EXPIRY_SECONDS + GRACE_SECONDS + SLACK_SECONDS)
    assert time.monotonic() - killed <= EXPIRY_SECONDS + GRACE_SECONDS
    assert log.transitions("victim") == ["online", "offline"]
    assert log.transitions("survivor") == ["online"]
    survivor.close()
    log.wait("offline", "survivor")


def test_each_transition_is_reported_once_for_the_whole_service(masters):
    _, _, log, _ = masters
    transitions = [e for e in log.entries() if e["hook"] in ("online", "offline")]
    assert transitions
    ids = [e["id"] for e in transitions]
    assert len(ids) == len(set(ids)), "a transition was reported twice"
    for client in {e["client"] for e in transitions}:
        states = log.transitions(client)
        assert states == ["online", "offline"] * (len(states) // 2) + ["online"] * (len(states) % 2), client


def test_after_redis_restarts_empty_a_client_still_comes_and_goes(masters):
    one, two, log, redis = masters
    held = visit(two, "held-over")
    log.wait("online", "held-over")
    redis.restart()  # the same port, nothing kept: counts, consumer groups and the stream are gone
    # The workers write their whole state again (held-over may be reported online once more: at least
    # once) and the consumer groups start again from the new stream.
    assert wait_for(lambda: visit_ok(one, "after-restart"), 30)
    log.wait("online", "after-restart", timeout=30)
    log.wait("offline", "after-restart", timeout=30)
    held.close()
    log.wait("offline", "held-over", timeout=30)


def visit_ok(server: Gunicorn, client: str) -> bool:
    """Open and close a stream of ``client``; whether it was a stream (not a soft refusal)."""
    stream = RawStream(server.port, f"/sse/subscribe/{client}")
    try:
        return stream.read_until(b"retry:") and b"event: busy" not in stream.read_for(0.2)
    finally:
        stream.close()
