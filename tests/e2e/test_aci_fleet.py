"""The Docker end-to-end scenarios, on Azure Container Instances (the ARM simulator).

The fleet runs as real processes with ``SANDBOX_BACKEND=aci``; the executor's real ARM client
talks HTTPS to ``tests/sim/aci_sim.py`` on 127.0.0.1, whose containers are scripted from the
input (see that module). Methods ``test.auto*`` use ``auto`` and ``test.docker*`` Docker.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests

from shared.auth import issue_token
from shared.backends import aci
from shared.config import load_settings
from shared.db.migrate import ensure_database, migrate
from tests.builders import run_request
from tests.fleet import (
    ROOT,
    Fleet,
    RedisServer,
    free_port,
    start_fleet,
    start_service,
    stop_fleet,
    wait_ready,
)
from tests.sim.aci_sim import AciSimulator
from tests.sim.fixtures import aci_env, aci_sim, aci_sim_session, sim_tls  # noqa: F401
from tests.sim.tls import Tls


@pytest.fixture(scope="module")
def aci_fleet(
    settings_env: dict[str, str],
    aci_sim_session: AciSimulator,  # noqa: F811
    sim_tls: Tls,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    database_url = settings_env["SANDBOX_DATABASE_URL"] + "_aci"
    ensure_database(database_url)
    migrate(database_url)
    redis = RedisServer(tmp_path_factory.mktemp("aci-redis"))
    redis.start()
    fleet_env = {
        **settings_env,
        **aci_env(aci_sim_session, sim_tls),
        "SANDBOX_DATABASE_URL": database_url,
        "SANDBOX_BROKER_URL": redis.url,
        "SANDBOX_FLEET_NAME": "aci-" + database_url.rsplit("/", 1)[1],
        "SANDBOX_BACKEND": "aci",
        "SANDBOX_BACKEND_RULES": "test.auto*=auto,test.docker*=docker",
        "SANDBOX_SWEEP_INTERVAL_S": "1",
        "SANDBOX_LEASE_TIMEOUT_S": "4",
        "SANDBOX_HEARTBEAT_INTERVAL_S": "1",
    }
    logs = tmp_path_factory.mktemp("aci-fleet-logs")
    port = free_port()
    # PYTHONPATH: the fleet imports the simulator's credential (SANDBOX_AZURE_CREDENTIAL).
    env = {**os.environ, **fleet_env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    procs = start_fleet(env, logs, port)
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(fleet_env)
    try:
        wait_ready(base, procs, logs)
        fleet = Fleet(base=base, token=issue_token(settings), logs=logs, procs=procs)
        fleet.env = env  # type: ignore[attr-defined]
        fleet.port = port  # type: ignore[attr-defined]
        yield fleet
    finally:
        stop_fleet(procs)
        redis.stop()


def _group(run: dict[str, Any]) -> str:
    return aci.group_name(run["id"], run["attempt"])


def test_success_runs_in_a_container_group_that_is_deleted_after(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    run = aci_fleet.run(run_request(input={"action": "echo", "stdout": ["hello aci"], "value": 7}))
    assert run["status"] == "succeeded", run
    assert run["backend"] == "aci"
    assert run["evaluation"] == {"echo": 7}
    assert [ln["line"] for ln in aci_fleet.log_lines(run["id"])] == ["hello aci"]
    assert _group(run) in aci_sim.deleted
    body = aci_sim.created[0]
    props = body["properties"]
    assert props["restartPolicy"] == "Never" and props["osType"] == "Linux"
    assert "ipAddress" not in props  # no public IP
    assert body["tags"]["sandbox-runner.run-id"] == run["id"]
    assert body["identity"]["type"] == "UserAssigned"
    identity = aci_fleet.env["SANDBOX_ACI_IDENTITY_ID"]  # type: ignore[attr-defined]
    assert list(body["identity"]["userAssignedIdentities"]) == [identity]
    assert props["imageRegistryCredentials"] == [
        {"server": "sandboxrunner.azurecr.io", "identity": identity}
    ]
    container = props["containers"][0]["properties"]
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["volumeMounts"] == [
        {"name": "sandbox-input", "mountPath": "/sandbox/input", "readOnly": True}
    ]


def test_non_zero_exit_fails_with_the_exit_code(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    run = aci_fleet.run(run_request(input={"action": "exit", "code": 3, "message": "no method"}))
    assert run["status"] == "failed", run
    assert run["exitCode"] == 3
    assert run["statusReason"].startswith("exit_code:")
    assert _group(run) in aci_sim.deleted


def test_wall_limit_times_out_and_deletes_the_group(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    run = aci_fleet.run(
        run_request(input={"action": "sleep", "seconds": 60}, resources={"timeoutS": 2})
    )
    assert run["status"] == "timed_out", run
    assert run["statusReason"].startswith("timeout")
    assert _group(run) in aci_sim.deleted
    assert any("elapsed" in ln["line"] for ln in aci_fleet.log_lines(run["id"]))


def test_oom_equivalent_fails_as_oom(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    run = aci_fleet.run(run_request(input={"action": "oom"}))
    assert run["status"] == "failed", run
    assert run["oomKilled"] is True
    assert run["statusReason"].startswith("oom")


def test_auto_falls_back_to_docker_when_aci_answers_503(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    aci_sim.unavailable = True
    run = aci_fleet.run(run_request(methodId="test.auto_echo"))
    assert run["status"] == "succeeded", run
    assert run["backend"] == "docker"
    with psycopg.connect(aci_fleet.env["SANDBOX_DATABASE_URL"]) as conn:  # type: ignore[attr-defined]
        plan = conn.execute("SELECT plan FROM sandbox_run WHERE id = %s", (run["id"],)).fetchone()[
            0
        ]
    assert plan["backendChoice"]["asked"] == "auto"
    assert plan["backendChoice"]["chosen"] == "docker"
    assert "503" in plan["backendChoice"]["fallbackReason"]
    assert not aci_sim.created


def test_auto_falls_back_to_docker_when_aci_refuses_the_group_at_execution(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    # The usage API says yes at provisioning; the create in the executor gets 503.
    aci_sim.refuse_create = (503, "ServiceUnavailable")
    run = aci_fleet.run(run_request(methodId="test.auto_echo"))
    assert run["status"] == "succeeded", run
    assert run["backend"] == "docker"
    with psycopg.connect(aci_fleet.env["SANDBOX_DATABASE_URL"]) as conn:  # type: ignore[attr-defined]
        row = conn.execute("SELECT plan FROM sandbox_run WHERE id = %s", (run["id"],)).fetchone()
    assert row is not None
    choice = row[0]["backendChoice"]
    assert choice["asked"] == "auto" and choice["chosen"] == "docker"
    assert "at execution" in choice["fallbackReason"] and "503" in choice["fallbackReason"]
    assert not aci_sim.created


def test_output_longer_than_the_aci_log_window_is_kept_whole(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    aci_sim.running_log_bytes = 32 * 1024  # ACI's window is 4 MB: make it slide here
    run = aci_fleet.run(
        run_request(input={"action": "spam", "lines": 2500, "width": 80, "seconds": 8})
    )
    assert run["status"] == "succeeded", run
    lines = [ln["line"] for ln in aci_fleet.log_lines(run["id"])]
    assert lines == [(f"{i:08d} " + "x" * 80)[:80] for i in range(2500)]
    assert run["logs"]["truncated"] is False


def test_auto_uses_aci_when_it_is_available(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    run = aci_fleet.run(run_request(methodId="test.auto_echo"))
    assert run["status"] == "succeeded", run
    assert run["backend"] == "aci"


def test_image_pull_error_ends_error_with_the_azure_reason(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    aci_sim.pull_error_images = {"*"}
    run = aci_fleet.run(run_request())
    assert run["status"] == "error", run
    assert run["statusReason"].startswith("image_not_found:")
    assert "InaccessibleImage" in run["statusReason"]


def test_throttling_is_retried(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    aci_sim.throttle = 3
    run = aci_fleet.run(run_request())
    assert run["status"] == "succeeded", run
    assert run["backend"] == "aci"


def test_cancel_deletes_the_running_group(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    run_id = aci_fleet.submit(run_request(input={"action": "sleep", "seconds": 60}))
    _wait_running(aci_fleet, run_id)
    response = requests.post(
        f"{aci_fleet.base}/api/sandbox/runs/{run_id}/cancel", headers=aci_fleet.auth, timeout=30
    )
    assert response.status_code == 200, response.text
    run = aci_fleet.wait(run_id)
    assert run["status"] == "cancelled"
    _until(lambda: aci.group_name(run_id, run["attempt"]) in aci_sim.deleted)


def test_orphan_groups_are_deleted_by_the_reconciler(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    fleet_name = aci_fleet.env["SANDBOX_FLEET_NAME"]  # type: ignore[attr-defined]
    orphan = str(uuid.uuid4())
    aci_sim.add_orphan(
        aci.group_name(orphan, 1),
        {
            "sandbox-runner.run-id": orphan,
            "sandbox-runner.attempt": "1",
            "sandbox-runner.fleet": fleet_name,
        },
    )
    aci_sim.add_orphan("someone-elses", {"sandbox-runner.fleet": "another-fleet"})
    _until(lambda: aci.group_name(orphan, 1) in aci_sim.deleted)
    assert "someone-elses" in aci_sim.groups


def test_executor_killed_mid_run_is_taken_over(
    aci_fleet: Fleet,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    run_id = aci_fleet.submit(run_request(input={"action": "sleep", "seconds": 4}))
    _wait_running(aci_fleet, run_id)
    executor = aci_fleet.procs["executor"]
    os.killpg(executor.pid, signal.SIGKILL)
    executor.wait(timeout=10)
    aci_fleet.procs["executor"] = start_service(
        "executor",
        aci_fleet.env,
        aci_fleet.logs,
        aci_fleet.port,
        concurrency=4,  # type: ignore[attr-defined]
    )
    run = aci_fleet.wait(run_id, timeout=60)
    assert run["status"] == "succeeded", run
    assert run["evaluation"] == {"slept": 4}
    # Whether the new executor had to take the lease over depends on whether the dead one's
    # next poll message was still in Redis; either way one group ran the run, once.
    assert run["takeovers"] <= 1
    assert len([b for b in aci_sim.created if b["tags"]["sandbox-runner.run-id"] == run_id]) == 1


def _wait_running(fleet: Fleet, run_id: str) -> None:
    _until(lambda: fleet.get(f"/api/sandbox/runs/{run_id}").json()["status"] == "running")


def _until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)
