"""Persistence: SQLAlchemy models, the engine/session factory and Alembic migrations."""
from database.session import Database, normalize_url

__all__ = ["Database", "normalize_url"]
