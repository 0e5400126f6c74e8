"""Apply the forward-only SQL migrations in name order, once each."""

from __future__ import annotations

import logging
from importlib import resources

import psycopg

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every process that migrates.
_LOCK_KEY = 0x5A4D_B0C5

_SETUP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; return the names applied now (empty when up to date)."""
    scripts = sorted(
        (
            p
            for p in resources.files("shared.db").joinpath("migrations").iterdir()
            if p.name.endswith(".sql")
        ),
        key=lambda p: p.name,
    )
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        # Two processes starting together must not both apply the same script.
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(_SETUP)
            done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for script in scripts:
                if script.name in done:
                    continue
                with conn.transaction():
                    conn.execute(script.read_text())  # type: ignore[arg-type]
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (script.name,))
                logger.info("applied migration %s", script.name)
                applied.append(script.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL if it is missing; return True if created."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    name = str(info.get("dbname", ""))
    admin = psycopg.conninfo.make_conninfo(database_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return True
