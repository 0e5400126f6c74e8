"""Result webhooks and commit statuses end to end in process: api -> relay -> deliveries -> HTTP.

Real Postgres; receivers are threaded http.servers on 127.0.0.1 (allow-listed explicitly).
The beat task's logic (``deliver_due``) and the relay are called as plain functions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg_pool import ConnectionPool

from services.api.app import create_app
from services.finalizer.housekeeping import relay_outbox
from services.finalizer.webhooks import deliver_due, send
from shared.auth import issue_token
from shared.celery_app import make_celery
from shared.config import Settings, load_settings
from shared.db import deliveries
from shared.db import runs as runs_db
from shared.runtime import Runtime
from shared.states import RunStatus
from shared.webhooks import signing
from tests.builders import run_request
from tests.httpfakes import FakeServer, Request

HOOK_SECRET = "whsec-test-5ecret-Zq81x"
GH_TOKEN = "ghp_fakeTokenForTests0123456789abcdefABCD"
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def clean(pool: ConnectionPool, database_url: str) -> Iterator[ConnectionPool]:
    yield pool
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE webhook_attempt, webhook_delivery")


@pytest.fixture
def receiver() -> Iterator[FakeServer]:
    """Fails the first two attempts of every delivery, then answers 204."""
    seen: dict[str, int] = {}

    def respond(req: Request) -> tuple[int, Any]:
        key = req.headers.get("X-Sandbox-Delivery", "?")
        seen[key] = seen.get(key, 0) + 1
        return (500, {"error": "not yet"}) if seen[key] <= 2 else (204, b"")

    server = FakeServer(respond)
    yield server
    server.close()


@pytest.fixture
def github_api() -> Iterator[FakeServer]:
    """A fake statuses endpoint: the first request fails (so ordering is put to the test)."""

    def respond(req: Request) -> tuple[int, Any]:
        if req.headers.get("Authorization") != f"Bearer {GH_TOKEN}":
            return 401, {"message": "Bad credentials"}
        if not req.path.startswith(f"/repos/octo/app/statuses/{SHA}"):
            return 404, {"message": "Not Found"}
        return (500, {"message": "boom"}) if len(github_api_requests) == 0 else (201, {"id": 1})

    github_api_requests: list[Request] = []
    server = FakeServer(respond, requests=github_api_requests)
    yield server
    server.close()


def make_settings(
    settings_env: dict[str, str], github_url: str = "http://127.0.0.1:9", **extra: str
) -> Settings:
    return load_settings(
        {
            **settings_env,
            "SANDBOX_WEBHOOK_ALLOW_HTTP": "true",
            "SANDBOX_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
            "SANDBOX_WEBHOOK_BACKOFF_BASE_S": "0.05",
            "SANDBOX_WEBHOOK_BACKOFF_MAX_S": "0.2",
            "SANDBOX_WEBHOOK_HORIZON_S": "60",
            "SANDBOX_WEBHOOK_TIMEOUT_S": "3",
            "SANDBOX_GITHUB_API_URL": github_url,
            "SANDBOX_GITHUB_TOKEN_REF": "env:SANDBOX_WEBHOOK_SECRET_GH_TOKEN",
            "SANDBOX_PUBLIC_URL": "https://sandbox.example",
            **extra,
        }
    )


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_WEBHOOK_SECRET_TEST", HOOK_SECRET)
    monkeypatch.setenv("SANDBOX_WEBHOOK_SECRET_GH_TOKEN", GH_TOKEN)


@pytest.fixture
def app_and_runtime(
    settings_env: dict[str, str], clean: ConnectionPool, github_api: FakeServer
) -> Iterator[tuple[Flask, Runtime]]:
    settings = make_settings(settings_env, github_api.url)
    app = create_app(settings)
    rt = Runtime(settings, make_celery("test-webhooks", settings))
    yield app, rt
    rt.close()
    app.extensions["sandbox_runtime"].close()


def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings)}"}


def walk_to(rt: Runtime, run_id: uuid.UUID, end: RunStatus, **final: Any) -> None:
    """Move a run through the state machine as the workers would."""
    path = [RunStatus.PROVISIONING, RunStatus.READY, RunStatus.RUNNING, RunStatus.FINALIZING]
    with rt.pool.connection() as conn:
        for status in path:
            assert runs_db.transition(conn, run_id, status) is not None
        assert runs_db.transition(conn, run_id, end, **final) is not None


def pump(rt: Runtime, run_id: uuid.UUID, expected: int, timeout: float = 30.0) -> None:
    """Relay events and send due deliveries until ``expected`` deliveries are settled."""
    deadline = time.monotonic() + timeout
    while True:
        relay_outbox(rt, older_than_s=0)
        deliver_due(rt)
        with rt.pool.connection() as conn:
            found = deliveries.for_run(conn, run_id)
        if len(found) >= expected and all(d.state != "pending" for d in found):
            return
        assert time.monotonic() < deadline, [(d.event_status, d.state) for d in found]
        time.sleep(0.02)


def test_a_flaky_receiver_gets_one_success_per_state_change_in_order(
    app_and_runtime: tuple[Flask, Runtime], receiver: FakeServer
) -> None:
    app, rt = app_and_runtime
    client: FlaskClient = app.test_client()
    callback = {"url": f"{receiver.url}/hook", "secretRef": "env:SANDBOX_WEBHOOK_SECRET_TEST"}
    response = client.post(
        "/api/sandbox/runs", json=run_request(callback=callback), headers=auth(rt.settings)
    )
    assert response.status_code == 202, response.get_json()
    run_id = uuid.UUID(response.get_json()["id"])
    walk_to(
        rt,
        run_id,
        RunStatus.SUCCEEDED,
        evaluation={"score": 7, "note": f"mail bob@example.com, key {HOOK_SECRET}"},
        logs_preview={"head": ["hello"], "tail": []},
    )
    pump(rt, run_id, expected=6)

    ok = [r for r in receiver.requests if r.answered == 204]
    statuses = [r.json()["status"] for r in ok]
    assert statuses == ["queued", "provisioning", "ready", "running", "finalizing", "succeeded"]
    assert len(receiver.requests) == 18  # two failures and one success for each change
    for req in receiver.requests:
        assert req.method == "POST" and req.path == "/hook"
        assert req.headers["X-Sandbox-Event"] == "sandbox.run.state_changed"
        assert signing.verify(HOOK_SECRET, req.body, req.headers["X-Sandbox-Signature-256"])
        assert HOOK_SECRET.encode() not in req.body
    assert len({r.headers["X-Sandbox-Delivery"] for r in ok}) == 6
    final = ok[-1].json()
    assert set(final) == {"runId", "status", "statusReason", "evaluation", "logsPreview", "links"}
    assert final["runId"] == str(run_id)
    assert final["evaluation"]["score"] == 7
    assert "bob@example.com" not in final["evaluation"]["note"]
    assert final["logsPreview"] == {"head": ["hello"], "tail": []}
    assert final["links"]["self"] == f"https://sandbox.example/api/sandbox/runs/{run_id}"
    assert ok[0].json()["evaluation"] is None  # no result before the run is over

    listing = client.get(f"/api/sandbox/runs/{run_id}/deliveries", headers=auth(rt.settings))
    assert listing.status_code == 200
    rows = listing.get_json()["deliveries"]
    assert [d["eventStatus"] for d in rows] == statuses
    for row in rows:
        assert row["state"] == "succeeded" and row["attempts"] == 3
        assert [a["statusCode"] for a in row["attemptLog"]] == [500, 500, 204]
        assert row["attemptLog"][0]["error"] == "HTTP 500"
        assert row["target"] == {"url": callback["url"]}

    # Re-send the final one: a new delivery (new id) with the same body.
    last = rows[-1]
    again = client.post(
        f"/api/sandbox/runs/{run_id}/deliveries/{last['id']}/redeliver",
        headers=auth(rt.settings),
    )
    assert again.status_code == 202
    assert again.get_json()["redeliveryOf"] == last["id"]
    pump(rt, run_id, expected=7)
    resent = [r for r in receiver.requests if r.answered == 204][-1]
    assert resent.json() == final
    assert resent.headers["X-Sandbox-Delivery"] == again.get_json()["id"]
    missing = client.post(
        f"/api/sandbox/runs/{run_id}/deliveries/{uuid.uuid4()}/redeliver",
        headers=auth(rt.settings),
    )
    assert missing.status_code == 404 and missing.get_json()["code"] == 404


def test_commit_statuses_are_posted_in_order(
    app_and_runtime: tuple[Flask, Runtime], github_api: FakeServer
) -> None:
    app, rt = app_and_runtime
    github = {"repository": "octo/app", "sha": SHA, "context": "sandbox/seo"}
    response = app.test_client().post(
        "/api/sandbox/runs", json=run_request(github=github), headers=auth(rt.settings)
    )
    assert response.status_code == 202, response.get_json()
    run_id = uuid.UUID(response.get_json()["id"])
    walk_to(rt, run_id, RunStatus.SUCCEEDED, evaluation={"score": 1})
    pump(rt, run_id, expected=2)

    sent = [(r.answered, r.json()["state"]) for r in github_api.requests]
    # The pending status failed once; success waited for it instead of overtaking it.
    assert sent == [(500, "pending"), (201, "pending"), (201, "success")]
    for req in github_api.requests:
        assert req.method == "POST" and req.path == f"/repos/octo/app/statuses/{SHA}"
        assert req.headers["Accept"] == "application/vnd.github+json"
        body = req.json()
        assert body["context"] == "sandbox/seo"
        assert body["target_url"] == f"https://sandbox.example/api/sandbox/runs/{run_id}"
        assert len(body["description"]) <= 140


def test_failed_runs_post_failure_and_errors_post_error(
    app_and_runtime: tuple[Flask, Runtime], github_api: FakeServer
) -> None:
    app, rt = app_and_runtime
    github_api.requests.append(Request("POST", "/warm", {}, b"{}", 0))  # no first failure
    ids = []
    for end in (RunStatus.FAILED, RunStatus.CANCELLED):
        body = run_request(github={"repository": "octo/app", "sha": SHA})
        run_id = uuid.UUID(
            app.test_client()
            .post("/api/sandbox/runs", json=body, headers=auth(rt.settings))
            .get_json()["id"]
        )
        walk_to(rt, run_id, end, reason=f"{end.value}: test")
        pump(rt, run_id, expected=2)
        ids.append(run_id)
    states = [r.json()["state"] for r in github_api.requests[1:]]
    assert states == ["pending", "failure", "pending", "error"]
    assert github_api.requests[2].json()["context"] == "sandbox-runner/test.run"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/hook",
        "http://127.0.0.1:9/not-allow-listed",
    ],
)
def test_callbacks_to_internal_addresses_are_refused_at_submit(
    settings_env: dict[str, str], clean: ConnectionPool, url: str
) -> None:
    settings = make_settings(settings_env, SANDBOX_WEBHOOK_ALLOWED_NETWORKS="")
    app = create_app(settings)
    try:
        body = run_request(callback={"url": url, "secretRef": "env:SANDBOX_WEBHOOK_SECRET_TEST"})
        response = app.test_client().post("/api/sandbox/runs", json=body, headers=auth(settings))
        assert response.status_code == 422
        assert "callback" in response.get_json()["errors"]["json"]
        with clean.connection() as conn:
            assert conn.execute("SELECT count(*) AS n FROM sandbox_run").fetchone()["n"] == 0
    finally:
        app.extensions["sandbox_runtime"].close()


def test_other_bad_callbacks_are_422(
    app_and_runtime: tuple[Flask, Runtime], receiver: FakeServer, settings_env: dict[str, str]
) -> None:
    app, rt = app_and_runtime
    client = app.test_client()
    cases = [
        {"url": f"{receiver.url}/h", "secretRef": "env:SANDBOX_DATABASE_URL"},  # not allowed
        {"url": f"{receiver.url}/h", "secretRef": "env:SANDBOX_WEBHOOK_SECRET_MISSING"},
        {"url": f"{receiver.url}/h"},
        {"endpoint": "nope"},
        {"endpoint": "x", "url": f"{receiver.url}/h", "secretRef": "env:X"},
    ]
    for callback in cases:
        response = client.post(
            "/api/sandbox/runs", json=run_request(callback=callback), headers=auth(rt.settings)
        )
        assert response.status_code == 422, callback
    https_only = create_app(make_settings(settings_env, SANDBOX_WEBHOOK_ALLOW_HTTP="false"))
    try:
        body = run_request(
            callback={"url": f"{receiver.url}/h", "secretRef": "env:SANDBOX_WEBHOOK_SECRET_TEST"}
        )
        response = https_only.test_client().post(
            "/api/sandbox/runs", json=body, headers=auth(rt.settings)
        )
        assert response.status_code == 422 and "https" in response.get_json()["message"]
    finally:
        https_only.extensions["sandbox_runtime"].close()
    assert receiver.requests == []


def test_an_address_that_turned_internal_is_refused_at_send_time(
    app_and_runtime: tuple[Flask, Runtime], settings_env: dict[str, str]
) -> None:
    _, rt = app_and_runtime
    with rt.pool.connection() as conn:
        for url in ("http://10.0.0.1/hook", "http://169.254.169.254/x", "http://[::1]:8080/x"):
            deliveries.add(
                conn,
                run_id=uuid.uuid4(),
                event_id=uuid.uuid4(),
                kind=deliveries.WEBHOOK,
                event_status="queued",
                target={"url": url, "secretRef": "env:SANDBOX_WEBHOOK_SECRET_TEST"},
                payload={"status": "queued"},
                horizon_s=60,
            )

    class NoNetwork:
        def post(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("must refuse before connecting")

    with rt.pool.connection() as conn:
        claimed = deliveries.claim_due(conn, 10, 30)
    assert len(claimed) == 3
    for delivery in claimed:
        outcome = send(rt, NoNetwork(), delivery)  # type: ignore[arg-type]
        assert outcome.refused and outcome.error and outcome.error.startswith("refused")
    # Through the real loop they end failed (never retried), with the attempt recorded.
    with rt.pool.connection() as conn:
        conn.execute("UPDATE webhook_delivery SET next_attempt_at = now()")
    assert deliver_due(rt) == {"failed": 3}


def test_retries_stop_at_the_horizon(settings_env: dict[str, str], clean: ConnectionPool) -> None:
    settings = make_settings(settings_env, SANDBOX_WEBHOOK_HORIZON_S="1")
    rt = Runtime(settings)
    receiver = FakeServer(lambda req: (503, {"error": "down"}))
    try:
        with rt.pool.connection() as conn:
            delivery = deliveries.add(
                conn,
                run_id=uuid.uuid4(),
                event_id=uuid.uuid4(),
                kind=deliveries.WEBHOOK,
                event_status="queued",
                target={"url": f"{receiver.url}/h", "secretRef": "env:SANDBOX_WEBHOOK_SECRET_TEST"},
                payload={"status": "queued"},
                horizon_s=0.3,
            )
        assert delivery is not None
        deadline = time.monotonic() + 20
        while True:
            deliver_due(rt)
            with rt.pool.connection() as conn:
                row = deliveries.get(conn, delivery.id)
            assert row is not None
            if row.state != "pending":
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert row.state == "dead" and row.last_status == 503
        assert row.attempts == len(receiver.requests) >= 2
    finally:
        receiver.close()
        rt.close()
