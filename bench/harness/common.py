"""Paths, logging, the load generator's build, and the machine's state (load, speed probe)."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
OUT = BENCH / "out"
LOADGEN = OUT / "ssebench"
RESULTS = BENCH / "RESULTS.md"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_loadgen() -> None:
    OUT.mkdir(exist_ok=True)
    source = BENCH / "loadgen.c"
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= source.stat().st_mtime:
        return
    log("compiling the load generator")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(LOADGEN), str(source)], check=True)


def stop(proc: subprocess.Popen | None) -> None:
    """Stop a process started in a session of its own, with its children: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def nginx_version() -> str:
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    return out.stderr.strip().rpartition("/")[2] or "?"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return (f"{os.cpu_count()} x {model}, {mem} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def speed_probe() -> float:
    """CPU milliseconds of a fixed pure-Python workload (the median of 5): how fast this shared machine
    runs Python right now. Load average misses a busy neighbour on the same host; this does not."""
    rounds = []
    for _ in range(5):
        started = time.process_time()
        table: dict[str, int] = {}
        for i in range(100_000):
            table[str(i)] = len(table) ^ i
        rounds.append((time.process_time() - started) * 1000)
    return round(sorted(rounds)[2], 1)
