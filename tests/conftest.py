"""Shared fixtures: a real Postgres database and Redis db per xdist worker, and settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from shared.config import Settings, load_settings
from shared.db import make_pool
from shared.db.migrate import ensure_database, migrate

ROOT = Path(__file__).resolve().parent.parent
PG_BASE = os.environ.get("SANDBOX_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("SANDBOX_TEST_REDIS", "redis://127.0.0.1:6379")
TEST_POLICY = ROOT / "tests" / "policy.toml"


def _worker_index(worker_id: str) -> int:
    return 0 if worker_id == "master" else int(worker_id.removeprefix("gw"))


@pytest.fixture(scope="session")
def database_url(worker_id: str) -> str:
    """A migrated database of this xdist worker's own."""
    url = f"{PG_BASE}/sandbox_test_{_worker_index(worker_id)}"
    ensure_database(url)
    migrate(url)
    return url


@pytest.fixture(scope="session")
def broker_url(worker_id: str) -> str:
    """A Redis database of this xdist worker's own (1..15; 0 is the dev fleet's)."""
    return f"{REDIS_BASE}/{1 + _worker_index(worker_id) % 15}"


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def settings_env(database_url: str, broker_url: str, state_dir: Path) -> dict[str, str]:
    """The environment a fleet process of this test session runs with."""
    return {
        "SANDBOX_DATABASE_URL": database_url,
        "SANDBOX_BROKER_URL": broker_url,
        "SANDBOX_STATE_DIR": str(state_dir),
        "SANDBOX_POLICY_FILE": str(TEST_POLICY),
        "SANDBOX_LOG_FORMAT": "json",
        "SANDBOX_FLEET_NAME": f"test-{database_url.rsplit('/', 1)[1]}",
        # The suite submits and polls quickly from one caller; the limit has its own tests.
        "SANDBOX_RATE_LIMIT_PER_MINUTE": "0",
    }


@pytest.fixture(scope="session")
def settings(settings_env: dict[str, str]) -> Settings:
    return load_settings(settings_env)


@pytest.fixture(scope="session")
def session_pool(database_url: str) -> Iterator[ConnectionPool]:
    pool = make_pool(database_url, max_size=4)
    pool.open()
    yield pool
    pool.close()


@pytest.fixture
def pool(session_pool: ConnectionPool, database_url: str) -> Iterator[ConnectionPool]:
    """The session pool, with every table emptied after the test."""
    yield session_pool
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE sandbox_run_log, outbox, idempotency_key, sandbox_run")


AZURITE_BIN = ROOT / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's documented, public development account (not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Azurite blob service on a free port; yields its connection string."""
    import socket
    import subprocess
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [
            str(AZURITE_BIN),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(workdir),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("azurite did not start") from None
            time.sleep(0.1)
    yield (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )
    proc.terminate()
    proc.wait(timeout=10)
