"""Who may report a lease's outcome: the one rule of lease fencing by holder.

A lease id is not a bearer token. A worker's report counts only if it comes from the worker the
lease was issued to and, with authentication on (both identities known), from the identity that
worker connected as. The store applies it against the database (any replica's lease); the
dispatcher applies it against the leases its streams hold, so that a refused report does not
take a lease away from its holder.
"""

from __future__ import annotations

__all__ = ["NOT_HELD", "held_by"]

NOT_HELD = "the lease was issued to another worker"


def held_by(
    holder_worker: str | None,
    holder_identity: str | None,
    reporter_worker: str,
    reporter_identity: str | None,
) -> bool:
    """Whether a reporter holds the lease. A lease whose worker is no longer recorded (released)
    has nobody to compare with: the other fencing rules (stale, duplicate) decide."""
    if holder_worker and reporter_worker != holder_worker:
        return False
    if holder_identity is None or reporter_identity is None:
        return True
    return reporter_identity == holder_identity
