"""The real fleet as processes (gunicorn api + three Celery workers), driven over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.auth import issue_token
from shared.config import Settings, load_settings
from shared.db.migrate import ensure_database, migrate
from shared.states import TERMINAL

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Fleet:
    """A running fleet and an authenticated HTTP client for it."""

    base: str
    token: str
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, body: Any, **kwargs: Any) -> requests.Response:
        return requests.post(
            f"{self.base}/api/sandbox/runs",
            json=body,
            headers={**self.auth, **kwargs.pop("headers", {})},
            timeout=30,
            **kwargs,
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(
            f"{self.base}{path}",
            headers={**self.auth, **kwargs.pop("headers", {})},
            timeout=30,
            **kwargs,
        )

    def submit(self, body: dict[str, Any]) -> str:
        response = self.post(body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def wait(self, run_id: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run: dict[str, Any] = self.get(f"/api/sandbox/runs/{run_id}").json()
            if run["status"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s")
            time.sleep(0.1)

    def run(self, body: dict[str, Any], timeout: float = 90.0) -> dict[str, Any]:
        return self.wait(self.submit(body), timeout)

    def log_lines(self, run_id: str) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.get(f"/api/sandbox/runs/{run_id}/logs", params={"after": after}).json()
            lines += page["lines"]
            after = page["nextAfter"]
            if page["complete"] or not page["lines"]:
                return lines


def start_fleet(
    env: dict[str, str], logs: Path, port: int, only: tuple[str, ...] | None = None
) -> dict[str, subprocess.Popen[bytes]]:
    commands = {
        "api": [
            str(BIN / "gunicorn"),
            "-c",
            "services/api/gunicorn.conf.py",
            "-b",
            f"127.0.0.1:{port}",
            "services.api.wsgi:app",
        ],
        "provisioner": [
            str(BIN / "celery"),
            "-A",
            "services.provisioner.worker",
            "worker",
            "-Q",
            "provision",
            "-c",
            "2",
            "-n",
            f"provisioner-{port}@%h",
        ],
        "executor": [
            str(BIN / "celery"),
            "-A",
            "services.executor.worker",
            "worker",
            "-Q",
            "execute",
            "-c",
            "4",
            "-n",
            f"executor-{port}@%h",
        ],
        "beat": [
            str(BIN / "celery"),
            "-A",
            "services.finalizer.worker",
            "beat",
            "--schedule",
            str(logs / "celerybeat-schedule"),
        ],
        "finalizer": [
            str(BIN / "celery"),
            "-A",
            "services.finalizer.worker",
            "worker",
            "-Q",
            "finalize,maintenance",
            "-c",
            "2",
            "-n",
            f"finalizer-{port}@%h",
        ],
    }
    procs = {}
    for name, cmd in commands.items():
        if only is not None and name not in only:
            continue
        out = (logs / f"{name}.log").open("ab")
        procs[name] = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return procs


def stop_fleet(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_ready(
    base: str, procs: dict[str, subprocess.Popen[bytes]], logs: Path, path: str = "/readyz"
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {(logs / f'{name}.log').read_text()[-3000:]}")
        try:
            if requests.get(f"{base}{path}", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("the fleet did not become ready")


@pytest.fixture(scope="session")
def fleet_env(settings_env: dict[str, str], worker_id: str) -> dict[str, str]:
    """The fleet gets a database and Redis db of its own, apart from the in-process tests'."""
    database_url = settings_env["SANDBOX_DATABASE_URL"] + "_fleet"
    ensure_database(database_url)
    migrate(database_url)
    index = 0 if worker_id == "master" else int(worker_id.removeprefix("gw"))
    broker = settings_env["SANDBOX_BROKER_URL"].rsplit("/", 1)[0] + f"/{8 + index % 8}"
    return {**settings_env, "SANDBOX_DATABASE_URL": database_url, "SANDBOX_BROKER_URL": broker}


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
