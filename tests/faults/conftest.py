"""A fleet to break: its own Redis server, database and short timers, services it can kill."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest
from psycopg.rows import dict_row

from shared.auth import issue_token
from shared.backends import docker as docker_backend
from shared.config import Settings, load_settings
from shared.db.migrate import ensure_database, migrate
from shared.states import TERMINAL
from tests.fleet import SERVICES, Fleet, RedisServer, free_port, start_service, wait_ready

# Short timers so every recovery path runs in seconds; the same code runs with the defaults.
FAULT_TIMERS = {
    "SANDBOX_HEARTBEAT_INTERVAL_S": "0.5",
    "SANDBOX_LEASE_TIMEOUT_S": "4",
    "SANDBOX_SWEEP_INTERVAL_S": "1",
    "SANDBOX_RESEND_AFTER_S": "3",
    "SANDBOX_MAX_ATTEMPTS": "3",
    "SANDBOX_STEP_DEADLINE_S": "60",
    "SANDBOX_QUEUE_DEADLINE_S": "120",
    "SANDBOX_RUN_GRACE_S": "20",
}
SWEEP_S = 1.0


@dataclass
class FaultFleet(Fleet):
    """The fleet under test plus the controls a fault scenario needs."""

    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    settings: Settings | None = None
    redis: RedisServer | None = None
    fault_dir: Path = Path()

    def start(self, name: str, concurrency: int = 2, **env: str) -> None:
        self.procs[name] = start_service(
            name, {**self.env, **env}, self.logs, self.port, concurrency
        )

    def signal(self, name: str, sig: int, wait_s: float = 30.0) -> None:
        """Send ``sig`` to a service and wait for it to end.

        SIGKILL goes to the whole process group (a node dying); any other signal to the main
        process only, as ``docker stop`` or Kubernetes deliver it.
        """
        proc = self.procs.pop(name)
        try:
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)

    def arm(self, point: str, mode: str = "once") -> None:
        (self.fault_dir / point).write_text(mode)

    def disarm(self, point: str) -> None:
        (self.fault_dir / point).unlink(missing_ok=True)

    def db(self) -> psycopg.Connection[Any]:
        assert self.settings is not None
        return psycopg.connect(self.settings.database_url, autocommit=True, row_factory=dict_row)

    def row(self, run_id: str) -> dict[str, Any]:
        with self.db() as conn:
            row = conn.execute("SELECT * FROM sandbox_run WHERE id = %s", (run_id,)).fetchone()
        assert row is not None
        return row

    def wait_status(self, run_id: str, statuses: set[str], timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            row = self.row(run_id)
            if row["status"] in statuses:
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} is {row['status']}, not in {statuses}")
            time.sleep(0.05)

    def wait_printed(self, run_id: str, lines: int, timeout: float = 30.0) -> None:
        """Wait until the run has stored ``lines`` log lines (its container is mid-run)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db() as conn:
                n = conn.execute(
                    "SELECT count(*) AS n FROM sandbox_run_log WHERE run_id = %s", (run_id,)
                ).fetchone()["n"]  # type: ignore[index]
            if n >= lines:
                return
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} printed fewer than {lines} lines")

    def containers(self, run_id: str) -> list[Any]:
        client = docker.from_env()
        return client.containers.list(
            all=True, filters={"label": f"{docker_backend.LABEL_RUN}={run_id}"}
        )

    def check(self, run_ids: list[str], timeout: float = 90.0) -> dict[str, dict[str, Any]]:
        """The oracle every scenario ends with: guarantees G1-G4 and G6 for these runs."""
        deadline = time.monotonic() + timeout
        runs = {}
        for run_id in run_ids:  # G1, G2: every accepted run ends, within the bound
            runs[run_id] = self.wait(run_id, max(1.0, deadline - time.monotonic()))
        with self.db() as conn:
            for run_id in run_ids:
                events = conn.execute(
                    "SELECT payload FROM outbox WHERE run_id = %s "
                    "AND kind = 'sandbox.run.state_changed' ORDER BY id",
                    (run_id,),
                ).fetchall()
                terminal = [e for e in events if e["payload"]["status"] in TERMINAL]
                assert len(terminal) == 1, f"G3: {len(terminal)} completion events for {run_id}"
                row = conn.execute(
                    "SELECT attempt, takeovers, status FROM sandbox_run WHERE id = %s", (run_id,)
                ).fetchone()
                assert row is not None
                lines = conn.execute(
                    "SELECT seq, attempt FROM sandbox_run_log WHERE run_id = %s ORDER BY seq",
                    (run_id,),
                ).fetchall()
                assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1)), (
                    f"G3: log lines of {run_id} have gaps or repeats"
                )
                assert {x["attempt"] for x in lines} <= {row["attempt"]}, (
                    f"G3: lines of a stale attempt kept for {run_id}"
                )
                assert row["takeovers"] <= 3 and row["attempt"] <= 4, f"G6: {run_id} {row}"
        # G4: no container of these runs survives two sweeps (plus the engine's own latency).
        orphan_deadline = time.monotonic() + 2 * SWEEP_S + 10
        while True:
            left = [r for r in run_ids if self.containers(r)]
            if not left:
                break
            assert time.monotonic() < orphan_deadline, f"G4: containers left for {left}"
            time.sleep(0.2)
        return runs


@pytest.fixture(scope="session")
def fault_db(settings_env: dict[str, str]) -> str:
    url = settings_env["SANDBOX_DATABASE_URL"] + "_faults"
    ensure_database(url)
    migrate(url)
    return url


@pytest.fixture
def fault_fleet(
    settings_env: dict[str, str], fault_db: str, tmp_path: Path
) -> Iterator[FaultFleet]:
    with psycopg.connect(fault_db, autocommit=True) as conn:
        conn.execute("TRUNCATE sandbox_run_log, outbox, idempotency_key, sandbox_run")
    redis = RedisServer(tmp_path / "redis")
    redis.dir.mkdir()
    redis.start()
    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        **settings_env,
        **FAULT_TIMERS,
        "PYTHONUNBUFFERED": "1",
        "SANDBOX_DATABASE_URL": fault_db,
        "SANDBOX_BROKER_URL": redis.url,
        "SANDBOX_FAULT_DIR": str(fault_dir),
        "SANDBOX_STATE_DIR": str(tmp_path / "state"),
    }
    settings = load_settings(env)
    port = free_port()
    fleet = FaultFleet(
        base=f"http://127.0.0.1:{port}",
        token=issue_token(settings),
        logs=logs,
        env=env,
        port=port,
        settings=settings,
        redis=redis,
        fault_dir=fault_dir,
    )
    for name in SERVICES:
        fleet.start(name)
    try:
        wait_ready(fleet.base, fleet.procs, logs)
        yield fleet
    finally:
        for name in list(fleet.procs):
            fleet.signal(name, signal.SIGKILL)
        redis.stop()
        _remove_containers_of_db(fault_db, settings.fleet_name)


def _remove_containers_of_db(database_url: str, fleet: str) -> None:
    """Leave no container behind, whatever a failed scenario left."""
    with psycopg.connect(database_url) as conn:
        ids = {str(r[0]) for r in conn.execute("SELECT id FROM sandbox_run").fetchall()}
    client = docker.from_env()
    for run_id, _, container in docker_backend.list_sandbox_containers(client, fleet):
        if run_id in ids:
            docker_backend.remove_labelled(container)


def new_uuid() -> str:
    return str(uuid.uuid4())
