"""compose.yaml: its shape, and the fleet as containers of the service image running a real run.

The fleet test uses infra/compose/compose.local.yaml: the api and the three workers run as
containers of sandbox-runner/service:dev on the host's network, against the host's Postgres
(database ``sandbox_compose_test``) and Redis (db 15), with the host's Docker engine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml

from shared.auth import ensure_dev_key, issue_token
from shared.config import load_settings
from shared.db.migrate import ensure_database, migrate
from shared.queues import SERVICE_QUEUES
from shared.states import TERMINAL

pytestmark = pytest.mark.xdist_group("compose")

ROOT = Path(__file__).resolve().parents[2]
PG_BASE = os.environ.get("SANDBOX_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("SANDBOX_TEST_REDIS", "redis://127.0.0.1:6379")
FILES = ["-f", "compose.yaml", "-f", "infra/compose/compose.local.yaml"]
WORKERS = ("provisioner", "executor", "finalizer")
LONG_RUNNING = ("api", "provisioner", "executor", "finalizer", "beat", "flower")
IMAGE_BUILD_TIMEOUT_S = 600
RUN_BODY = {
    "personaId": str(uuid.uuid4()),
    "methodId": "test.run",
    "adapterImage": "localhost:5000/test-adapter:dev",
    "input": {"action": "echo", "stdout": ["hi"], "value": 1},
}


def _compose_bin() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose is missing: run infra/local/install-deps.sh")
    return path


def _compose(
    *args: str, env: dict[str, str], timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [_compose_bin(), *FILES, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker-compose {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _base_env() -> dict[str, str]:
    """The caller's environment without SANDBOX_* (compose would pass them into the fleet)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the file itself ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    """compose.yaml as docker-compose resolves it (anchors merged, variables interpolated)."""
    out = _compose_bin()
    result = subprocess.run(
        [out, "-f", "compose.yaml", "config"],
        cwd=ROOT,
        env=_base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_every_service_has_a_healthcheck(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert set(services) >= {*LONG_RUNNING, "postgres", "redis", "azurite"}
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if name == "migrate":  # a one-shot job: the others wait for it to complete instead
            assert check in ({"disable": True}, {"test": ["NONE"]})
            continue
        assert check.get("test"), f"{name} has no healthcheck"


def test_worker_queues_match_the_routing_contract(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for service, queues in SERVICE_QUEUES.items():
        command = services[service]["command"]
        assert command[command.index("-Q") + 1].split(",") == queues, service


def test_fleet_waits_for_healthy_dependencies(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name in ("api", "provisioner", "executor", "finalizer", "beat"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command
    assert "--appendfsync everysec" in redis_command


def test_executor_sees_its_temp_dir_at_the_same_path(compose_config: dict[str, Any]) -> None:
    executor = compose_config["services"]["executor"]
    tmpdir = executor["environment"]["TMPDIR"]
    assert f"{tmpdir}:{tmpdir}:rw" in executor["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock:rw" in executor["volumes"]
    assert int(executor["stop_grace_period"].rstrip("s")) > 300


# --- the fleet as containers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def service_image() -> str:
    """sandbox-runner/service:dev, built by infra/service/build.sh (layer-cached after once)."""
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "infra/service/build.sh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=IMAGE_BUILD_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"service image built in {time.monotonic() - started:.1f} s")
    return "sandbox-runner/service:dev"


@pytest.fixture(scope="module")
def compose_fleet(service_image: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The api and the three workers as containers; yields the api's base URL and the env."""
    database_url = f"{PG_BASE}/sandbox_compose_test"
    ensure_database(database_url)
    migrate(database_url)
    broker_url = f"{REDIS_BASE}/15"
    redis.Redis.from_url(broker_url).flushdb()

    # The containers run as uid 10001: both host directories must be theirs to write, and must
    # not sit under pytest's 0700 tmp root.
    state_dir = Path(tempfile.mkdtemp(prefix="sandbox-compose-state-"))
    work_dir = Path(tempfile.mkdtemp(prefix="sandbox-compose-tmp-"))
    state_dir.chmod(0o777)
    work_dir.chmod(0o1777)
    # The api verifies tokens with the dev issuer key in its state dir: create it here so this
    # test can sign tokens with it, and let the containers' user read it (a throwaway key).
    ensure_dev_key(state_dir / "dev-issuer-key.pem")
    (state_dir / "dev-issuer-key.pem").chmod(0o644)

    port = _free_port()
    project = f"sandbox-compose-test-{os.getpid()}"
    api_name = f"{project}-api"
    env = {
        **_base_env(),
        "COMPOSE_PROJECT_NAME": project,
        "SANDBOX_DATABASE_URL": database_url,
        "SANDBOX_BROKER_URL": broker_url,
        "SANDBOX_API_PORT": str(port),
        "SANDBOX_FLOWER_PORT": str(_free_port()),
        "SANDBOX_HOST_STATE_DIR": str(state_dir),
        "SANDBOX_HOST_TMPDIR": str(work_dir),
        # Its own fleet label: its reconciler must not touch other test fleets' containers.
        "SANDBOX_FLEET_NAME": project,
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
    }
    _compose("config", "-q", env=env, timeout=60)
    base = f"http://127.0.0.1:{port}"
    try:
        # The workers as services; the api with `run`, which (unlike `up`) does not publish the
        # ports compose.yaml gives it: the engine refuses published ports on the host network.
        _compose("up", "-d", "--no-deps", *WORKERS, env=env, timeout=180)
        _compose("run", "-d", "--no-deps", "--name", api_name, "api", env=env, timeout=60)
        _wait_ready(base, env)
        yield base, {**env, "SANDBOX_STATE_DIR": str(state_dir), "API_CONTAINER": api_name}
    finally:
        _compose("down", "-v", "--timeout", "20", env=env, timeout=180, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
        shutil.rmtree(work_dir, ignore_errors=True)


def _docker_logs(container: str) -> str:
    result = subprocess.run(
        ["docker", "logs", "--tail", "40", container], capture_output=True, text=True, timeout=30
    )
    return f"\n--- {container}:\n{result.stdout}{result.stderr}"


def _wait_ready(base: str, env: dict[str, str]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    logs = _compose("logs", "--tail", "40", env=env, check=False).stdout
    logs += _docker_logs(f"{env['COMPOSE_PROJECT_NAME']}-api")
    raise AssertionError(f"the api in compose did not become ready:\n{logs[-6000:]}")


@pytest.mark.timeout(IMAGE_BUILD_TIMEOUT_S + 300)
def test_fleet_in_containers_runs_an_adapter(compose_fleet: tuple[str, dict[str, str]]) -> None:
    base, env = compose_fleet
    token = issue_token(load_settings({"SANDBOX_STATE_DIR": env["SANDBOX_STATE_DIR"]}))
    headers = {"Authorization": f"Bearer {token}"}
    response = requests.post(f"{base}/api/sandbox/runs", json=RUN_BODY, headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]

    deadline = time.monotonic() + 120
    while True:
        run = requests.get(f"{base}/api/sandbox/runs/{run_id}", headers=headers, timeout=30).json()
        if run["status"] in TERMINAL or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if run["status"] != "succeeded":
        logs = _compose("logs", "--tail", "60", env=env, check=False).stdout
        raise AssertionError(
            f"run ended {run['status']}: {run.get('statusReason')}\n{logs[-8000:]}"
        )
    assert run["evaluation"] == {"echo": 1}
    assert run["exitCode"] == 0

    # Each container's health check, as compose configures it, answers (Docker runs it every 30 s).
    config = yaml.safe_load(_compose("config", env=env).stdout)["services"]
    for service in WORKERS:
        test = config[service]["healthcheck"]["test"]
        assert test[0] == "CMD", (service, test)
        check = _compose("exec", "-T", service, *test[1:], env=env, check=False)
        assert check.returncode == 0, (service, check.stdout, check.stderr)
    check = subprocess.run(
        ["docker", "exec", env["API_CONTAINER"], *config["api"]["healthcheck"]["test"][1:]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, ("api", check.stdout, check.stderr)
