"""The scenarios: each runs the C load generator against a freshly started server.

- ``unicast-rate-<N>``: open loop, a fixed 1,000 publishes a second over 4 keep-alive connections, one
  event to one of N streams each (the rate a real backend publishes at, well below saturation).
- ``unicast-closed``: the same publishes in a closed loop (always one in flight per connection).
- ``batch``: 100 events per publish, closed loop. ``broadcast-<N>``: 20 events at 2 a second to N streams.
- ``push-send``: another process calls ``Push.send`` over Redis, one event at a time (or in batches).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .common import BENCH, LOADGEN, OUT, log, speed_probe, stop
from .servers import Redis, Server, pushsvc

UNICAST_RATE = 1000        # publishes a second, open loop
BROADCAST_RATE, BROADCAST_EVENTS = 2, 20


def loadgen(server: Server, label: str, streams: int, mode: str = "none", *, layout: str = "broadcast",
            extra: tuple[str, ...] = (), timeout: float = 600, settle: bool = True,
            cpu_with_redis: bool = True) -> dict:
    kind = "broadcast" if mode == "broadcast" else "unicast"
    cmd = [str(LOADGEN), "--port", str(server.port), "--streams", str(streams), "--label", label,
           "--sub", server.sub[layout], "--mode", mode, "--body", server.body[kind],
           "--pub-path", server.publish[kind], "--sources", "8",
           "--cpu-pids", ",".join(map(str, server.cpu_pids(with_redis=cpu_with_redis))),
           "--rss-pids", ",".join(map(str, server.worker_pids())), *extra]
    if server.ready:
        cmd += ["--ready", server.ready]
    probe = speed_probe()
    log(f"{server.name}: {label} (speed probe {probe} ms)")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError) as error:
        result = {"label": label, "error": f"load generator failed: {error!r}"}
    result["system"] = server.name
    result["probe_ms"] = probe
    log(f"  -> {summary(result)}")
    if settle:
        server.settle(streams)
    return result


def summary(r: dict) -> str:
    if "error" in r:
        return r["error"]
    return (f"ready {r['ready']}/{r['streams']} in {r['connect_s']:.2f}s, {r['received']}/{r['expected']} "
            f"delivered, lost {r['lost']}, {r['per_server_cpu_s']:.0f}/server-cpu-s, "
            f"{r['per_wall_s']:.0f}/wall-s, p99 {r['p99_ms']} ms (max {r['max_ms']}), own cpu "
            f"{r['own_cpu_s']:.2f}s vs server {r['server_cpu_s']:.2f}s")


def broadcast(server: Server, n: int, events: int = BROADCAST_EVENTS) -> dict:
    return loadgen(server, f"broadcast-{n}", n, "broadcast", settle=False,
                   extra=("--rate", str(BROADCAST_RATE), "--count", str(events), "--settle", "2",
                          "--drain", "60", "--pub-conns", "2"))


def unicast_rate(server: Server, n: int, seconds: float, label: str | None = None) -> dict:
    return loadgen(server, label or f"unicast-rate-{n}", n, "unicast", layout="unicast", settle=False,
                   extra=("--rate", str(UNICAST_RATE), "--duration", str(seconds), "--pub-conns", "4",
                          "--settle", "2", "--drain", "30"))


def plan(quick: bool) -> tuple[dict[str, Callable[[Server], dict]], dict[str, int]]:
    """The side-by-side scenarios by name, and the N of each size."""
    sizes = {"small": 200, "mid": 500, "big": 1000} if quick else {"small": 1000, "mid": 5000, "big": 10_000}
    secs = 3 if quick else 10
    events = 6 if quick else BROADCAST_EVENTS
    scenarios: dict[str, Callable[[Server], dict]] = {}
    for size, n in sizes.items():
        scenarios[f"unicast-rate-{size}"] = lambda server, n=n: unicast_rate(server, n, secs)
    for size, n in sizes.items():
        scenarios[f"broadcast-{size}"] = lambda server, n=n: broadcast(server, n, events)
    scenarios["unicast-closed"] = lambda server: loadgen(
        server, "unicast-closed", sizes["small"], "unicast", layout="unicast", settle=False,
        extra=("--duration", str(secs), "--pub-conns", "4", "--drain", "30"))
    scenarios["batch"] = lambda server: loadgen(
        server, "batch-100", sizes["small"], "batch", layout="unicast", settle=False,
        extra=("--duration", str(secs), "--pub-conns", "2", "--batch", "100", "--drain", "30"))
    return scenarios, sizes


def side_by_side(systems: dict[str, Callable[[], Server]], quick: bool,
                 only: set[str] | None = None) -> dict[str, dict[str, dict]]:
    """Every scenario on a freshly started server of each system, the systems one after the other, so
    all of them see the same machine load (and idle memory is not flattered by an earlier scenario)."""
    scenarios, _ = plan(quick)
    results: dict[str, dict[str, dict]] = {name: {} for name in systems}
    for scenario, run in scenarios.items():
        if only and scenario not in only:
            continue
        for name, make in systems.items():
            server = make()
            if scenario == "batch" and not server.batch:
                continue
            results[name][scenario] = fresh(server, run)
    return results


def fresh(server: Server, run: Callable[[Server], dict]) -> dict:
    server.start()
    try:
        result = run(server)
        time.sleep(1)
        return result
    finally:
        server.stop()


def redis_part(quick: bool) -> dict[str, dict]:
    """pushsvc on a private Redis, one worker: the fixed-rate unicast and the broadcast at N = 5,000, and
    ``Push.send`` from another process, one event at a time and in batches of 1,000."""
    n, secs = (500, 3) if quick else (5000, 10)
    out = {
        "unicast-rate": fresh(pushsvc(1, Redis()), lambda s: unicast_rate(s, n, secs)),
        "broadcast": fresh(pushsvc(1, Redis()), lambda s: broadcast(s, n, 6 if quick else BROADCAST_EVENTS)),
    }
    count = 1000 if quick else 5000
    out["push-send"] = fresh(pushsvc(1, Redis()), lambda s: push_send(s, 1000, count, batch=1))
    out["push-send-batch"] = fresh(pushsvc(1, Redis()), lambda s: push_send(s, 1000, count * 4, batch=1000))
    return out


def push_send(server: Server, streams: int, count: int, *, batch: int, rate: float = 1000) -> dict:
    """``Push.send`` over Redis from another process; the CPU counted is the SSE worker's alone."""
    calls_per_s = rate if batch == 1 else rate / 10
    seconds = count / batch / calls_per_s
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        start_file = Path(tmp, "go")
        publisher = subprocess.Popen(
            [sys.executable, str(BENCH / "push_send.py"), "--broker-url", server.redis.url, "--start-file",
             str(start_file), "--count", str(count), "--targets", str(streams), "--rate", str(calls_per_s),
             "--batch", str(batch)], start_new_session=True)
        try:
            return loadgen(server, f"push-send-{'batch' + str(batch) if batch > 1 else 'single'}", streams,
                           "external", layout="unicast", settle=False, cpu_with_redis=False,
                           extra=("--count", str(count), "--start-file", str(start_file), "--settle", "2",
                                  "--duration", str(seconds + 5), "--drain", "30"))
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                publisher.wait(timeout=10)
            stop(publisher)
