"""The ``bench/RESULTS.md`` block: the side-by-side table, the Redis broker, scaling, soak, raw numbers."""

from __future__ import annotations

import json

from .common import RESULTS, machine, nginx_version, version
from .longruns import BROADCAST_DELIVERIES_PER_S

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
PEERS = ("flask-sse", "sse-starlette")
SYSTEMS = ("pushsvc", *PEERS, "nchan")


def fmt(value: float | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if value < 10:
        return f"{value:.2f}" if isinstance(value, float) else str(value)
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def metrics(r: dict | None) -> dict[str, float | str | None]:
    """The figures of one load-generator run (empty when it failed)."""
    if not r or "error" in r:
        return {}
    ready, streams = r.get("ready", 0), r["streams"]
    served = ready == streams
    # A broadcast is offered to every stream asked for: those never served lose every event.
    offered = max(r.get("planned") or 0, r["events"]) * streams if r["mode"] == "broadcast" else r["events"]
    got = bool(r.get("received"))
    return {
        "failed": None if served else f"fails: {ready:,} of {streams:,} streams after {r['connect_s']:.0f} s",
        "rss_per_stream_kib": (r["rss_idle_kb"] - r["rss_before_kb"]) / ready if served else None,
        "connect_s": r["connect_s"] if served else None,
        "per_cpu": r["per_server_cpu_s"] if got else None,
        "us_per_event": r["server_cpu_s"] / r["received"] * 1e6 if got else None,
        "p99": r["p99_ms"] if got else None,
        "p99_max": f"{fmt(r['p99_ms'])} (max {fmt(r['max_ms'])})" if got else None,
        "lost": max(0, offered - r["received"]),
        "own_share": r["own_cpu_s"] / r["server_cpu_s"] if r.get("server_cpu_s") else None,
    }


def _ratio(ours: float | None, theirs: float | None, lower_is_better: bool) -> str:
    if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)) or not ours or not theirs:
        return "—"
    return f"{(theirs / ours if lower_is_better else ours / theirs):.2f}x"


def side_table(side: dict[str, dict], sizes: dict[str, int]) -> list[str]:
    rows = ["| figure | pushsvc | flask-sse | sse-starlette (uvicorn) | Nchan (C) | pushsvc vs best Python "
            "peer | pushsvc vs Nchan |", "|---|---|---|---|---|---|---|"]

    def row(name: str, key: str, scenario: str, lower: bool = False, shown: str | None = None,
            ratios: bool = True) -> None:
        found = {s: metrics(side.get(s, {}).get(scenario)) for s in SYSTEMS}
        cells = []
        for system in SYSTEMS:
            m = found[system]
            cells.append(m["failed"] if m.get("failed") else fmt(m.get(shown or key)))
        peers = [found[p].get(key) for p in PEERS if isinstance(found[p].get(key), (int, float))]
        best = (min(peers) if lower else max(peers)) if peers else None
        ours = found["pushsvc"].get(key)
        nchan = found["nchan"].get(key)
        versus = [_ratio(ours, best, lower), _ratio(ours, nchan, lower)] if ratios else ["", ""]
        rows.append(f"| {name} | {' | '.join(cells)} | {' | '.join(versus)} |")

    for size, n in sizes.items():
        row(f"unicast deliveries / server-CPU-s, 1,000/s, N = {n:,}", "per_cpu", f"unicast-rate-{size}")
    for size, n in sizes.items():
        row(f"unicast p99 publish → receive (ms), N = {n:,}", "p99", f"unicast-rate-{size}", True, "p99_max")
    for size in ("mid", "big"):
        row(f"connect, N = {sizes[size]:,}, all first bytes (s)", "connect_s", f"broadcast-{size}", True)
    for size, n in sizes.items():
        row(f"broadcast deliveries / server-CPU-s, N = {n:,}", "per_cpu", f"broadcast-{size}")
    for size, n in sizes.items():
        row(f"broadcast p99 (ms), N = {n:,}", "p99", f"broadcast-{size}", True, "p99_max")
    for size, n in sizes.items():
        row(f"broadcast deliveries lost, N = {n:,}", "lost", f"broadcast-{size}", True, ratios=False)
    for size in ("mid", "big"):
        row(f"RSS per idle stream, N = {sizes[size]:,} (KiB)", "rss_per_stream_kib", f"broadcast-{size}",
            True)
    small, mid = sizes["small"], sizes["mid"]
    row(f"unicast closed loop, deliveries / server-CPU-s, N = {small:,}", "per_cpu", "unicast-closed")
    row("batch of 100 per publish, deliveries / server-CPU-s", "per_cpu", "batch")
    row(f"load generator CPU / server CPU, broadcast N = {mid:,}", "own_share", "broadcast-mid", True,
        ratios=False)
    return rows


def redis_table(redis: dict[str, dict], side: dict[str, dict], n: int) -> list[str]:
    peer = side.get("flask-sse", {})
    rows = [f"| with the Redis broker, N = {n:,} | pushsvc (1 worker + Redis) | flask-sse (+ Redis) | "
            "pushsvc vs flask-sse |", "|---|---|---|---|"]
    for name, key, ours, theirs, lower in (
            ("unicast deliveries / server-CPU-s, 1,000/s", "per_cpu", "unicast-rate", "unicast-rate-mid",
             False),
            ("unicast p99 (ms)", "p99", "unicast-rate", "unicast-rate-mid", True),
            ("broadcast deliveries / server-CPU-s", "per_cpu", "broadcast", "broadcast-mid", False),
            ("broadcast p99 (ms)", "p99", "broadcast", "broadcast-mid", True),
            ("connect (s)", "connect_s", "broadcast", "broadcast-mid", True)):
        a, b = metrics(redis.get(ours)), metrics(peer.get(theirs))
        rows.append(f"| {name} | {fmt(a.get(key))} | {b.get('failed') or fmt(b.get(key))} | "
                    f"{_ratio(a.get(key), b.get(key), lower)} |")
    for key, what in (("push-send", "one event per call"), ("push-send-batch", "1,000 events per call")):
        m = metrics(redis.get(key))
        rows.append(f"| `Push.send` from another process, {what}: SSE-worker CPU µs per delivered event "
                    f"(p99 ms) | {fmt(m.get('us_per_event'))} ({fmt(m.get('p99'))}) | — | |")
    return rows


def header(part: dict) -> str:
    return (f"Run {part['time']}, `{part['command']}`; load average (1/5/15 min) before "
            f"{part['load_before']}, after {part['load_after']}. Speed probe (CPU ms of a fixed Python "
            f"loop; higher is a slower machine) before {part['probe_before']}, after {part['probe_after']}.")


def intro() -> str:
    return (f"Machine: {machine()}. pushsvc: gevent {version('gevent')}, gunicorn {version('gunicorn')}, one "
            f"gevent worker, memory broker unless said. Peers: flask-sse {version('flask-sse')} on gunicorn "
            f"gevent with its own redis-server; sse-starlette {version('sse-starlette')} on uvicorn "
            f"{version('uvicorn')} (uvloop {version('uvloop')}, httptools {version('httptools')}), one "
            f"process; Nchan (Debian's libnginx-mod-nchan) in nginx {nginx_version()}, one worker. Server "
            "CPU counts every process of a system, and its Redis where it uses one. 64-byte events; unicast "
            "at a fixed 1,000 publishes/s over 4 keep-alive connections; broadcast 20 events at 2/s.")


def scaling_lines(part: dict) -> list[str]:
    one, two = part["runs"]["1"], part["runs"]["2"]
    lines = [header(part), "", "Redis broker, closed-loop broadcast (at most 256 events in flight, 32 "
             f"publisher connections), N = {one['streams']:,}:", "",
             "| workers | deliveries / wall-s | deliveries / server-CPU-s | p99 (ms) | lost | "
             "Redis connections at N/10 → N |", "|---|---|---|---|---|---|"]
    for w, r in (("1", one), ("2", two)):
        lines.append(f"| {w} | {fmt(r['per_wall_s'])} | {fmt(r['per_server_cpu_s'])} | {fmt(r['p99_ms'])} | "
                     f"{r['lost']} | {r['redis_clients_small']} → {r['redis_clients_big']} |")
    return [*lines, "", f"2 workers / 1 worker: **{two['per_wall_s'] / max(one['per_wall_s'], 1):.2f}x** "
            "deliveries per wall-second (target ≥ 1.6x).", ""]


def soak_lines(part: dict) -> list[str]:
    s = part["run"]
    samples = s["rss_samples"]
    first = next((kb for t, kb in samples if t >= 60), samples[0][1])
    last = samples[-1][1]
    return [header(part), "",
            f"Soak: {s['streams']:,} streams, broadcast at {BROADCAST_DELIVERIES_PER_S:,} deliveries/s for "
            f"{s['wall_s'] / 60:.1f} min: worker RSS {first:,} KiB after the first minute, {last:,} KiB at "
            f"the end (**{(last - first) / first * 100:+.1f} %**, target < 5 %); {s['received']:,} "
            f"delivered, {s['lost']} lost, p99 {fmt(s['p99_ms'])} ms, "
            f"{s['per_server_cpu_s']:,.0f} deliveries / server-CPU-s.", "",
            "RSS samples (minute: MiB): " + ", ".join(f"{t / 60:.0f}: {kb / 1024:.0f}"
                                                     for t, kb in samples[1::4]), ""]


def report(parts: dict[str, dict | None]) -> str:
    """The whole block between the markers, from the parts run now or kept from earlier runs."""
    lines = [BEGIN, "", intro(), ""]
    side = parts.get("side-by-side")
    if side:
        reruns = [f"Scenarios run again: {header(r)}" for r in side.get("reruns", [])]
        lines += [header(side), *reruns, "", *side_table(side["systems"], side["sizes"]), ""]
    redis = parts.get("redis")
    if redis:
        mid = side["systems"] if side else {}
        lines += [header(redis), "", *redis_table(redis["runs"], mid, redis["n"]), ""]
    if parts.get("scaling"):
        lines += scaling_lines(parts["scaling"])
    soak_part = parts.get("soak")
    if soak_part and "error" not in soak_part["run"] and soak_part["run"].get("rss_samples"):
        lines += soak_lines(soak_part)
    lines += ["<details><summary>Raw load-generator output</summary>", "", "```json"]
    if side:
        for runs in side["systems"].values():
            lines += [json.dumps(r) for r in runs.values()]
    if redis:
        lines += [json.dumps(r) for r in redis["runs"].values()]
    if parts.get("scaling"):
        lines += [json.dumps(r) for r in parts["scaling"]["runs"].values()]
    if soak_part:
        lines.append(json.dumps({k: v for k, v in soak_part["run"].items() if k != "rss_samples"}))
    return "\n".join([*lines, "```", "</details>", "", END])


def write_results(block: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else f"# pushsvc benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text += "\n" + block + "\n"
    RESULTS.write_text(text)
