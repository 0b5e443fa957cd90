"""A small run of the benchmark's load generator (bench/loadgen.c) against a real server.

Not a benchmark: it checks that the tool counts what it should (every delivery, nothing lost, the server's
CPU read from /proc), so a broken generator cannot report a good-looking result.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from .servers import ROOT, Gunicorn, require

BODY = {"broadcast": '{"broadcast":true,"data":"$D"}', "unicast": '{"to":"c$I","data":"$D"}'}


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = require("gcc", "PUSHSVC_REQUIRE_GCC")
    binary = tmp_path_factory.mktemp("bench") / "ssebench"
    subprocess.run([gcc, "-O2", "-Wall", "-Werror", "-o", str(binary), str(ROOT / "bench" / "loadgen.c")],
                   check=True)
    return binary


@pytest.fixture(scope="module")
def bench_server() -> Gunicorn:
    with Gunicorn(env={"PUSHSVC_LOG_LEVEL": "warning"}) as server:
        yield server


def run(loadgen: Path, server: Gunicorn, *args: str) -> dict:
    pids = ",".join(str(p) for p in [server.proc.pid, *server.worker_pids()])
    out = subprocess.run([str(loadgen), "--port", str(server.port), "--cpu-pids", pids,
                          "--rss-pids", pids, "--settle", "0.2", "--drain", "10", *args],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_broadcast_counts_every_delivery(loadgen: Path, bench_server: Gunicorn) -> None:
    result = run(loadgen, bench_server, "--streams", "40", "--mode", "broadcast", "--body", BODY["broadcast"],
                 "--rate", "40", "--count", "20", "--sources", "2")
    assert result["ready"] == result["holding"] == 40
    assert result["events_ok"] == 20
    assert result["expected"] == result["received"] == 800
    assert result["lost"] == result["duplicates"] == result["foreign_marks"] == 0
    assert 0 <= result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["server_cpu_s"] > 0 and result["rss_idle_kb"] > 0


def test_unicast_and_batch_reach_their_own_stream(loadgen: Path, bench_server: Gunicorn) -> None:
    unicast = run(loadgen, bench_server, "--streams", "20", "--mode", "unicast", "--body", BODY["unicast"],
                  "--count", "60", "--pub-conns", "2")
    assert unicast["events_ok"] == unicast["received"] == 60 and unicast["lost"] == 0
    batch = run(loadgen, bench_server, "--streams", "20", "--mode", "batch", "--body", BODY["unicast"],
                "--batch", "25", "--count", "100")
    assert batch["requests"] == 4 and batch["events_ok"] == batch["received"] == 100
    assert batch["lost"] == batch["duplicates"] == 0


def test_a_refused_publish_is_counted_not_delivered(loadgen: Path, bench_server: Gunicorn) -> None:
    result = run(loadgen, bench_server, "--streams", "5", "--mode", "unicast", "--body", '{"to":"c$I"}',
                 "--count", "3")
    assert result["publish_errors"] == 3 and result["events_ok"] == result["received"] == 0


def test_a_fixed_rate_is_kept_without_spinning(loadgen: Path, bench_server: Gunicorn) -> None:
    result = run(loadgen, bench_server, "--streams", "20", "--mode", "unicast", "--body", BODY["unicast"],
                 "--rate", "200", "--duration", "1", "--pub-conns", "4")
    # Open loop: never more than the rate allows, and the generator sleeps between publishes.
    assert 0 < result["events_ok"] <= 201
    assert result["received"] == result["events_ok"] and result["lost"] == 0
    assert result["own_cpu_s"] < 0.5


def test_an_external_publisher_is_counted(loadgen: Path, bench_server: Gunicorn, tmp_path: Path) -> None:
    start = tmp_path / "go"
    marks = [f"@T{time.monotonic_ns() // 1000:016d};S{seq:08d};" for seq in range(5)]
    publisher = threading.Thread(target=publish_when, args=(start, bench_server.port, marks), daemon=True)
    publisher.start()
    result = run(loadgen, bench_server, "--streams", "5", "--mode", "external", "--count", "5",
                 "--start-file", str(start), "--sub", "/sse/subscribe/c$I", "--duration", "20")
    publisher.join(timeout=30)
    assert result["received"] == result["expected"] == 5 and result["lost"] == result["timed_out"] == 0


def publish_when(start: Path, port: int, marks: list[str]) -> None:
    """Publish one marker to each stream c<i> once the load generator has created ``start``."""
    deadline = time.monotonic() + 30
    while not start.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    for index, mark in enumerate(marks):
        body = json.dumps({"to": f"c{index}", "data": mark}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/sse/publish", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10):
            pass
