"""Apply Alembic migrations at start-up; several processes starting at once take turns."""
from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from database.session import Database

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
LOCK_ID = 724_001


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    with db.engine.begin() as conn:
        if db.is_postgres:
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
        config = alembic_config(db.url)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
