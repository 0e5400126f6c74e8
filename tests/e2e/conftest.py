"""The fleet for end-to-end tests: its own database and Redis db, started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from shared.auth import issue_token
from shared.config import Settings, load_settings
from shared.db.migrate import ensure_database, migrate
from tests.fleet import Fleet, free_port, start_fleet, stop_fleet, wait_ready


@pytest.fixture(scope="session")
def fleet_env(settings_env: dict[str, str], worker_id: str) -> dict[str, str]:
    """The fleet gets a database and Redis db of its own, apart from the in-process tests'."""
    database_url = settings_env["SANDBOX_DATABASE_URL"] + "_fleet"
    ensure_database(database_url)
    migrate(database_url)
    # A fresh start: tests that read whole tables must not see an earlier session's runs.
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'schema_migrations'"
            ).fetchall()
        ]
        conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
    index = 0 if worker_id == "master" else int(worker_id.removeprefix("gw"))
    broker = settings_env["SANDBOX_BROKER_URL"].rsplit("/", 1)[0] + f"/{8 + index % 8}"
    return {
        **settings_env,
        "SANDBOX_DATABASE_URL": database_url,
        "SANDBOX_BROKER_URL": broker,
        "SANDBOX_FLEET_NAME": "e2e-" + database_url.rsplit("/", 1)[1],
        # Each worker service serves /metrics on a port of its own (tests/e2e/test_observability).
        **{
            f"SANDBOX_{name}_METRICS_PORT": str(free_port())
            for name in ("PROVISIONER", "EXECUTOR", "FINALIZER")
        },
    }


@pytest.fixture(scope="session")
def fleet_settings(fleet_env: dict[str, str]) -> Settings:
    return load_settings(fleet_env)


@pytest.fixture(scope="session")
def fleet(
    fleet_settings: Settings, fleet_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    logs = tmp_path_factory.mktemp("fleet-logs")
    port = free_port()
    env = {**os.environ, **fleet_env, "PYTHONUNBUFFERED": "1"}
    procs = start_fleet(env, logs, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, procs, logs)
        yield Fleet(base=base, token=issue_token(fleet_settings), logs=logs, procs=procs)
    finally:
        stop_fleet(procs)
