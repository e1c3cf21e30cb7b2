"""``python -m chaos.soak``: a steady load for a long time; does the server leak or slow down?

PostgreSQL at default durability, one server, two bench workers, diamond tasks submitted at an even
rate: half the throughput measured at the start (500 tasks as fast as possible, bench's throughput
mode) unless ``--rate`` is given. Every 10 s the server's RSS is read from /proc/PID/status; each
task's latency (CreateTask to its terminal event at the client) is grouped by the minute it was
submitted in. One JSON object on stdout (and in ``--out``); ``--markdown`` writes the per-minute
table. Targets: RSS growth < 10% and p99 drift < 20% from minute 5 (or half the run, if shorter)
to the last minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import REPO
from bench.runner import percentile, run_throughput
from chaos.cluster import Backends, Stack, server_rss_kb
from chaos.load import PacedLoad, ResumingTracker
from chaos.scenarios import WORKLOAD
from tasker import Client

log = logging.getLogger("chaos")

RSS_TARGET = 0.10
P99_TARGET = 0.20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos.soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="soak length (default 30)")
    p.add_argument("--rate", type=float, default=None,
                   help="tasks/s (default: half the throughput measured first)")
    p.add_argument("--measure-tasks", type=int, default=500,
                   help="tasks of the initial throughput measurement")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    p.add_argument("--markdown", type=Path, default=None, help="write the per-minute table")
    p.add_argument("--logs", type=Path, default=REPO / "bench" / "out" / "soak")
    return p.parse_args(argv)


async def _sample_rss(pid: int, t0: float, samples: list[tuple[float, int]]) -> None:
    while True:
        rss = server_rss_kb(pid)
        if rss is not None:
            samples.append((time.perf_counter() - t0, rss))
        await asyncio.sleep(10)


def _at(samples: list[tuple[float, int]], second: float) -> int:
    """The RSS sample nearest ``second``."""
    return min(samples, key=lambda s: abs(s[0] - second))[1]


def summarise(minutes: float, rate: float, measured: float | None, rss: list[tuple[float, int]],
              latencies: dict[int, list[float]], lost: int) -> dict[str, Any]:
    warm = min(5.0, minutes / 2)
    last_minute = max(latencies, default=0)
    p99 = {m: percentile(sorted(v), 0.99) * 1000 for m, v in latencies.items()}
    per_minute = [
        {
            "minute": m + 1,
            "tasks": len(v),
            "p50_ms": round(percentile(sorted(v), 0.5) * 1000, 1),
            "p99_ms": round(p99[m], 1),
            "rss_mb": round(_at(rss, (m + 1) * 60) / 1024, 1) if rss else None,
        }
        for m, v in sorted(latencies.items())
    ]
    rss_growth: float | None = None
    p99_drift: float | None = None
    if rss:
        base = _at(rss, warm * 60)
        rss_growth = (rss[-1][1] - base) / base
    first = next((m for m in sorted(p99) if m + 1 >= warm), None)
    if first is not None and p99[first] > 0:
        p99_drift = (p99[last_minute] - p99[first]) / p99[first]
    targets = {
        "no_task_lost": lost == 0,
        "rss_growth_below_10pct": rss_growth is not None and rss_growth < RSS_TARGET,
        "p99_drift_below_20pct": p99_drift is not None and p99_drift < P99_TARGET,
    }
    return {
        "mode": "soak",
        "backend": "postgres",
        "workload": WORKLOAD.name,
        "minutes": minutes,
        "measured_tasks_per_s": measured,
        "rate_tasks_per_s": round(rate, 2),
        "tasks": sum(len(v) for v in latencies.values()),
        "lost": lost,
        "baseline_minute": warm,
        "last_minute": last_minute + 1,
        "rss_growth_pct": None if rss_growth is None else round(rss_growth * 100, 1),
        "p99_drift_pct": None if p99_drift is None else round(p99_drift * 100, 1),
        "per_minute": per_minute,
        "targets_met": targets,
        "ok": all(targets.values()),
    }


def markdown(r: dict[str, Any]) -> str:
    lines = ["| minute | tasks | p50 ms | p99 ms | server RSS MB |", "|---|---|---|---|---|"]
    for row in r["per_minute"]:
        lines.append(f"| {row['minute']} | {row['tasks']} | {row['p50_ms']} | {row['p99_ms']} "
                     f"| {row['rss_mb']} |")
    return "\n".join(lines) + "\n"


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    with Backends.opened() as backends:
        stack = Stack(backends.database("postgres", "soak"), args.logs)
        await stack.start()
        try:
            async with await Client.connect(stack.server.address, timeout=30) as client:
                await stack.ready(client, WORKLOAD)
                measured = None
                rate = args.rate
                if rate is None:
                    result = await run_throughput(client, WORKLOAD, args.measure_tasks, 32)
                    measured = round(result.tasks / result.wall_s, 2)
                    rate = measured / 2
                    log.info("measured %.1f tasks/s; soaking at %.1f tasks/s for %.1f min",
                             measured, rate, args.minutes)
                tracker = ResumingTracker(client)
                await tracker.start()
                load = PacedLoad(client, WORKLOAD, PacedLoad.steady(
                    int(args.minutes * 60 * rate), rate), key="soak")
                rss: list[tuple[float, int]] = []
                t0 = time.perf_counter()
                sampler = asyncio.create_task(_sample_rss(stack.server.pid, t0, rss))
                try:
                    await load.run()
                    await tracker.wait_all(set(load.submitted), 120)
                finally:
                    sampler.cancel()
                    await tracker.stop()
        finally:
            await stack.stop()
    latencies: dict[int, list[float]] = {}
    for task_id, (_, t_sub) in load.submitted.items():
        if task_id in tracker.seen:
            minute = int((t_sub - t0) // 60)
            latencies.setdefault(minute, []).append(tracker.seen[task_id][0] - t_sub)
    lost = len(load.failed) + sum(1 for t in load.submitted if t not in tracker.seen)
    return summarise(args.minutes, rate, measured, rss, latencies, lost)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = await soak(args)
    line = json.dumps(result)
    print(line, flush=True)
    if args.out:
        args.out.write_text(line + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(result))
    log.info("rss growth %s%%, p99 drift %s%%, ok=%s", result["rss_growth_pct"],
             result["p99_drift_pct"], result["ok"])
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    logging.getLogger("tasker").setLevel(logging.WARNING)
    sys.exit(asyncio.run(main()))
