"""Bad requests over real HTTP get clear JSON errors, never a stack trace or a half-written run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests

from shared.auth import issue_token
from shared.config import Settings
from tests.builders import run_request
from tests.fleet import Fleet, free_port, start_fleet, stop_fleet, wait_ready

pytestmark = pytest.mark.xdist_group("fleet")


def test_no_token_is_401(fleet: Fleet) -> None:
    response = requests.post(f"{fleet.base}/api/sandbox/runs", json=run_request(), timeout=10)
    assert response.status_code == 401
    assert response.json()["message"].startswith("missing Authorization header")


def test_unknown_run_is_404(fleet: Fleet) -> None:
    response = fleet.get("/api/sandbox/runs/2b0c1f5e-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert response.json() == {
        "code": 404,
        "status": "Not Found",
        "message": "no run with id '2b0c1f5e-0000-4000-8000-000000000000'",
    }


def test_bad_field_is_422_and_big_input_is_413(fleet: Fleet) -> None:
    response = fleet.post(run_request(methodId="nodots"))
    assert response.status_code == 422
    assert response.json()["errors"]["json"]["methodId"] == ["must look like adapter.method"]
    big = fleet.post(run_request(input={"blob": "x" * (1024 * 1024 + 10)}))
    assert big.status_code == 413
    assert big.headers["Content-Type"].startswith("application/json")


@pytest.fixture
def api_without_broker(
    fleet_settings: Settings, fleet_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A second api process whose broker is down (the Postgres one is the real one)."""
    logs = tmp_path_factory.mktemp("api-no-broker")
    port = free_port()
    env = {**os.environ, **fleet_env, "SANDBOX_BROKER_URL": "redis://127.0.0.1:1/0"}
    procs = start_fleet(env, logs, port, only=("api",))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, procs, logs, path="/healthz")
        yield base
    finally:
        stop_fleet(procs)


def test_broker_down_still_accepts_and_the_run_completes_later(
    api_without_broker: str, fleet_settings: Settings, fleet: Fleet
) -> None:
    """The outbox keeps the dispatch: the fleet's relay rings the provisioner for it."""
    body = run_request(input={"action": "echo", "value": "broker-down-probe"})
    response = requests.post(
        f"{api_without_broker}/api/sandbox/runs",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {issue_token(fleet_settings)}"},
    )
    assert response.status_code == 202
    run = fleet.wait(response.json()["id"], timeout=60)
    assert run["status"] == "succeeded"
    assert run["evaluation"] == {"echo": "broker-down-probe"}


def test_database_down_is_503_without_details(
    fleet_settings: Settings, fleet_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    logs = tmp_path_factory.mktemp("api-no-db")
    port = free_port()
    env = {
        **os.environ,
        **fleet_env,
        "SANDBOX_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
    }
    procs = start_fleet(env, logs, port, only=("api",))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, procs, logs, path="/healthz")
        response = requests.post(
            f"{base}/api/sandbox/runs",
            json=run_request(),
            timeout=30,
            headers={"Authorization": f"Bearer {issue_token(fleet_settings)}"},
        )
        assert response.status_code == 503
        assert response.json()["message"] == "service unavailable: cannot reach the database"
        ready = requests.get(f"{base}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"postgres": "unreachable", "broker": "ok"}
    finally:
        stop_fleet(procs)
