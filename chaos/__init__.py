"""Tasker chaos suite and soak: faults injected into a real server, workers and database.

``python -m chaos`` runs the fault scenarios (see ``python -m chaos --help`` and
docs/reliability.md); ``python -m chaos.soak`` runs the soak. Both reuse the benchmark's processes
(bench/harness.py), workload (bench/workloads.py) and client-side tracking (bench/runner.py).
"""
