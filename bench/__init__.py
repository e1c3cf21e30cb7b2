"""Tasker benchmark: the standard workloads of /work/shared/notes/workloads.md.

Run with ``python -m bench`` (see ``python -m bench --help`` and bench/RESULTS.md).
"""
