"""``python -m chaos``: fault scenarios against a real server, workers and database.

One JSON object per scenario on stdout (and in ``--out``), progress on stderr; ``--markdown``
renders the results as the tables of docs/reliability.md. Exit status 1 if any target is missed.
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
from chaos.cluster import Backends
from chaos.scenarios import FULL, SHORT, Scenario, run_scenario

log = logging.getLogger("chaos")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true",
                   help="one fault of each kind, 50 tasks each (the form `make test` runs)")
    p.add_argument("--scenario", action="append", default=None,
                   help="only this scenario (repeatable): " + ", ".join(
                       sorted({s.name for s in FULL})))
    p.add_argument("--backend", choices=["postgres", "sqlite"], default=None,
                   help="only the scenarios on this backend")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON lines here")
    p.add_argument("--markdown", type=Path, default=None, help="write the results as tables")
    p.add_argument("--logs", type=Path, default=REPO / "bench" / "out" / "chaos",
                   help="server and worker logs, per scenario (default %(default)s)")
    return p.parse_args(argv)


def select(args: argparse.Namespace) -> list[Scenario]:
    chosen = SHORT if args.short else FULL
    if args.scenario:
        unknown = set(args.scenario) - {s.name for s in chosen}
        if unknown:
            raise SystemExit(f"unknown scenario(s) {sorted(unknown)}")
        chosen = [s for s in chosen if s.name in args.scenario]
    if args.backend:
        chosen = [s for s in chosen if s.backend == args.backend]
    return chosen


def _fmt(value: Any) -> str:
    return "—" if value is None else str(value)


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | backend | tasks | lost | recorded twice | wrong | repeated executions "
        "| targets missed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        missed = [k for k, v in r["targets_met"].items() if not v]
        lines.append(
            f"| {r['scenario']} | {r['backend']} | {r['submitted']}/{r['tasks']} | {r['lost']} "
            f"| {r['recorded_twice']} | {r['wrong_results']} | {r['repeated_executions']} "
            f"| {', '.join(missed) or 'none'} |"
        )
    lines += [
        "",
        "| scenario | backend | fault | at (s) | lifted after (s) | tasks in flight "
        "| first completion after (s) | last stalled task done after (s) | still stalled |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for n, f in enumerate(r["faults"], 1):
            lines.append(
                f"| {r['scenario']} | {r['backend']} | {f['kind']} #{n} | {f['at']} "
                f"| {f['duration_s']} | {f['in_flight']} "
                f"| {_fmt(f['recovered_first_completion_s'])} "
                f"| {_fmt(f['last_stalled_finished_s'])} | {f['stalled_unfinished']} |"
            )
    workers = [r for r in results if "worker" in r]
    if workers:
        lines += [
            "",
            "| scenario | steps of worker 0 re-run elsewhere | all re-run within (s) "
            "| other worker's longest pause (s) |",
            "|---|---|---|---|",
        ]
        for r in workers:
            w = r["worker"]
            lines.append(
                f"| {r['scenario']} | {w['steps_rerun_elsewhere']} "
                f"| {_fmt(w['rerun_elsewhere_within_s'])} | {w['other_worker_longest_pause_s']} |"
            )
    return "\n".join(lines) + "\n"


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = select(args)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    out = args.out.open("w") if args.out else None
    try:
        with Backends.opened() as backends:
            for scenario in scenarios:
                result = await run_scenario(scenario, backends, args.logs)
                results.append(result)
                line = json.dumps(result)
                print(line, flush=True)
                if out is not None:
                    out.write(line + "\n")
                    out.flush()
                log.info("  -> ok=%s, missed: %s", result["ok"],
                         [k for k, v in result["targets_met"].items() if not v])
    finally:
        if out is not None:
            out.close()
    if args.markdown:
        args.markdown.write_text(markdown(results))
    log.info("done in %.0fs", time.monotonic() - started)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    logging.getLogger("tasker").setLevel(logging.WARNING)
    sys.exit(asyncio.run(main()))
