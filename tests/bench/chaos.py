"""Chaos run: N runs of mixed lengths while every service is killed at random and Redis and
Postgres are restarted once each. Prints lost / stuck / duplicated / orphaned counts and the
longest recovery time (last fault to every run terminal).

It starts its own Postgres cluster (initdb in a temporary directory, as the postgres user), its
own Redis server and its own fleet, so it disturbs nothing else on the machine. ``make chaos``.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker
import psycopg
import requests

from shared.auth import issue_token
from shared.backends import docker as docker_backend
from shared.config import load_settings
from shared.db.migrate import ensure_database, migrate
from shared.states import TERMINAL
from tests.builders import run_request
from tests.fleet import SERVICES, RedisServer, free_port, start_service, wait_ready

TIMERS = {
    "SANDBOX_HEARTBEAT_INTERVAL_S": "1",
    "SANDBOX_LEASE_TIMEOUT_S": "6",
    "SANDBOX_SWEEP_INTERVAL_S": "2",
    "SANDBOX_RESEND_AFTER_S": "5",
}
KILLABLE = ("api", "provisioner", "executor", "finalizer", "beat")


class Postgres:
    """A throwaway Postgres cluster owned by the postgres user, on a free port."""

    def __init__(self, root: Path) -> None:
        self.bin = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
        self.data = root / "pgdata"
        self.port = free_port()
        self.root = root

    def _as_postgres(self, *cmd: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120
        )

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )

    def start(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.root / "pg.log"),
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
            "start",
        )

    def restart(self) -> None:
        # stop + start rather than `pg_ctl restart`, which would not reattach the log file.
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop"
        )
        self.start()

    def stop(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "immediate", "stop"
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/sandbox_chaos"


def body(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.45:
        return run_request(input={"action": "echo", "stdout": ["chaos"], "value": 1})
    if roll < 0.80:
        return run_request(input={"action": "sleep", "seconds": rng.choice([1, 2, 3, 5])})
    if roll < 0.90:
        return run_request(input={"action": "exit", "code": 3})
    return run_request(input={"action": "spam", "lines": 300, "width": 60})


class Chaos:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args, self.root = args, root
        self.rng = random.Random(args.seed)
        self.pg = Postgres(root / "pg")
        self.redis = RedisServer(root / "redis")
        self.logs = root / "logs"
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.faults: list[tuple[float, str]] = []
        self.accepted: list[str] = []
        self.refused = 0
        self.env: dict[str, str] = {}

    def setup(self) -> None:
        self.logs.mkdir(parents=True)
        self.redis.dir.mkdir(parents=True)
        self.pg.init()
        self.pg.start()
        self.redis.start()
        ensure_database(self.pg.url)
        migrate(self.pg.url)
        self.env = {
            **os.environ,
            **TIMERS,
            "PYTHONUNBUFFERED": "1",
            "SANDBOX_DATABASE_URL": self.pg.url,
            "SANDBOX_BROKER_URL": self.redis.url,
            "SANDBOX_STATE_DIR": str(self.root / "state"),
            "SANDBOX_FLEET_NAME": "chaos",
            "SANDBOX_LOG_LEVEL": "WARNING",
        }
        for name in SERVICES:
            self.start(name)
        wait_ready(f"http://127.0.0.1:{self.port}", self.procs, self.logs)

    def start(self, name: str) -> None:
        self.procs[name] = start_service(
            name, self.env, self.logs, self.port, 4 if name == "executor" else 2
        )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def submit_all(self) -> None:
        token = issue_token(load_settings(self.env))
        headers = {"Authorization": f"Bearer {token}"}
        rng = random.Random(self.args.seed + 1)
        for i in range(self.args.runs):
            payload = body(rng)
            for _ in range(50):  # a client retries while the api is down
                try:
                    response = requests.post(
                        f"http://127.0.0.1:{self.port}/api/sandbox/runs",
                        json=payload,
                        headers=headers,
                        timeout=10,
                    )
                    if response.status_code == 202:
                        self.accepted.append(response.json()["id"])
                        break
                    self.refused += 1
                except requests.RequestException:
                    self.refused += 1
                time.sleep(0.2)
            if i % 10 == 0:
                time.sleep(self.rng.uniform(0.0, 0.5))

    def chaos_loop(self, submitter: threading.Thread) -> None:
        started = time.monotonic()
        redis_at, pg_at = self.args.seconds * 0.3, self.args.seconds * 0.6
        redis_done = pg_done = False
        while submitter.is_alive() or time.monotonic() - started < self.args.seconds:
            time.sleep(self.rng.uniform(2.0, 5.0))
            elapsed = time.monotonic() - started
            if not redis_done and elapsed > redis_at:
                self.redis.stop()
                time.sleep(1)
                self.redis.start()
                self.faults.append((time.monotonic(), "redis restart"))
                redis_done = True
                continue
            if not pg_done and elapsed > pg_at:
                self.pg.restart()
                self.faults.append((time.monotonic(), "postgres restart"))
                pg_done = True
                continue
            victim = self.rng.choice(KILLABLE)
            self.kill(victim)
            self.faults.append((time.monotonic(), f"kill -9 {victim}"))
            time.sleep(self.rng.uniform(0.5, 2.0))
            self.start(victim)
            if elapsed > self.args.seconds * 3:
                break

    def settle(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            while True:
                open_runs = conn.execute(
                    "SELECT count(*) FROM sandbox_run WHERE NOT (status = ANY(%s))",
                    ([s.value for s in TERMINAL],),
                ).fetchone()[0]  # type: ignore[index]
                if open_runs == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            settled = time.monotonic()
            rows = conn.execute(
                "SELECT id::text, status, attempt, takeovers FROM sandbox_run"
            ).fetchall()
            terminal_events = dict(
                conn.execute(
                    "SELECT run_id::text, count(*) FROM outbox "
                    "WHERE kind = 'sandbox.run.state_changed' "
                    "AND payload->>'status' = ANY(%s) GROUP BY run_id",
                    ([s.value for s in TERMINAL],),
                ).fetchall()
            )
        time.sleep(2 * float(TIMERS["SANDBOX_SWEEP_INTERVAL_S"]) + 2)
        containers = docker_backend.list_sandbox_containers(docker.from_env(), "chaos")
        known = {r[0] for r in rows}
        statuses: dict[str, int] = {}
        for row in rows:
            statuses[row[1]] = statuses.get(row[1], 0) + 1
        return {
            "accepted": len(self.accepted),
            "lost": sum(1 for run_id in self.accepted if run_id not in known),
            "stuck": sum(1 for r in rows if r[1] not in {s.value for s in TERMINAL}),
            "duplicated": sum(1 for n in terminal_events.values() if n > 1),
            "reruns": sum(1 for r in rows if r[2] > 1),
            "takeovers": sum(r[3] for r in rows),
            "orphaned": len(containers),
            "statuses": statuses,
            "recovery_s": settled - self.faults[-1][0] if self.faults else 0.0,
            "faults": len(self.faults),
            "refused_submits": self.refused,
        }

    def teardown(self) -> None:
        for name in list(self.procs):
            self.kill(name)
        self.redis.stop()
        client = docker.from_env()
        for _, _, container in docker_backend.list_sandbox_containers(client, "chaos"):
            docker_backend.remove_labelled(container)
        try:
            self.pg.stop()
        except subprocess.CalledProcessError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="chaos at least this long")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--settle", type=float, default=300.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sandbox-chaos-"))
    os.chmod(root, 0o755)
    chaos = Chaos(args, root)
    try:
        chaos.setup()
        submitter = threading.Thread(target=chaos.submit_all)
        submitter.start()
        chaos.chaos_loop(submitter)
        submitter.join()
        result = chaos.settle(args.settle)
    finally:
        chaos.teardown()
    print("| figure | value |")
    print("|---|---|")
    for key, value in result.items():
        if key == "recovery_s":
            value = f"{value:.1f}"
        print(f"| {key} | {value} |")
    print(f"\nfaults injected: {', '.join(f for _, f in chaos.faults)}")
    shutil.rmtree(root, ignore_errors=True)
    bad = result["lost"] + result["stuck"] + result["duplicated"] + result["orphaned"]
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
