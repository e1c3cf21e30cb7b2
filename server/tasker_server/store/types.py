"""Portable column types shared by the models (and nothing else).

One definition per concept so that SQLite (the zero-config default) and PostgreSQL store the same
values and hand back the same Python objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ColumnElement, DateTime, Integer, literal_column
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["BigId", "JSONDocument", "UTCDateTime", "in_literals", "utcnow"]

# SQLite only makes a column a rowid alias (cheap, auto-assigned) when it is exactly
# ``INTEGER PRIMARY KEY``; BIGINT would leave ids NULL. PostgreSQL gets a 64-bit BIGSERIAL.
BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")

# none_as_null: Python ``None`` must become SQL NULL (``result IS NULL``), not the JSON literal
# ``null`` that SQLAlchemy writes by default. JSONB on PostgreSQL: smaller, indexable, no dupes.
JSONDocument: TypeEngine[Any] = JSON(none_as_null=True).with_variant(
    JSONB(none_as_null=True), "postgresql"
)


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the only kind the store accepts)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An instant in time: ``timestamptz`` on PostgreSQL, naive-UTC text on SQLite.

    Binding a naive datetime raises: a naive value is ambiguous and always a bug upstream.
    Reads always return aware datetimes in UTC, whatever the backend or session time zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to a UTCDateTime column; pass an aware one")
        value = value.astimezone(UTC)
        # SQLite has no time zone type; stored text is naive UTC so that string comparison in SQL
        # (``ready_at <= :now``) orders instants correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def dialect_name(session: AsyncSession) -> str:
    """'postgresql' or 'sqlite': the few statements that differ branch on this."""
    return session.get_bind().dialect.name


def in_literals(column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """``column IN ('a', 'b')`` with the values written into the SQL, for predicates that must
    match a partial index (``ix_steps_ready``, ``ix_steps_lease_expiry``): a planner can only
    prove that a query implies the index's predicate from literals — SQLite never from bound
    parameters (it scans the whole table instead), PostgreSQL not in a generic plan. For
    constants of the code (state names) only, never for input."""
    quoted = ["'" + value.replace("'", "''") + "'" for value in values]
    return column.in_([literal_column(q) for q in quoted])  # type: ignore[no-any-return]
