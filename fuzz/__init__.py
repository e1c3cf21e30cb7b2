"""Structured and byte-level fuzzing of every tasker.v1 RPC (``make fuzz``; docs/security.md).

``python -m fuzz --seed 7 --cases 10000`` starts a server process on a fresh SQLite database,
seeds it with a template and tasks, runs the cases and fails (exit 1) on any INTERNAL or UNKNOWN
answer, a hang, or a server that stops answering; ``--case N`` replays one case.
"""

from .generate import hostile_message, mutate
from .runner import Failure, Fuzzer, Report, Rpc, rpcs

__all__ = ["Failure", "Fuzzer", "Report", "Rpc", "hostile_message", "mutate", "rpcs"]
