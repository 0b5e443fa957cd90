"""A small run of the benchmark's load generator (bench/loadgen.c) against a real server.

Not a benchmark: it checks that the tool counts what it should (every delivery, nothing lost, the server's
CPU read from /proc), so a broken generator cannot report a good-looking result.
"""

from __future__ import annotations

import json
import subprocess
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
