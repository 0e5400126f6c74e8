"""Schemathesis against the api's own OpenAPI document, in-process (WSGI), with a valid token.

Read endpoints and ``POST /api/sandbox/runs`` (forced to dry runs without callbacks, so no
container starts and nothing resolves outside names; runs may land in the test database). Every
answer must be documented and none may be a 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from psycopg_pool import ConnectionPool
from schemathesis.checks import not_a_server_error, status_code_conformance

from services.api.app import create_app
from shared.auth import issue_token
from shared.config import Settings


@pytest.fixture(scope="module")
def fuzz_app(
    settings: Settings, session_pool: ConnectionPool, database_url: str
) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    app.extensions["sandbox_runtime"].close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE sandbox_run_log, outbox, idempotency_key, sandbox_run")


@pytest.fixture(scope="module")
def token_header(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings)}"}


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Flask) -> Any:
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", fuzz_app)
    return schema.include(
        lambda ctx: (
            ctx.operation.method.upper() == "GET"
            or (
                ctx.operation.method.upper() == "POST" and ctx.operation.path == "/api/sandbox/runs"
            )
        )
    )


def test_api_answers_only_documented_non_5xx_statuses(
    api_schema: Any, token_header: dict[str, str], fuzz_app: Flask
) -> None:
    # schemathesis' pytest plugin does not load under pytest 9: drive its strategies directly.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    doc = fuzz_app.test_client().get("/api/openapi.json").get_json()
    documented = {
        (method, path): [code for code in op["responses"] if code != "default"]
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if isinstance(op, dict) and "responses" in op
    }
    assert len(operations) >= 6, [op.label for op in operations]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            headers = dict(token_header)
            if case.path.endswith("/logs"):
                headers["Accept"] = "application/json"  # a page, never a stream that follows
            if case.method.upper() == "POST" and isinstance(case.body, dict):
                case.body["dryRun"] = True
                case.body.pop("callback", None)  # would resolve outside host names
                case.body.pop("github", None)
            response = case.call_and_validate(
                headers=headers, checks=[not_a_server_error, status_code_conformance]
            )
            # flask-smorest documents a "default" error response, which lets every status
            # conform; hold each answer to the codes the operation names explicitly.
            named = set(documented[(case.method.lower(), case.operation.path)])
            assert str(response.status_code) in named, (
                case.method,
                case.path,
                response.status_code,
            )

        check()
