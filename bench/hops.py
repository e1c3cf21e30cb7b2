"""``python -m bench --hops``: where one hop of a linear task spends its time.

The server (``trace_hops_file``) and the bench workers (``BENCH_HOPS_DIR``) stamp each lease at
the points below on the machine-wide monotonic clock; this joins the stamps by lease id and gives
the median of each segment. A hop runs from the commit that claimed a step to the commit that
recorded its result; on a linear task that commit also claims the next step, so the segments
before ``tick`` add up to the "commit → next tick" gap.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

__all__ = ["SEGMENTS", "breakdown", "format_breakdown", "read_stamps"]

# (name, from point, to point, what the time is)
SEGMENTS: tuple[tuple[str, str, str, str], ...] = (
    ("hand_out", "claimed", "queued", "server: commit → on the stream's queue (subscribers)"),
    ("stream_out", "queued", "written", "server: outbound queue → handed to gRPC"),
    ("wire_out", "written", "received", "gRPC server → worker, worker's read loop"),
    ("handler", "received", "handler_done", "worker: ack, context, handler"),
    ("report", "handler_done", "result_sent", "worker: result built and queued on the stream"),
    ("wire_in", "result_sent", "result_read", "worker's send → server's read loop"),
    ("wait_tick", "result_read", "tick_start", "server: queued outcome → its tick starts"),
    ("tick", "tick_start", "commit", "server: the tick's transaction (the next five)"),
    ("t_acks", "tick_start", "acks_applied", "  tick: connection, BEGIN, acks UPDATE"),
    ("t_outcomes", "acks_applied", "outcomes_applied", "  tick: outcomes applied, breakers fed"),
    ("t_claims", "outcomes_applied", "claims_made", "  tick: admission and claims"),
    ("t_journal", "claims_made", "flushed", "  tick: breaker rows, transitions, NOTIFY, events"),
    ("t_commit", "flushed", "commit", "  tick: COMMIT"),
)


def read_stamps(paths: list[Path]) -> dict[str, dict[str, float]]:
    """lease id → point → time; a point stamped twice (a resent result) keeps the first."""
    stamps: dict[str, dict[str, float]] = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            stamps.setdefault(row["lease"], {}).setdefault(row["point"], row["t"])
    return stamps


def breakdown(stamps: dict[str, dict[str, float]]) -> dict[str, object]:
    """Median ms of each segment over the leases that have both of its points."""
    segments: dict[str, dict[str, object]] = {}
    for name, start, end, what in SEGMENTS:
        values = [
            (points[end] - points[start]) * 1000
            for points in stamps.values()
            if start in points and end in points
        ]
        segments[name] = {
            "from": start,
            "to": end,
            "what": what,
            "n": len(values),
            "median_ms": round(statistics.median(values), 3) if values else None,
        }
    gaps = [
        (points["tick_start"] - points["claimed"]) * 1000
        for points in stamps.values()
        if "claimed" in points and "tick_start" in points
    ]
    hops = [
        (points["commit"] - points["claimed"]) * 1000
        for points in stamps.values()
        if "claimed" in points and "commit" in points
    ]
    return {
        "leases": len(stamps),
        "segments": segments,
        "commit_to_next_tick_median_ms": round(statistics.median(gaps), 3) if gaps else None,
        "hop_median_ms": round(statistics.median(hops), 3) if hops else None,
    }


def format_breakdown(result: dict[str, object]) -> str:
    segments = result["segments"]
    assert isinstance(segments, dict)
    lines = [f"{'segment':<11} {'median ms':>9}  {'n':>5}  what"]
    for name, seg in segments.items():
        median = seg["median_ms"]
        shown = f"{median:9.3f}" if median is not None else f"{'-':>9}"
        lines.append(f"{name:<11} {shown}  {seg['n']:>5}  {seg['what']}")
    gap, hop = result["commit_to_next_tick_median_ms"], result["hop_median_ms"]
    lines.append(f"commit → next tick (median of the sum): {gap} ms")
    lines.append(f"whole hop, commit → commit (median):    {hop} ms")
    return "\n".join(lines)
