"""``workers.identity``: the authenticated identity that opened a worker's stream.

With authorization on, a lease is valid only from the worker it was issued to *and* from the
identity that worker authenticated as: a caller holding another identity's lease id (the same
worker_id sent by a different token or certificate) is refused LEASE_NOT_HELD. NULL when
authentication is off.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 20:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("identity", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("identity")
