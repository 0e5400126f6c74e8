"""The api in-process (Flask test client) against real Postgres and Redis."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from psycopg_pool import ConnectionPool

from services.api.app import create_app
from shared.auth import issue_token
from shared.config import Settings
from shared.db import outbox
from tests.builders import run_request


def count_runs(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        return conn.execute("SELECT count(*) AS n FROM sandbox_run").fetchone()["n"]  # type: ignore[index]


def test_submit_persists_the_run_and_rings_the_provisioner(
    client: FlaskClient, auth: dict[str, str], pool: ConnectionPool, settings: Settings
) -> None:
    broker = redis.Redis.from_url(settings.broker_url)
    broker.delete("provision")
    response = client.post("/api/sandbox/runs", json=run_request(), headers=auth)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    assert response.headers["Location"] == f"/api/sandbox/runs/{body['id']}"
    deadline = time.monotonic() + 10
    while not broker.llen("provision") and time.monotonic() < deadline:
        time.sleep(0.05)  # the api publishes from a helper thread right after the commit
    while True:  # marked sent soon after, so the relay does not publish it again
        with pool.connection() as conn:
            rows = outbox.events_for_run(conn, body["id"])
        if rows[1]["sent_at"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(r["kind"], r["payload"].get("status")) for r in rows] == [
        ("sandbox.run.state_changed", "queued"),
        ("sandbox.dispatch", None),
    ]
    assert rows[1]["sent_at"] is not None, "marked sent once published"
    message = json.loads(broker.lpop("provision"))  # type: ignore[arg-type]
    assert message["headers"]["task"] == "sandbox.provision"
    # The message names the run and nothing else: no input, no secrets.
    assert json.loads(base64.b64decode(message["body"]))[0] == [body["id"]]
    # Its id is the dispatch row's stable id, so a consumer can drop a duplicate.
    assert message["headers"]["id"] == str(rows[1]["event_id"])


def test_get_returns_the_run_and_unknown_ids_are_404(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    created = client.post("/api/sandbox/runs", json=run_request(), headers=auth).get_json()
    run = client.get(f"/api/sandbox/runs/{created['id']}", headers=auth).get_json()
    assert run["status"] == "queued" and run["methodId"] == "test.run"
    assert run["timestamps"]["queued"] is not None and run["timestamps"]["finalized"] is None
    for missing in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        response = client.get(f"/api/sandbox/runs/{missing}", headers=auth)
        assert response.status_code == 404
        assert response.get_json()["code"] == 404
        logs = client.get(f"/api/sandbox/runs/{missing}/logs", headers=auth)
        assert logs.status_code == 404


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not.a.token",
    ],
)
def test_requests_without_a_valid_token_are_401(
    client: FlaskClient, header: str | None, pool: ConnectionPool
) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.post("/api/sandbox/runs", json=run_request(), headers=headers)
    assert response.status_code == 401
    assert response.get_json()["message"]
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert count_runs(pool) == 0


def test_expired_and_foreign_tokens_are_401_and_say_why(
    client: FlaskClient, settings: Settings, tmp_path: Any
) -> None:
    expired = issue_token(settings, ttl_s=-120)
    response = client.get("/api/sandbox/runs/x", headers={"Authorization": f"Bearer {expired}"})
    assert (response.status_code, response.get_json()["message"]) == (401, "token expired")
    other = dataclasses.replace(settings, state_dir=tmp_path)  # another issuer key
    forged = issue_token(other)
    response = client.get("/api/sandbox/runs/x", headers={"Authorization": f"Bearer {forged}"})
    assert (response.status_code, response.get_json()["message"]) == (
        401,
        "token signature is invalid",
    )
    assert forged not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"personaId": "123"}, "personaId"),
        ({"methodId": "nodot"}, "methodId"),
        ({"adapterImage": "bad image"}, "adapterImage"),
        ({"input": [1, 2]}, "input"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    client: FlaskClient,
    auth: dict[str, str],
    pool: ConnectionPool,
    change: dict[str, Any],
    field: str,
) -> None:
    response = client.post("/api/sandbox/runs", json=run_request(**change), headers=auth)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]["json"]
    assert count_runs(pool) == 0


def test_malformed_json_is_a_4xx_json_error(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/api/sandbox/runs", data="{nope", headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)
    assert response.is_json


def test_an_input_over_the_cap_is_413(
    client: FlaskClient, auth: dict[str, str], settings: Settings, pool: ConnectionPool
) -> None:
    big = {"action": "echo", "blob": "x" * (settings.max_input_bytes + 1)}
    response = client.post("/api/sandbox/runs", json=run_request(input=big), headers=auth)
    assert response.status_code == 413
    assert "limit" in response.get_json()["message"]
    huge = {"blob": "x" * (settings.max_input_bytes * 5)}
    assert (
        client.post("/api/sandbox/runs", json=run_request(input=huge), headers=auth).status_code
        == 413
    )
    assert count_runs(pool) == 0


def test_broker_down_keeps_the_run_and_its_dispatch_in_the_outbox(
    settings: Settings, pool: ConnectionPool
) -> None:
    app = create_app(dataclasses.replace(settings, broker_url="redis://127.0.0.1:1/0"))
    client = app.test_client()
    response = client.post(
        "/api/sandbox/runs",
        json=run_request(),
        headers={"Authorization": f"Bearer {issue_token(settings)}"},
    )
    assert response.status_code == 202
    run_id = response.get_json()["id"]
    with pool.connection() as conn:
        rows = outbox.events_for_run(conn, run_id)
    assert [(r["kind"], r["sent_at"] is None) for r in rows] == [
        ("sandbox.run.state_changed", True),
        ("sandbox.dispatch", True),
    ]
    assert rows[1]["payload"] == {"task": "sandbox.provision", "runId": run_id, "attempt": None}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["broker"] == "unreachable"
    app.extensions["sandbox_runtime"].close()


def test_database_down_is_503(settings: Settings) -> None:
    app = create_app(
        dataclasses.replace(settings, database_url="postgresql://postgres@127.0.0.1:1/none")
    )
    client = app.test_client()
    response = client.post(
        "/api/sandbox/runs",
        json=run_request(),
        headers={"Authorization": f"Bearer {issue_token(settings)}"},
    )
    assert response.status_code == 503
    assert response.get_json()["message"] == "service unavailable: cannot reach the database"
    assert "Traceback" not in response.get_data(as_text=True)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["postgres"] == "unreachable"
    app.extensions["sandbox_runtime"].close()


def test_idempotency_key_returns_the_same_run_and_refuses_another_body(
    client: FlaskClient, auth: dict[str, str], pool: ConnectionPool
) -> None:
    headers = {**auth, "Idempotency-Key": "deploy-42"}
    first = client.post("/api/sandbox/runs", json=run_request(), headers=headers)
    again = client.post("/api/sandbox/runs", json=run_request(), headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/api/sandbox/runs", json=run_request(dryRun=True), headers=headers)
    assert other.status_code == 409
    assert "different request body" in other.get_json()["message"]
    assert count_runs(pool) == 1
    # Expired keys start a new run.
    with pool.connection() as conn:
        conn.execute("UPDATE idempotency_key SET expires_at = now() - interval '1 second'")
    fresh = client.post("/api/sandbox/runs", json=run_request(), headers=headers)
    assert fresh.get_json()["id"] != first.get_json()["id"]


def test_cancel_is_idempotent_and_refused_for_finished_runs(
    client: FlaskClient, auth: dict[str, str], pool: ConnectionPool
) -> None:
    run_id = client.post("/api/sandbox/runs", json=run_request(), headers=auth).get_json()["id"]
    first = client.post(f"/api/sandbox/runs/{run_id}/cancel", headers=auth)
    assert first.status_code == 200 and first.get_json()["status"] == "cancelled"
    assert first.get_json()["statusReason"] == "cancelled: by local-developer"
    again = client.post(f"/api/sandbox/runs/{run_id}/cancel", headers=auth)
    assert again.status_code == 200
    with pool.connection() as conn:
        events = [
            e
            for e in outbox.events_for_run(conn, run_id)
            if e["payload"].get("status") == "cancelled"
        ]
    assert len(events) == 1, "one completion event, however often cancel is called"
    other = client.post("/api/sandbox/runs", json=run_request(), headers=auth).get_json()["id"]
    with pool.connection() as conn:
        conn.execute(
            "UPDATE sandbox_run SET status = 'error', finalized_at = now() WHERE id = %s", (other,)
        )
    refused = client.post(f"/api/sandbox/runs/{other}/cancel", headers=auth)
    assert refused.status_code == 409
    assert refused.get_json()["message"].startswith("run already ended error")
    missing = client.post(f"/api/sandbox/runs/{uuid.uuid4()}/cancel", headers=auth)
    assert missing.status_code == 404


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json()["status"] == "ready"


def test_openapi_document_describes_the_runs_api(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").get_json()
    assert "/api/sandbox/runs" in spec["paths"]
    assert "RunRequest" in spec["components"]["schemas"]


def test_a_nul_character_in_a_parameter_is_a_422_not_a_500(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    listing = client.get("/api/sandbox/runs?methodId=a%00b", headers=auth)
    assert listing.status_code == 422
    assert "methodId" in listing.get_json()["errors"]["query"]
    anywhere = client.get("/api/sandbox/admin/policies/methods/a%00b", headers=auth)
    assert anywhere.status_code in (404, 422)
