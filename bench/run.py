"""Run the benchmarks: pushsvc beside flask-sse, sse-starlette and Nchan in one go, and write RESULTS.md.

    python bench/run.py                               # every part (the soak lasts --soak-minutes)
    python bench/run.py --parts side-by-side,redis    # the issue's table; the other parts are kept
    python bench/run.py --quick --no-write            # small N, short phases: a smoke check of the tooling
    python bench/run.py --profile unicast-rate-10000  # py-spy of the pushsvc worker during one scenario

Run it with the project's Python, with the bench extra installed (``pip install -e ".[bench]"``). It
compiles the C load generator with gcc and starts every server itself, one after the other: pushsvc
(gunicorn, one gevent worker), flask-sse (gunicorn gevent and a private redis-server), sse-starlette
(uvicorn, one process) and Nchan (nginx with Debian's module, one worker, its configuration in a
temporary directory). Server CPU is read from ``/proc`` by the load generator: figures are per
server-CPU-second, and the ratios between systems are those of one run.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import longruns, report, scenarios
from harness.common import OUT, RESULTS, ROOT, build_loadgen, loadavg, log, raise_file_limit, speed_probe
from harness.servers import SYSTEMS, Server

PARTS = ("side-by-side", "redis", "scaling", "soak")


def run_part(part: str, args: argparse.Namespace) -> dict:
    if part == "side-by-side":
        chosen = [s.strip() for s in args.systems.split(",")]
        systems: dict[str, Callable[[], Server]] = {name: SYSTEMS[name] for name in chosen}
        only = set(args.scenarios.split(",")) if args.scenarios else None
        return {"systems": scenarios.side_by_side(systems, args.quick, only),
                "sizes": scenarios.plan(args.quick)[1]}
    if part == "redis":
        return {"runs": scenarios.redis_part(args.quick), "n": 500 if args.quick else 5000}
    if part == "scaling":
        return {"runs": longruns.redis_scaling(args.quick)}
    return {"run": longruns.soak(0.5 if args.quick else args.soak_minutes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N and short phases (smoke check)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run now: {', '.join(PARTS)} (none: only rewrite "
                             "the report); the report also shows parts kept from earlier runs")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="side-by-side: which systems")
    parser.add_argument("--scenarios", default="", help="side-by-side: only these scenarios (e.g. "
                        "unicast-rate-big,broadcast-mid); their figures replace those of the last run")
    parser.add_argument("--soak-minutes", type=float, default=30)
    parser.add_argument("--profile", choices=longruns.PROFILES,
                        help="only record a py-spy profile of the pushsvc worker during this scenario")
    parser.add_argument("--no-write", action="store_true", help="print the results, leave RESULTS.md alone")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")

    # A SIGTERM unwinds like Ctrl-C, so every server started so far is stopped by its finally block.
    signal.signal(signal.SIGTERM, lambda sig, frame: sys.exit(143))
    raise_file_limit()
    build_loadgen()
    if args.profile:
        longruns.profile(args.profile, OUT / f"profile-{args.profile}.txt")
        return
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    for part in parts:
        started = {"command": command.strip(), "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "load_before": loadavg(), "probe_before": speed_probe()}
        data = run_part(part, args)
        data.update(started, load_after=loadavg(), probe_after=speed_probe())
        earlier = saved(part, args.quick)
        if part == "side-by-side" and args.scenarios and earlier:
            # Some scenarios again: they replace their own figures, the others stay (and their run's header).
            for system, runs in data["systems"].items():
                earlier["systems"].setdefault(system, {}).update(runs)
            earlier.setdefault("reruns", []).append({k: v for k, v in data.items() if k != "systems"})
            data = earlier
        (OUT / f"results-{part}{'-quick' if args.quick else ''}.json").write_text(json.dumps(data, indent=1))
    block = report.report({part: saved(part, args.quick) for part in PARTS})
    if args.no_write or args.quick:
        print(block)
    else:
        report.write_results(block)
        log(f"wrote {RESULTS.relative_to(ROOT)}")


def saved(part: str, quick: bool) -> dict | None:
    path = OUT / f"results-{part}{'-quick' if quick else ''}.json"
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":
    main()
