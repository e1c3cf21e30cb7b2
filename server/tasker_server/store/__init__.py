"""Persistence: the only package that imports SQLAlchemy.

- ``db``: :class:`Database` (engine, sessions, ping) and URL normalisation.
- ``models``: the tables; ``types``: portable column types.
- ``migrate``: Alembic migrations run programmatically (``upgrade``/``current``). Not re-exported
  here: it is also a ``python -m`` entry point, and importing it from the package would make
  runpy warn and load it twice.
"""

from .db import DEFAULT_URL, Database, normalize_url

__all__ = ["DEFAULT_URL", "Database", "normalize_url"]
