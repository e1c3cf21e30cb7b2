"""``python -m bench``: the standard workloads against a real server, workers and database.

One JSON object per (workload, mode, backend) on stdout; progress on stderr. See RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import ServerProcess, WorkerProcesses
from bench.hops import breakdown, format_breakdown, read_stamps
from bench.postgres import DurablePostgres, find_bin_dir
from bench.runner import RunResult, run_single, run_throughput, wait_for_workers
from bench.workloads import WORKLOADS, Workload
from tasker import Client

log = logging.getLogger("bench")

DEFAULT_TASKS = 2000
# wide has 202 steps a task: 2000 tasks would be 404k steps, far beyond the ~15 min budget of a
# full run on a 2-core machine, so it defaults to fewer tasks (the JSON's "tasks" says how many).
DEFAULT_WIDE_TASKS = 100
DEFAULT_SINGLE = 200
DEFAULT_WIDE_SINGLE = 20


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    return int(raw) if raw else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--modes", default="throughput,single", help="throughput and/or single")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--capacity", type=int, default=64, help="capacity of each worker")
    p.add_argument("--tasks", type=int, default=_env_int("BENCH_TASKS"),
                   help=f"throughput tasks (env BENCH_TASKS; default {DEFAULT_TASKS}, "
                        f"wide {DEFAULT_WIDE_TASKS})")
    p.add_argument("--single", type=int, default=_env_int("BENCH_SINGLE"),
                   help=f"single-mode repetitions (env BENCH_SINGLE; default {DEFAULT_SINGLE}, "
                        f"wide {DEFAULT_WIDE_SINGLE})")
    p.add_argument("--concurrency", type=int, default=32,
                   help="CreateTask calls in flight in throughput mode")
    p.add_argument("--profile", type=Path, default=None,
                   help="run the server under cProfile; write DIR/<backend>-<workload>-<mode>.prof")
    p.add_argument("--hops", action="store_true",
                   help="single mode of the linear workload with hop stamps on (server "
                        "trace_hops_file, workers BENCH_HOPS_DIR); prints each segment's median")
    args = p.parse_args(argv)
    if args.hops:
        args.workloads, args.modes = "linear", "single"
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    for m in args.modes:
        if m not in ("throughput", "single"):
            p.error(f"unknown mode {m!r}")
    return args


def count_for(args: argparse.Namespace, workload: Workload, mode: str) -> int:
    if mode == "throughput":
        if args.tasks is not None:
            return int(args.tasks)
        return DEFAULT_WIDE_TASKS if workload.name == "wide" else DEFAULT_TASKS
    if args.single is not None:
        return int(args.single)
    return DEFAULT_WIDE_SINGLE if workload.name == "wide" else DEFAULT_SINGLE


@contextmanager
def databases(backend: str) -> Iterator[object]:
    """Yields a factory ``name -> database URL`` giving a fresh database per run."""
    if backend == "postgres":
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise SystemExit("PostgreSQL not found (initdb); install it or use --backend sqlite")
        cluster = DurablePostgres(bin_dir).start()
        log.info("postgres on port %d: %s", cluster.port, cluster.settings_summary())
        try:
            yield cluster.create_database
        finally:
            cluster.stop()
    else:
        tmp = Path(tempfile.mkdtemp(prefix="tasker-bench-sqlite-"))
        try:
            yield lambda name: f"sqlite:///{tmp / (name + '.db')}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


async def one_run(
    args: argparse.Namespace, backend: str, db_url: str, workload: Workload, mode: str
) -> dict[str, object]:
    count = count_for(args, workload, mode)
    profile_out = None
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        profile_out = args.profile.resolve() / f"{backend}-{workload.name}-{mode}.prof"
    hops_dir = Path(tempfile.mkdtemp(prefix="tasker-bench-hops-")) if args.hops else None
    hops_file = hops_dir / "server.jsonl" if hops_dir else None
    server = ServerProcess(db_url, profile_out, hops_file).start()
    workers = WorkerProcesses(server.address, args.workers, args.capacity, hops_dir).start()
    try:
        async with await Client.connect(server.address, timeout=30) as client:
            await client.register_template(workload.template_yaml())
            await wait_for_workers(client, args.workers)
            log.info("%s %s %s: %d tasks x %d steps", backend, workload.name, mode, count,
                     workload.steps)
            result: RunResult
            if mode == "throughput":
                result = await run_throughput(client, workload, count, args.concurrency)
            else:
                result = await run_single(client, workload, count)
        workers.check_alive()
    finally:
        workers.stop()
        server.stop()
    if profile_out is not None and profile_out.exists():
        log.info("server profile: %s", profile_out)
        stats = pstats.Stats(str(profile_out), stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(30)
    wall = result.wall_s
    steps = result.tasks * workload.steps
    hops = None
    if hops_dir is not None:
        hops = breakdown(read_stamps(sorted(hops_dir.glob("*.jsonl"))))
        log.info("%s hops:\n%s", backend, format_breakdown(hops))
        shutil.rmtree(hops_dir, ignore_errors=True)
    line: dict[str, object] = {
        "system": "tasker",
        "mode": mode,
        "workload": workload.name,
        "backend": backend,
        "tasks": result.tasks,
        "steps": steps,
        "workers": args.workers,
        "wall_s": round(wall, 3),
        "tasks_per_s": round(result.tasks / wall, 2) if wall > 0 else 0.0,
        "steps_per_s": round(steps / wall, 2) if wall > 0 else 0.0,
        "latency_ms": result.latency_ms(),
        "ok": result.ok,
    }
    if hops is not None:
        line["hops"] = hops
    return line


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    all_ok = True
    started = time.monotonic()
    for backend in backends:
        with databases(backend) as make_db:
            for workload_name in args.workloads:
                workload = WORKLOADS[workload_name]
                for mode in args.modes:
                    db_url = make_db(f"bench_{workload.name}_{mode}")  # type: ignore[operator]
                    line = await one_run(args, backend, db_url, workload, mode)
                    all_ok &= bool(line["ok"])
                    print(json.dumps(line), flush=True)
                    log.info("  -> %.1f steps/s, p50 %.1f ms, ok=%s", line["steps_per_s"],
                             line["latency_ms"]["p50"], line["ok"])  # type: ignore[index]
    log.info("done in %.0fs", time.monotonic() - started)
    return 0 if all_ok else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    logging.getLogger("tasker").setLevel(logging.WARNING)
    sys.exit(asyncio.run(main()))
