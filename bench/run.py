"""Run every benchmark scenario against pushsvc and flask-sse in one go and write ``bench/RESULTS.md``.

    python bench/run.py                 # everything (the soak lasts --soak-minutes, 30 by default)
    python bench/run.py --quick         # small N, short phases: checks the tooling in a minute

Run it with the project's Python (the one that has pushsvc's dependencies). It compiles the C load
generator with gcc, creates ``bench/out/venv-peer`` with flask-sse from PyPI on first use, starts a
private redis-server for the peer (never on 6379), and starts each server with gunicorn, one gevent
worker. Server CPU is read from ``/proc`` by the load generator, so figures are per server-CPU-second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
LOADGEN = OUT / "ssebench"
PEER_VENV = OUT / "venv-peer"
# gunicorn's gevent worker imports packaging without declaring it.
PEER_PACKAGES = ["flask-sse==1.0.0", "gunicorn", "gevent", "redis", "packaging"]
RESULTS = BENCH / "RESULTS.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

# Offered broadcast load: events per second chosen so every N gets about this many deliveries a second.
BROADCAST_DELIVERIES_PER_S = 25_000


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


def ensure_peer_venv() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not (PEER_VENV / "bin" / "gunicorn").exists() or subprocess.run(
            [python, "-c", "import flask_sse, gevent, redis, packaging"], capture_output=True).returncode:
        log("creating the flask-sse virtualenv (bench/out/venv-peer)")
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def pip_version(python: Path | str, package: str) -> str:
    out = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


# -- processes ---------------------------------------------------------------------------------------


def stop(proc: subprocess.Popen | None) -> None:
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


class Redis:
    """A private redis-server on a free port, nothing on disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="bench-redis-", dir=OUT)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--maxclients", "30000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(100):
            with contextlib.suppress(OSError):
                if self.command("PING").startswith("+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def command(self, *words: str) -> str:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall((" ".join(words) + "\r\n").encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                data += chunk
                complete = data.endswith(b"\r\n") and (not data.startswith(b"$") or data.count(b"\r\n") >= 2)
                if not chunk or complete:
                    break
            return data.decode(errors="replace")

    def clients(self) -> int:
        info = self.command("INFO", "clients")
        for line in info.splitlines():
            if line.startswith("connected_clients:"):
                return int(line.split(":")[1]) - 1   # less this query's own connection
        return -1

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Server:
    """One system under test: a gunicorn arbiter, its workers, and the Redis it depends on (if any)."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    sub: dict[str, str]              # subscribe path template per layout: "broadcast" / "unicast"
    body: dict[str, str]             # publish body template per mode
    publish: str = "/sse/publish"
    ready: str | None = None         # path answering the number of subscribed streams
    redis: Redis | None = None
    workers: int = 1
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    def start(self) -> None:
        self.log_path = OUT / f"{self.name}-{self.port}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([*self.cmd, "--bind", f"127.0.0.1:{self.port}"], cwd=self.cwd,
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            self._wait_started()
        except BaseException:
            self.stop()
            raise

    def _wait_started(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            if len(self.worker_pids()) >= self.workers and self.streams() is not None:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start: {self.log_path.read_text()[-2000:]}")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def cpu_pids(self) -> list[int]:
        pids = [self.proc.pid, *self.worker_pids()]
        return [*pids, self.redis.proc.pid] if self.redis else pids

    def streams(self) -> int | None:
        """Streams the server holds now (to wait for a clean slate between scenarios)."""
        try:
            if self.ready:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.ready}", timeout=5) as r:
                    return int(r.read())
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
                return int(json.loads(r.read())["connections"])
        except (OSError, ValueError):
            return None

    def settle(self, channels: int = 0, timeout: float = 90) -> None:
        """Wait until the server has noticed that the last scenario's streams are gone.

        flask-sse has no heartbeat: a stream learns its client left only when an event is written to it,
        so the peer gets one event without a marker on every channel the scenario used.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} died")
            if self.streams() == 0:
                return
            if self.ready:
                self.purge(channels)
            time.sleep(1)
        log(f"{self.name}: streams still open after {timeout} s")

    def purge(self, channels: int) -> None:
        items = [{"channel": "all", "data": "purge"}, *({"channel": f"c{i}", "data": "purge"}
                                                        for i in range(channels))]
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/publish", json.dumps(items).encode(),
                                         {"Content-Type": "application/json"})
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=30):
            pass

    def stop(self) -> None:
        stop(self.proc)
        if self.redis:
            self.redis.stop()


def pushsvc(workers: int = 1, broker: Redis | None = None) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
    env.update({"PUSHSVC_LOG_LEVEL": "warning", "PUSHSVC_MAX_CONNECTIONS": "10500",
                "PUSHSVC_WORKERS": str(workers), "PYTHONUNBUFFERED": "1"})
    if broker:
        env["PUSHSVC_BROKER_URL"] = broker.url
    return Server(
        name="pushsvc" if not broker else f"pushsvc-redis-{workers}w",
        cmd=[sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], env=env, cwd=ROOT,
        sub={"broadcast": "/sse/subscribe/c$I", "unicast": "/sse/subscribe/c$I"},
        body={"broadcast": '{"broadcast":true,"data":"$D"}', "unicast": '{"to":"c$I","data":"$D"}'},
        redis=broker, workers=workers)


def flask_sse(python: Path) -> Server:
    redis = Redis()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
    env.update({"PEER_REDIS_URL": redis.url, "PYTHONUNBUFFERED": "1"})
    return Server(
        name="flask-sse", cmd=[str(python), "-m", "gunicorn", "-c", "peer_gunicorn.conf.py", "peer_app:app"],
        env=env, cwd=BENCH,
        sub={"broadcast": "/stream?channel=all", "unicast": "/stream?channel=c$I"},
        body={"broadcast": '{"channel":"all","data":"$D"}', "unicast": '{"channel":"c$I","data":"$D"}'},
        publish="/publish", ready="/ready", redis=redis)


# -- scenarios ---------------------------------------------------------------------------------------


def loadgen(server: Server, label: str, streams: int, mode: str = "none", *, layout: str = "broadcast",
            extra: tuple[str, ...] = (), timeout: float = 600, settle: bool = True) -> dict:
    body = server.body["broadcast" if mode == "broadcast" else "unicast"]
    cmd = [str(LOADGEN), "--port", str(server.port), "--streams", str(streams), "--label", label,
           "--sub", server.sub[layout], "--mode", mode, "--body", body, "--pub-path", server.publish,
           "--sources", "8",
           "--cpu-pids", ",".join(map(str, server.cpu_pids())),
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
            f"{r['per_wall_s']:.0f}/wall-s, p99 {r['p99_ms']} ms, own cpu {r['own_cpu_s']:.2f}s "
            f"vs server {r['server_cpu_s']:.2f}s")


def broadcast(server: Server, n: int, seconds: float) -> dict:
    rate = BROADCAST_DELIVERIES_PER_S / n
    return loadgen(server, f"broadcast-{n}", n, "broadcast", settle=False,
                   extra=("--rate", f"{rate:g}", "--duration", str(seconds), "--settle", "2",
                          "--drain", "60", "--pub-conns", "2"))


def scenarios(systems: dict[str, Callable[[], Server]], quick: bool) -> dict[str, dict[str, dict]]:
    """The side-by-side scenarios: connect storm + idle memory, broadcast fan-out, unicast, batch.

    Each scenario runs on a freshly started server (so idle memory is not flattered by memory that an
    earlier scenario left behind), the systems one after the other, so both see the same machine load.
    """
    big, mid, small, secs = (1000, 500, 200, 3) if quick else (10_000, 5_000, 1_000, 10)
    plan: dict[str, Callable[[Server], dict]] = {
        "broadcast-mid": lambda server: broadcast(server, mid, secs),
        "broadcast-big": lambda server: broadcast(server, big, secs),
        "broadcast-small": lambda server: broadcast(server, small, secs),
        "unicast": lambda server: loadgen(
            server, "unicast", small, "unicast", layout="unicast", settle=False,
            extra=("--duration", str(secs), "--pub-conns", "4", "--drain", "30")),
        "batch": lambda server: loadgen(
            server, "batch-100", small, "batch", layout="unicast", settle=False,
            extra=("--duration", str(secs), "--pub-conns", "2", "--batch", "100", "--drain", "30")),
    }
    results: dict[str, dict[str, dict]] = {name: {} for name in systems}
    for scenario, run in plan.items():
        for name, make in systems.items():
            server = make()
            server.start()
            try:
                results[name][scenario] = run(server)
                time.sleep(1)
            finally:
                server.stop()
    return results


def redis_scaling(quick: bool) -> dict | None:
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

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            loadgen(server, f"redis-{workers}w-hold-{n // 10}", n // 10, "none", extra=("--settle", "2"))
            small_peak, peak[0] = peak[0], 0
            result = loadgen(server, f"redis-{workers}w-broadcast-{n}", n, "broadcast",
                             extra=("--rate", "0", "--window", "256", "--duration", str(secs),
                                    "--settle", "3", "--drain", "30", "--pub-conns", "32"))
            result["redis_clients_small"] = small_peak
            result["redis_clients_big"] = peak[0]
            result["redis_clients_small_n"] = n // 10
            out[workers] = result
        finally:
            done.set()
            server.stop()
    return out


def soak(minutes: float) -> dict:
    server = pushsvc()
    server.start()
    try:
        n = 5000
        rate = BROADCAST_DELIVERIES_PER_S / n
        return loadgen(server, f"soak-{n}-{minutes:g}min", n, "broadcast",
                       extra=("--rate", f"{rate:g}", "--duration", str(minutes * 60), "--settle", "2",
                              "--sample-every", "30", "--drain", "60"),
                       timeout=minutes * 60 + 600)
    finally:
        server.stop()


def profile(seconds: float, out: Path) -> None:
    """py-spy on the pushsvc worker during a 5,000-stream broadcast: where its CPU goes."""
    spy = PEER_VENV / "bin" / "py-spy"
    if not spy.exists():
        subprocess.run([PEER_VENV / "bin" / "python", "-m", "pip", "install", "-q", "py-spy"], check=True)
    server = pushsvc()
    server.start()
    try:
        worker = server.worker_pids()[0]
        rec = subprocess.Popen([spy, "record", "--pid", str(worker), "--duration", str(int(seconds)),
                                "--format", "raw", "--rate", "200", "--nonblocking", "--output", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        broadcast(server, 5000, seconds)
        rec.wait(timeout=60)
    finally:
        server.stop()
    log(f"profile written to {out}; summary: python bench/profile_summary.py {out}")


# -- report ------------------------------------------------------------------------------------------


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return (f"{os.cpu_count()} x {model}, {mem} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def fmt(value: float | str | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value < 10:
        return f"{value:.2f}{unit}"
    return f"{value:,.0f}{unit}"


def ratio(ours: float | str | None, theirs: float | str | None, lower_is_better: bool = False) -> str:
    if not ours or not theirs:
        return "—"
    value = theirs / ours if lower_is_better else ours / theirs
    return f"{value:.1f}x"


def metrics(r: dict | None) -> dict[str, float | str | None]:
    if not r or "error" in r:
        return {}
    ready, streams = r.get("ready", 0), r["streams"]
    served = ready == streams
    # A broadcast is offered to every stream asked for: those never served lose every event.
    offered = max(r.get("planned") or 0, r["events"]) * streams if r["mode"] == "broadcast" else r["events"]
    return {
        "failed": None if served else f"fails: {ready:,} of {streams:,} streams served after "
                                      f"{r['connect_s']:.0f} s",
        "rss_per_stream_kib": (r["rss_idle_kb"] - r["rss_before_kb"]) / ready if served else None,
        "connect_s": r["connect_s"] if served else None,
        "per_cpu": r["per_server_cpu_s"] if r.get("received") else None,
        "per_wall": r["per_wall_s"] if r.get("received") else None,
        "p99": r["p99_ms"] if r.get("received") else None,
        "lost": max(0, offered - r["received"]),
        "own_share": r["own_cpu_s"] / r["server_cpu_s"] if r.get("server_cpu_s") else None,
    }


def header(part: dict) -> str:
    probe = (f" Speed probe (CPU ms of a fixed Python loop; higher is a slower machine) before "
             f"{part['probe_before']}, after {part['probe_after']}." if "probe_before" in part else "")
    return (f"Run {part['time']}, `{part['command']}`; load average (1/5/15 min) before "
            f"{part['load_before']}, after {part['load_after']}.{probe}")


def report(parts: dict[str, dict | None]) -> str:
    """The RESULTS.md block: the side-by-side table, the Redis scaling, the soak, the raw numbers."""
    lines = [BEGIN, "", f"Machine: {machine()}. pushsvc: gevent {pip_version(sys.executable, 'gevent')}, "
             f"gunicorn {pip_version(sys.executable, 'gunicorn')}, one gevent worker, memory broker. "
             f"Peer: flask-sse {pip_version(PEER_VENV / 'bin' / 'python', 'flask-sse')} on gunicorn gevent, "
             "one worker, its own redis-server. Server CPU counts the gunicorn arbiter and workers, and for "
             "flask-sse also its Redis (part of its delivery path). 64-byte events. Broadcast is offered at "
             f"{BROADCAST_DELIVERIES_PER_S:,} deliveries/s (events/s = that / N); unicast and batch "
             "publish in a closed loop to 1,000 streams (4 and 2 publisher connections).", ""]
    side = parts.get("side-by-side")
    if side:
        lines += [header(side), "", *table(side["pushsvc"], side["flask-sse"]), ""]
    scaling = (parts.get("redis") or {}).get("runs")
    if scaling:
        one, two = scaling["1"], scaling["2"]
        lines += [header(parts["redis"]), "",
                  "Redis broker, closed-loop broadcast (at most 256 events in flight, 32 publisher "
                  f"connections), N = {one['streams']:,}:", "",
                  "| workers | deliveries / wall-s | deliveries / server-CPU-s | p99 (ms) | lost | "
                  "Redis connections at N/10 → N |", "|---|---|---|---|---|---|"]
        for w, r in (("1", one), ("2", two)):
            lines.append(f"| {w} | {fmt(r['per_wall_s'])} | {fmt(r['per_server_cpu_s'])} | {r['p99_ms']} | "
                         f"{r['lost']} | {r['redis_clients_small']} → {r['redis_clients_big']} |")
        lines += ["", f"2 workers / 1 worker: **{two['per_wall_s'] / max(one['per_wall_s'], 1):.2f}x** "
                  "deliveries per wall-second (target ≥ 1.6x).", ""]
    soak_part = parts.get("soak")
    s = (soak_part or {}).get("run")
    if s and "error" not in s and s.get("rss_samples"):
        samples = s["rss_samples"]
        first = next((kb for t, kb in samples if t >= 60), samples[0][1])
        last = samples[-1][1]
        lines += [header(soak_part), "",
                  f"Soak: {s['streams']:,} streams, broadcast at {BROADCAST_DELIVERIES_PER_S:,} "
                  f"deliveries/s for {s['wall_s'] / 60:.1f} min: worker RSS {first:,} KiB after the first "
                  f"minute, {last:,} KiB at the end (**{(last - first) / first * 100:+.1f} %**, "
                  "target < 5 %); "
                  f"{s['received']:,} delivered, {s['lost']} lost, p99 {s['p99_ms']} ms, "
                  f"{s['per_server_cpu_s']:,.0f} deliveries / server-CPU-s.", "",
                  "RSS samples (minute: MiB): " + ", ".join(
                      f"{t / 60:.0f}: {kb / 1024:.0f}" for t, kb in samples[1::4]), ""]
    lines += ["<details><summary>Raw load-generator output</summary>", "", "```json"]
    if side:
        for system in ("pushsvc", "flask-sse"):
            lines += [json.dumps({**r, "system": system}) for r in side[system].values()]
    if scaling:
        lines += [json.dumps(r) for r in scaling.values()]
    if s:
        lines.append(json.dumps({k: v for k, v in s.items() if k != "rss_samples"}))
    lines += ["```", "</details>", "", END]
    return "\n".join(lines)


def table(ours: dict, peer: dict) -> list[str]:
    rows = ["| figure | pushsvc | flask-sse | pushsvc better by | target |", "|---|---|---|---|---|"]

    def row(name: str, key: str, scenario: str, target: str, lower: bool = False) -> None:
        cells, values = [], []
        for system in (ours, peer):
            m = metrics(system.get(scenario))
            values.append(m.get(key))
            cells.append(m["failed"] if m.get("failed") and key == "connect_s" else fmt(m.get(key)))
        better = "peer fails" if metrics(peer.get(scenario)).get("failed") else ratio(*values, lower)
        rows.append(f"| {name} | {cells[0]} | {cells[1]} | {better} | {target} |")

    n = {k: (v.get("streams") if v else None) for k, v in {**peer, **ours}.items()}
    for key in ("broadcast-mid", "broadcast-big"):
        row(f"RSS per idle stream, N = {n[key]:,} (KiB)", "rss_per_stream_kib", key, "≤ 24", True)
    row(f"connect {n['broadcast-mid']:,} streams (s)", "connect_s", "broadcast-mid", "≤ 2", True)
    row(f"connect {n['broadcast-big']:,} streams (s)", "connect_s", "broadcast-big", "", True)
    for key in ("broadcast-small", "broadcast-mid", "broadcast-big"):
        row(f"broadcast deliveries / server-CPU-s, N = {n[key]:,}", "per_cpu", key,
            "≥ 40,000" if key != "broadcast-small" else "")
    for key, target in (("broadcast-small", ""), ("broadcast-mid", "≤ 250"), ("broadcast-big", "≤ 500")):
        row(f"broadcast p99 publish → receive, N = {n[key]:,} (ms)", "p99", key, target, True)
    for key in ("broadcast-small", "broadcast-mid", "broadcast-big"):
        a, b = metrics(ours.get(key)).get("lost"), metrics(peer.get(key)).get("lost")
        rows.append(f"| broadcast deliveries lost (of events x N offered), N = {n[key]:,} | {fmt(a)} | "
                    f"{fmt(b)} | | 0 |")
    row("unicast events / server-CPU-s (one HTTP publish each)", "per_cpu", "unicast", "≥ 3,000")
    row("batch publish events / server-CPU-s (100 per request)", "per_cpu", "batch", "≥ 20,000")
    share = [fmt(metrics(x.get("broadcast-mid")).get("own_share")) for x in (ours, peer)]
    rows.append(f"| load generator CPU / server CPU, broadcast N = {n['broadcast-mid']:,} | {share[0]} | "
                f"{share[1]} | | low |")
    return rows


def write_results(block: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else f"# pushsvc benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text += "\n" + block + "\n"
    RESULTS.write_text(text)


PARTS = ("side-by-side", "redis", "soak")


def saved(part: str) -> dict | None:
    path = OUT / f"results-{part}.json"
    return json.loads(path.read_text()) if path.exists() else None


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N and short phases (tooling check)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma-separated parts to run now: side-by-side, redis, soak (none: only "
                             "rewrite the report); the report also shows parts kept from earlier runs")
    parser.add_argument("--soak-minutes", type=float, default=30)
    parser.add_argument("--skip-peer", action="store_true", help="pushsvc only")
    parser.add_argument("--skip-ours", action="store_true", help="flask-sse only (tooling checks)")
    parser.add_argument("--profile", type=Path,
                        help="only record a py-spy profile of a broadcast to this file")
    parser.add_argument("--no-write", action="store_true", help="print the results, leave RESULTS.md alone")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")

    raise_file_limit()
    build_loadgen()
    peer_python = ensure_peer_venv()
    if args.profile:
        profile(20, args.profile)
        return
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    for part in parts:
        started = {"command": command.strip(), "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "load_before": loadavg(), "probe_before": speed_probe()}
        if part == "side-by-side":
            systems: dict[str, Callable[[], Server]] = {}
            if not args.skip_ours:
                systems["pushsvc"] = pushsvc
            if not args.skip_peer:
                systems["flask-sse"] = lambda: flask_sse(peer_python)
            data = {"pushsvc": {}, "flask-sse": {}, **scenarios(systems, args.quick)}
        elif part == "redis":
            data = {"runs": redis_scaling(args.quick)}
        else:
            data = {"run": soak(0.5 if args.quick else args.soak_minutes)}
        data.update(started, load_after=loadavg(), probe_after=speed_probe())
        (OUT / f"results-{part}.json").write_text(json.dumps(data, indent=1))
    block = report({part: saved(part) for part in PARTS})
    if args.no_write:
        print(block)
    else:
        write_results(block)
        log(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
