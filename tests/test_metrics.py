"""``GET /metrics`` after a known sequence of connects, publishes, resumes and a slow-client disconnect.

The server is gunicorn from ``gunicorn.conf.py``, so metrics go through prometheus_client's
multiprocess files exactly as in production, even with one worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import publisher, wait_for
from .servers import Gunicorn
from .sse import RawStream

BIG = "x" * 60_000


@pytest.fixture(scope="module")
def metered() -> Iterator[Gunicorn]:
    # A tiny per-connection queue, so one client that stops reading is cut off quickly.
    env = {"PUSHSVC_HEARTBEAT_SECONDS": "1", "PUSHSVC_QUEUE_SIZE": "4", "PUSHSVC_WRITE_TIMEOUT_SECONDS": "2",
           # The access log on, as a deployer may run it: it must not show tokens either.
           "PUSHSVC_ACCESS_LOG": "-"}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


def scrape(server: Gunicorn) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = httpx.get(server.url("/metrics"), timeout=5)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counts_follow_a_known_sequence(metered):
    http = httpx.Client(base_url=metered.base, timeout=5)
    a = RawStream(metered.port, "/sse/subscribe/met-a")
    b = RawStream(metered.port, "/sse/subscribe/met-b?group=met-g")
    try:
        assert a.read_until(b"retry:") and b.read_until(b"retry:")
        assert wait_for(lambda: value(scrape(metered), "pushsvc_connections") == 2)
        for body in ({"to": "met-a", "data": "1"}, {"group": "met-g", "data": "2"},
                     {"broadcast": True, "data": "3"}, {"prefix": "met-", "data": "4"}):
            assert http.post("/sse/publish", json=body).status_code == 202
        assert http.post("/sse/publish", json={"to": "nobody", "event": "close"}).status_code == 400
        assert a.read_until(b"data: 4\n") and b.read_until(b"data: 4\n")

        m = scrape(metered)
        assert value(m, "pushsvc_connections_opened_total") == 2
        assert value(m, "pushsvc_connections_closed_total") == 0
        for kind in ("to", "group", "all", "prefix"):
            assert value(m, "pushsvc_events_published_total", target=kind) == 1, kind
        assert value(m, "pushsvc_events_delivered_total", target="to") == 1
        assert value(m, "pushsvc_events_delivered_total", target="group") == 1
        assert value(m, "pushsvc_events_delivered_total", target="all") == 2
        assert value(m, "pushsvc_events_delivered_total", target="prefix") == 2
        # The refused publish never reached the broker: four timed publishes, no broker error.
        assert value(m, "pushsvc_publish_seconds_count") == 4
        assert value(m, "pushsvc_publish_seconds_bucket", le="+Inf") == 4
        assert value(m, "pushsvc_broker_errors_total") == 0
        first_id = next(e for e in a.events() if e.data == "1").id
    finally:
        a.close()
        b.close()
    assert wait_for(lambda: value(scrape(metered), "pushsvc_connections") == 0)
    assert value(scrape(metered), "pushsvc_connections_closed_total") == 2

    # A resume inside the history replays two events (group 2 went to met-b only); a foreign id resets.
    resumed = RawStream(metered.port, "/sse/subscribe/met-a", {"Last-Event-ID": first_id})
    lost = RawStream(metered.port, "/sse/subscribe/met-a", {"Last-Event-ID": "0-1"})
    try:
        assert resumed.read_until(b"data: 4\n")
        assert lost.read_until(b"event: reset")
        m = scrape(metered)
        assert value(m, "pushsvc_replays_total") == 2
        assert value(m, "pushsvc_replayed_events_total") == 2
        assert value(m, "pushsvc_resets_total", reason="unknown-id") == 1
    finally:
        resumed.close()
        lost.close()
    assert wait_for(lambda: value(scrape(metered), "pushsvc_connections") == 0)
    http.close()


def test_slow_client_is_counted_once(metered):
    http = httpx.Client(base_url=metered.base, timeout=10)
    slow = RawStream(metered.port, "/sse/subscribe/met-slow", rcvbuf=4096)
    try:
        assert slow.read_until(b"retry:")
        before = scrape(metered)

        def cut_off() -> bool:
            http.post("/sse/publish", json=[{"to": "met-slow", "data": BIG}] * 20)
            return value(scrape(metered), "pushsvc_slow_disconnects_total", reason="queue full") > 0

        # The socket buffers fill first (a few MB on loopback), then the 4-event queue.
        assert wait_for(cut_off, 20, interval=0.01)
        m = scrape(metered)
        assert value(m, "pushsvc_slow_disconnects_total", reason="queue full") == 1
        assert value(m, "pushsvc_connections") == 0
        assert (value(m, "pushsvc_connections_closed_total")
                == value(before, "pushsvc_connections_closed_total") + 1)
        assert "cut off slow client met-slow worker=" in metered.output()
    finally:
        slow.close()
        http.close()


def test_log_lines_carry_client_worker_duration_and_events(metered):
    with httpx.Client(base_url=metered.base, timeout=5) as http:
        s = RawStream(metered.port, "/sse/subscribe/met-log?token=secret-token-value")
        assert s.read_until(b"retry:")
        http.post("/sse/publish", json={"to": "met-log", "data": "hello"})
        assert s.read_until(b"data: hello\n")
        s.close()
        assert wait_for(lambda: "disconnect met-log" in metered.output())
    pid = metered.worker_pids()[0]
    lines = [ln for ln in metered.output().splitlines() if "met-log" in ln]
    assert any(f"connect met-log groups= worker={pid}" in ln for ln in lines), lines
    assert any(f"disconnect met-log worker={pid} after " in ln and " 1 events: " in ln for ln in lines), lines
    assert "GET /sse/subscribe/met-log HTTP/1.1" in metered.output()  # the access line, without its query
    assert "secret-token-value" not in metered.output()


def test_metrics_is_prometheus_text_with_help(metered):
    text = httpx.get(metered.url("/metrics"), timeout=5).text
    for name in ("pushsvc_connections", "pushsvc_events_published_total", "pushsvc_events_delivered_total",
                 "pushsvc_slow_disconnects_total", "pushsvc_replays_total", "pushsvc_resets_total",
                 "pushsvc_broker_errors_total", "pushsvc_publish_seconds"):
        assert f"# HELP {name} " in text, name
        assert f"# TYPE {name} " in text, name
    healthz = httpx.get(metered.url("/healthz"), timeout=5).json()
    assert healthz["status"] == "ok" and healthz["broker"] == "memory"


def test_two_workers_add_up_and_a_dead_worker_stops_counting(redis_server):
    env = {"PUSHSVC_BROKER_URL": redis_server.url, "PUSHSVC_HEARTBEAT_SECONDS": "1"}
    with Gunicorn(workers=2, env=env) as server:
        streams = [RawStream(server.port, f"/sse/subscribe/met-two-{i}") for i in range(12)]
        try:
            for s in streams:
                assert s.read_until(b"retry:")
            with httpx.Client(base_url=server.base, timeout=5) as http:
                for i in range(3):
                    reply = http.post("/sse/publish", json={"prefix": "met-two-", "data": f"x{i}"})
                    assert reply.status_code == 202
            assert all(s.read_until(b"data: x2\n") for s in streams)
            # Whichever worker answers the scrape, it reports both workers' counts.
            for _ in range(6):
                m = scrape(server)
                assert value(m, "pushsvc_connections") == 12
                assert value(m, "pushsvc_events_published_total", target="prefix") == 3
                assert value(m, "pushsvc_events_delivered_total", target="prefix") == 36
            # The worker holding more streams (more sockets open) is killed without a chance to drain.
            victim = max(server.worker_pids(), key=sockets_of)
            os.kill(victim, signal.SIGKILL)
            # Its streams are gone with it: the gauge drops at once (child_exit), the counters stay.
            assert wait_for(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2, 10)
            # The survivors are the streams that still get events; the victim's others have ended.
            with httpx.Client(base_url=server.base, timeout=5) as http:
                publisher(http.post, prefix="met-two-")("after the kill")
            survivors = [s for s in streams if s.read_until(b"data: after the kill\n\n")]
            assert all(s.closed for s in streams if s not in survivors)
            assert len(survivors) <= 6
            assert wait_for(lambda: value(scrape(server), "pushsvc_connections") == len(survivors), 10)
            delivered = value(scrape(server), "pushsvc_events_delivered_total", target="prefix")
            assert delivered == 36 + len(survivors)
        finally:
            for s in streams:
                s.close()


def sockets_of(pid: int) -> int:
    """How many sockets a process has open (its streams, plus a few of its own)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def test_metrics_in_process_without_gunicorn():
    # No PROMETHEUS_MULTIPROC_DIR here: the same families, read from the process's own registry.
    from pushsvc import create_app

    app = create_app(heartbeat_seconds=1)
    reply = app.test_client().get("/metrics")
    assert reply.status_code == 200
    assert reply.content_type.startswith("text/plain")
    assert b'pushsvc_events_published_total{target="to"}' in reply.data
    assert b"pushsvc_publish_seconds_bucket" in reply.data
