"""The parts beyond the side-by-side table: Redis scaling over workers, the soak, and py-spy profiles."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        spy_cmd = [spy, "record", "--pid", str(worker), "--duration", str(seconds), "--format", "raw",
                   "--rate", "250", "--output", str(out), *(["--native"] if native else [])]
        recorder: list[subprocess.Popen] = []

        def record_once_connected() -> None:
            # The publish phase only: py-spy starts when the server holds every stream.
            deadline = time.monotonic() + 300
            while (server.streams() or 0) < n and time.monotonic() < deadline:
                time.sleep(0.2)
            recorder.append(subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL))

        waiter = threading.Thread(target=record_once_connected, daemon=True)
        waiter.start()
        if name.startswith("broadcast"):
            result = broadcast(server, n, BROADCAST_EVENTS)
        else:
            result = unicast_rate(server, n, seconds + 4, label=name)
        waiter.join(timeout=10)
        for process in recorder:
            process.wait(timeout=120)
        if redis:
            log(f"CPU seconds from the start: worker {cpu_seconds(worker):.2f}, its Redis "
                f"{cpu_seconds(server.redis.proc.pid):.2f}; {result.get('received', 0):,} delivered")
    finally:
        server.stop()
    log(f"profile written to {out}; summary: python bench/profile_summary.py {out}")
