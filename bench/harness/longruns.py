"""The parts beyond the side-by-side table: Redis scaling over workers, the soak, and py-spy profiles."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from .common import log
from .scenarios import BROADCAST_EVENTS, broadcast, fresh, loadgen, unicast_rate
from .servers import Redis, pushsvc

BROADCAST_DELIVERIES_PER_S = 25_000   # the soak's offered load


def redis_scaling(quick: bool) -> dict:
    """The same saturating broadcast load on 1 and 2 workers with the Redis broker."""
    n, secs = (500, 3) if quick else (5000, 15)
    out: dict = {}
    for workers in (1, 2):
        broker = Redis()
        server = pushsvc(workers, broker)
        server.start()
        peak = [0]
        done = threading.Event()

        def watch(broker: Redis = broker, peak: list = peak, done: threading.Event = done) -> None:
            while not done.wait(0.5):
                with contextlib.suppress(OSError, ValueError):
                    peak[0] = max(peak[0], broker.clients())

        threading.Thread(target=watch, daemon=True).start()
        try:
            loadgen(server, f"redis-{workers}w-hold-{n // 10}", n // 10, "none", extra=("--settle", "2"))
            small_peak, peak[0] = peak[0], 0
            result = loadgen(server, f"redis-{workers}w-broadcast-{n}", n, "broadcast",
                             extra=("--rate", "0", "--window", "256", "--duration", str(secs),
                                    "--settle", "3", "--drain", "30", "--pub-conns", "32"))
            result.update(redis_clients_small=small_peak, redis_clients_big=peak[0],
                          redis_clients_small_n=n // 10)
            out[workers] = result
        finally:
            done.set()
            server.stop()
    return out


def soak(minutes: float) -> dict:
    n = 5000
    rate = BROADCAST_DELIVERIES_PER_S / n
    return fresh(pushsvc(), lambda server: loadgen(
        server, f"soak-{n}-{minutes:g}min", n, "broadcast", settle=False,
        extra=("--rate", f"{rate:g}", "--duration", str(minutes * 60), "--settle", "2",
               "--sample-every", "30", "--drain", "60"), timeout=minutes * 60 + 600))


PROFILES = ("unicast-rate-5000", "unicast-rate-10000", "broadcast-5000", "redis-unicast-rate-5000")


def profile(name: str, out: Path, *, native: bool = False) -> None:
    """py-spy (``record``, raw collapsed stacks) of the pushsvc worker during one of :data:`PROFILES`.

    ``native`` adds C frames; py-spy 0.4 panics with it on this machine, so it is off by default.
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    redis = name.startswith("redis-")
    server = pushsvc(1, Redis()) if redis else pushsvc()
    n = int(name.rsplit("-", 1)[1])
    seconds = 10
    server.start()
    try:
        worker = server.worker_pids()[0]
        spy_cmd = [spy, "record", "--pid", str(worker), "--duration", str(seconds + 8), "--format", "raw",
                   "--rate", "250", "--output", str(out), *(["--native"] if native else [])]
        # Started with the scenario, so it includes the connect storm (several seconds at 10,000).
        recorder = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL)
        if name.startswith("broadcast"):
            broadcast(server, n, BROADCAST_EVENTS)
        else:
            unicast_rate(server, n, seconds, label=name)
        recorder.wait(timeout=120)
    finally:
        server.stop()
    log(f"profile written to {out}; summary: python bench/profile_summary.py {out}")
