"""Template versions: immutable rows keyed by (namespace, name, version)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Namespace, Template
from .types import dialect_name

__all__ = [
    "StoredTemplate",
    "ensure_namespace",
    "find_template",
    "insert_template",
    "list_templates",
]


@dataclass(frozen=True, slots=True)
class StoredTemplate:
    id: int
    namespace: str
    name: str
    version: str
    content_hash: str
    yaml_text: str
    definition: dict[str, Any]
    description: str
    create_time: datetime


def _stored(row: Template) -> StoredTemplate:
    return StoredTemplate(
        id=row.id,
        namespace=row.namespace,
        name=row.name,
        version=row.version,
        content_hash=row.content_hash,
        yaml_text=row.yaml_text,
        definition=row.definition,
        description=row.description or "",
        create_time=row.create_time,
    )


async def ensure_namespace(session: AsyncSession, name: str) -> None:
    """Creates the namespace row if missing (concurrency-safe upsert)."""
    dialect = dialect_name(session)
    ins = pg_insert(Namespace) if dialect == "postgresql" else sqlite_insert(Namespace)
    await session.execute(ins.values(name=name, paused=False).on_conflict_do_nothing())


async def load_namespace(session: AsyncSession, name: str) -> Namespace:
    """The namespace row, created if missing."""
    await ensure_namespace(session, name)
    return (await session.execute(select(Namespace).where(Namespace.name == name))).scalar_one()


async def list_namespaces(session: AsyncSession, after: str, limit: int) -> list[Namespace]:
    query = select(Namespace).where(Namespace.name > after).order_by(Namespace.name).limit(limit)
    return list((await session.execute(query)).scalars().all())


async def find_template(
    session: AsyncSession, namespace: str, name: str, version: str | None
) -> StoredTemplate | None:
    """One version, or the highest one when ``version`` is None."""
    query = select(Template).where(Template.namespace == namespace, Template.name == name)
    if version:
        query = query.where(Template.version == version)
    else:
        query = query.order_by(
            Template.version_major.desc(),
            Template.version_minor.desc(),
            Template.version_patch.desc(),
        ).limit(1)
    row = (await session.execute(query)).scalars().first()
    return _stored(row) if row else None


async def insert_template(
    session: AsyncSession,
    *,
    namespace: str,
    name: str,
    version: tuple[str, tuple[int, int, int]],
    content_hash: str,
    yaml_text: str,
    definition: dict[str, Any],
    description: str,
) -> StoredTemplate | None:
    """Inserts a version; None when (namespace, name, version) already exists."""
    dialect = dialect_name(session)
    ins = pg_insert(Template) if dialect == "postgresql" else sqlite_insert(Template)
    text_version, (major, minor, patch) = version
    stmt = (
        ins.values(
            namespace=namespace,
            name=name,
            version=text_version,
            version_major=major,
            version_minor=minor,
            version_patch=patch,
            content_hash=content_hash,
            yaml_text=yaml_text,
            definition=definition,
            description=description or None,
        )
        .on_conflict_do_nothing()
        .returning(Template)
    )
    row = (await session.execute(stmt)).scalars().first()
    return _stored(row) if row else None


async def list_templates(
    session: AsyncSession,
    *,
    namespace: str,
    name: str,
    limit: int,
    after: tuple[str, str, int, int, int] | None,
) -> list[StoredTemplate]:
    """Keyset page ordered by namespace, name, then version highest first."""
    query = select(Template)
    if namespace:
        query = query.where(Template.namespace == namespace)
    if name:
        query = query.where(Template.name == name)
    if after is not None:
        ns, nm, major, minor, patch = after
        query = query.where(
            tuple_(
                Template.namespace,
                Template.name,
                -Template.version_major,
                -Template.version_minor,
                -Template.version_patch,
            )
            > tuple_(ns, nm, -major, -minor, -patch)
        )
    query = query.order_by(
        Template.namespace,
        Template.name,
        Template.version_major.desc(),
        Template.version_minor.desc(),
        Template.version_patch.desc(),
    ).limit(limit)
    return [_stored(r) for r in (await session.execute(query)).scalars()]
