"""Run the real fleet as processes (gunicorn api, Celery workers, beat) and drive it over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from shared.states import TERMINAL

ROOT = Path(__file__).resolve().parents[1]
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
        run: dict[str, Any] = {"status": "unknown"}
        while True:
            try:
                response = self.get(f"/api/sandbox/runs/{run_id}")
                # A 503 while a fault test has Postgres or Redis down is expected: ask again.
                if response.status_code == 200:
                    run = response.json()
                    if run["status"] in TERMINAL:
                        return run
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s")
            time.sleep(0.1)

    def run(self, body: dict[str, Any], timeout: float = 90.0) -> dict[str, Any]:
        return self.wait(self.submit(body), timeout)

    def log_lines(self, run_id: str) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.get(
                f"/api/sandbox/runs/{run_id}/logs",
                params={"after": after},
                headers={"Accept": "application/json"},
            ).json()
            lines += page["lines"]
            after = page["nextAfter"]
            if page["complete"] or not page["lines"]:
                return lines


def service_command(name: str, port: int, logs: Path, concurrency: int = 2) -> list[str]:
    """Return the command line of one fleet service (the same ones infra/local/fleet.sh runs)."""
    celery = str(BIN / "celery")
    if name == "api":
        return [
            str(BIN / "gunicorn"),
            "-c",
            "services/api/gunicorn.conf.py",
            "-b",
            f"127.0.0.1:{port}",
            "services.api.wsgi:app",
        ]
    if name == "beat":
        return [
            celery,
            "-A",
            "services.finalizer.worker",
            "beat",
            "--schedule",
            str(logs / "celerybeat-schedule"),
        ]
    queues = {
        "provisioner": "provision",
        "executor": "execute,aci",
        "finalizer": "finalize,maintenance,webhooks",
    }[name]
    return [
        celery,
        "-A",
        f"services.{name}.worker",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-n",
        f"{name}-{port}@%h",
    ]


def start_service(
    name: str, env: dict[str, str], logs: Path, port: int, concurrency: int = 2
) -> subprocess.Popen[bytes]:
    """Start one service in its own process group, its output appended to ``logs/<name>.log``."""
    out = (logs / f"{name}.log").open("ab")
    # Prometheus multiprocess mode, one emptied directory per service (as infra/local/fleet.sh).
    metrics_dir = logs / "metrics" / name
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    # A worker's metrics port: the caller's choice, else a free one (never the fixed defaults,
    # which a developer's own fleet may hold).
    port_var = f"SANDBOX_{name.upper()}_METRICS_PORT"
    if name in ("provisioner", "executor", "finalizer") and not env.get(port_var):
        env[port_var] = str(free_port())
    return subprocess.Popen(
        service_command(name, port, logs, concurrency),
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


SERVICES = ("api", "provisioner", "executor", "finalizer", "beat")


def start_fleet(
    env: dict[str, str], logs: Path, port: int, only: tuple[str, ...] | None = None
) -> dict[str, subprocess.Popen[bytes]]:
    """Start the fleet's services (or ``only`` some of them)."""
    return {
        name: start_service(name, env, logs, port, concurrency=4 if name == "executor" else 2)
        for name in SERVICES
        if only is None or name in only
    }


def stop_fleet(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Stop services with SIGTERM, then SIGKILL what is still there after 20 s."""
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
            proc.wait(timeout=10)


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


class RedisServer:
    """A Redis server of the test's own, with an append-only file, that the test may restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if self.cli("ping") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)  # writes the append-only file on the way out
            self.proc.wait(timeout=20)
            self.proc = None
