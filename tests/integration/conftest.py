"""The api in-process (Flask test client) over the real Postgres and Redis of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg_pool import ConnectionPool

from services.api.app import create_app
from shared.auth import issue_token
from shared.config import Settings


@pytest.fixture
def app(settings: Settings, pool: ConnectionPool) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    app.extensions["sandbox_runtime"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings)}"}
