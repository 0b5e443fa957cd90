"""What one HTTP request costs before pushsvc does anything: gunicorn's gevent worker around a bare WSGI
function, around a minimal Flask route, and around pushsvc's publish (no streams open).

    python bench/floor.py [--seconds 8]

Needs ``wrk`` (Debian package ``wrk``). Each server runs alone, one gevent worker; wrk POSTs a 90-byte JSON
body over 4 keep-alive connections; the worker's CPU is read from ``/proc``, so the figures are requests
per worker-CPU-second and CPU microseconds per request.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flask import Flask, jsonify, request

sys.path.insert(0, str(Path(__file__).resolve().parent))

from micro_request import BODY
from run import ROOT, free_port, stop

ANSWER = b'{"id":"1-1","online":0}\n'


def bare(environ: dict, start_response) -> list[bytes]:
    """A WSGI function that reads the body and answers like a publish: the server's own floor."""
    environ["wsgi.input"].read()
    start_response("202 Accepted", [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(ANSWER)))])
    return [ANSWER]


flask_app = Flask(__name__)


@flask_app.post("/sse/publish")
def minimal_publish():
    """The least a Flask route does for a publish: parse the JSON, answer with jsonify."""
    request.get_json()
    return jsonify({"id": "1-1", "online": 0}), 202


def worker_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, cmd: list[str], seconds: float, script: str) -> dict:
    port = free_port()
    env = {**os.environ, "PUSHSVC_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*cmd, "--bind", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        workers: list[int] = []
        while not workers and time.monotonic() < deadline:
            time.sleep(0.2)
            out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
            workers = [int(p) for p in out.split()]
        time.sleep(1)
        before = worker_cpu(workers[0])
        out = subprocess.run(["wrk", "-t1", "-c4", f"-d{seconds:g}s", "-s", script,
                              f"http://127.0.0.1:{port}/sse/publish"],
                             capture_output=True, text=True, timeout=seconds + 30).stdout
        cpu = worker_cpu(workers[0]) - before
    finally:
        stop(proc)
    requests = next(int(line.split()[0]) for line in out.splitlines() if "requests in" in line)
    return {"app": name, "requests": requests, "worker_cpu_s": round(cpu, 2),
            "per_cpu_s": round(requests / cpu), "us_per_request": round(cpu / requests * 1e6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("floor.py needs wrk: apt-get install wrk")
    gunicorn = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1"]
    systems = {
        "bare WSGI function": [*gunicorn, "bench.floor:bare"],
        "minimal Flask route": [*gunicorn, "bench.floor:flask_app"],
        "pushsvc publish, no streams": [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                        "wsgi:app"],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(f"wrk.method = 'POST'\nwrk.body = '{BODY.decode()}'\n"
                     "wrk.headers['Content-Type'] = 'application/json'\n")
        script.flush()
        for name, cmd in systems.items():
            print(json.dumps(measure(name, cmd, args.seconds, script.name)))


if __name__ == "__main__":
    main()
