"""Fault injection against the real fleet processes; each scenario ends with the G1-G6 oracle.

Each test starts a fresh fleet (its own Redis server and database), breaks one thing, and checks
that every accepted run ends exactly once, nothing is stuck, only one attempt's output is kept,
no container is left behind and retries stay bounded.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import docker
import docker.errors
import pytest
import requests
from celery import Celery

from services.finalizer.housekeeping import RECONCILER_LOCK, reconcile
from shared.backends import docker as docker_backend
from shared.queues import Queues, TaskNames
from shared.runtime import Runtime
from tests.builders import run_request
from tests.faults.conftest import FaultFleet, new_uuid

pytestmark = pytest.mark.xdist_group("faults")


def sleeper(seconds: float, **resources: int) -> dict[str, object]:
    body = run_request(input={"action": "sleep", "seconds": seconds})
    if resources:
        body["resources"] = resources
    return body


def sleep_lines(fleet: FaultFleet, run_id: str) -> list[str]:
    return [x["line"] for x in fleet.log_lines(run_id) if x["line"].startswith("sleep:")]


def broker(fleet: FaultFleet) -> Celery:
    assert fleet.redis is not None
    return Celery("fault-test", broker=fleet.redis.url)


def test_executor_killed_mid_run_is_re_attached_without_losing_or_repeating_lines(
    fault_fleet: FaultFleet,
) -> None:
    run_id = fault_fleet.submit(sleeper(6))
    fault_fleet.wait_printed(run_id, 2)
    fault_fleet.kill("executor")  # the whole worker, parent and children: no requeue at all
    assert fault_fleet.containers(run_id), "the container outlives its executor"
    fault_fleet.start("executor")
    run = fault_fleet.check([run_id])[run_id]
    assert run["status"] == "succeeded" and run["evaluation"] == {"slept": 6}
    assert run["attempt"] == 1, "re-attached to the same container, not a second one"
    assert run["takeovers"] == 1
    assert sleep_lines(fault_fleet, run_id) == [f"sleep: {i}s elapsed" for i in range(1, 7)]


def test_killed_pool_child_is_requeued_and_taken_over_at_once(fault_fleet: FaultFleet) -> None:
    run_id = fault_fleet.submit(sleeper(5))
    fault_fleet.wait_printed(run_id, 1)
    holder = fault_fleet.row(run_id)["lease_owner"]
    pid = int(holder.rpartition(":")[2])
    os.kill(pid, signal.SIGKILL)
    run = fault_fleet.check([run_id])[run_id]
    assert run["status"] == "succeeded" and run["attempt"] == 1 and run["takeovers"] == 1
    assert sleep_lines(fault_fleet, run_id) == [f"sleep: {i}s elapsed" for i in range(1, 6)]


def test_sigterm_lets_the_running_task_finish(fault_fleet: FaultFleet) -> None:
    run_id = fault_fleet.submit(sleeper(3))
    fault_fleet.wait_printed(run_id, 1)
    fault_fleet.signal("executor", signal.SIGTERM, wait_s=40)
    run = fault_fleet.check([run_id])[run_id]
    assert run["status"] == "succeeded" and run["takeovers"] == 0


def test_provisioner_killed_between_commit_and_hand_off(fault_fleet: FaultFleet) -> None:
    fault_fleet.arm("provision.after_commit")
    run_id = fault_fleet.submit(run_request())
    run = fault_fleet.check([run_id])[run_id]
    assert run["status"] == "succeeded"
    assert not (fault_fleet.fault_dir / "provision.after_commit").exists(), "the fault fired"


def test_finalizer_killed_after_the_blob_write(fault_fleet: FaultFleet) -> None:
    fault_fleet.arm("finalize.after_blobs")
    run_id = fault_fleet.submit(run_request())
    run = fault_fleet.check([run_id])[run_id]
    assert run["status"] == "succeeded"
    assert not (fault_fleet.fault_dir / "finalize.after_blobs").exists(), "the fault fired"


def _backlog(fleet: FaultFleet, n: int) -> list[str]:
    fleet.signal("executor", signal.SIGTERM)
    ids = [fleet.submit(run_request(input={"action": "echo", "value": i})) for i in range(n)]
    for run_id in ids:
        fleet.wait_status(run_id, {"ready"})
    return ids


def test_redis_restart_with_a_backlog_loses_nothing(fault_fleet: FaultFleet) -> None:
    assert fault_fleet.redis is not None
    ids = _backlog(fault_fleet, 5)
    fault_fleet.redis.stop()
    fault_fleet.redis.start()
    fault_fleet.start("executor")
    runs = fault_fleet.check(ids)
    assert {r["status"] for r in runs.values()} == {"succeeded"}


def test_redis_data_loss_is_recovered_from_postgres(fault_fleet: FaultFleet) -> None:
    assert fault_fleet.redis is not None
    ids = _backlog(fault_fleet, 5)
    fault_fleet.redis.cli("FLUSHALL")
    assert fault_fleet.redis.cli("LLEN", Queues.EXECUTE) == "0"
    fault_fleet.start("executor")
    runs = fault_fleet.check(ids)
    assert {r["status"] for r in runs.values()} == {"succeeded"}


def test_redis_down_during_submit_loses_nothing(fault_fleet: FaultFleet) -> None:
    assert fault_fleet.redis is not None
    fault_fleet.redis.stop()
    accepted = [fault_fleet.post(run_request()) for _ in range(3)]
    assert [r.status_code for r in accepted] == [202, 202, 202]
    fault_fleet.redis.start()
    runs = fault_fleet.check([r.json()["id"] for r in accepted])
    assert {r["status"] for r in runs.values()} == {"succeeded"}


def test_postgres_connections_killed_mid_transaction(fault_fleet: FaultFleet) -> None:
    ids = [fault_fleet.submit(sleeper(2)) for _ in range(4)]
    stop = time.monotonic() + 4
    killed = 0
    while time.monotonic() < stop:
        with fault_fleet.db() as conn:
            killed += len(
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
            )
        time.sleep(0.3)
    assert killed > 0
    runs = fault_fleet.check(ids)
    assert {r["status"] for r in runs.values()} == {"succeeded"}


def test_the_same_task_delivered_twice_concurrently_runs_once(fault_fleet: FaultFleet) -> None:
    [run_id] = _backlog(fault_fleet, 1)
    app = broker(fault_fleet)
    for _ in range(2):
        app.send_task(TaskNames.EXECUTE, args=[run_id], queue=Queues.EXECUTE)
    fault_fleet.start("executor", concurrency=3)
    run = fault_fleet.check([run_id])[run_id]
    assert run["status"] == "succeeded" and run["attempt"] == 1 and run["takeovers"] == 0


def test_a_visibility_timeout_shorter_than_the_run_does_not_run_it_twice(
    fault_fleet: FaultFleet,
) -> None:
    fault_fleet.signal("executor", signal.SIGTERM)
    fault_fleet.start("executor", concurrency=2, SANDBOX_VISIBILITY_TIMEOUT_S="2")
    run_id = fault_fleet.submit(sleeper(12))
    run = fault_fleet.check([run_id])[run_id]
    assert run["status"] == "succeeded" and run["attempt"] == 1 and run["takeovers"] == 0
    assert sleep_lines(fault_fleet, run_id) == [f"sleep: {i}s elapsed" for i in range(1, 13)]


def test_a_poison_run_ends_with_max_attempts_without_a_hot_loop(fault_fleet: FaultFleet) -> None:
    fault_fleet.arm("execute.claimed", "always")
    try:
        run_id = fault_fleet.submit(run_request())
        run = fault_fleet.check([run_id])[run_id]
    finally:
        fault_fleet.disarm("execute.claimed")
    assert run["status"] == "error"
    assert run["statusReason"].startswith("max_attempts:")
    assert run["takeovers"] == 3


def test_only_one_reconciler_works_at_a_time(fault_fleet: FaultFleet) -> None:
    assert fault_fleet.settings is not None
    rt = Runtime(fault_fleet.settings, broker(fault_fleet))
    try:
        with fault_fleet.db() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (RECONCILER_LOCK,))
            assert reconcile(rt) is None, "a second reconciler backs off"
        results: list[object] = []
        threads = [threading.Thread(target=lambda: results.append(reconcile(rt))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 4 and any(r is not None for r in results)
    finally:
        rt.close()


def test_a_stale_message_does_not_resurrect_a_cancelled_run(fault_fleet: FaultFleet) -> None:
    [run_id] = _backlog(fault_fleet, 1)
    cancelled = requests.post(
        f"{fault_fleet.base}/api/sandbox/runs/{run_id}/cancel", headers=fault_fleet.auth, timeout=10
    )
    assert cancelled.json()["status"] == "cancelled"
    app = broker(fault_fleet)
    for task, queue in (
        (TaskNames.PROVISION, Queues.PROVISION),
        (TaskNames.FINALIZE, Queues.FINALIZE),
    ):
        app.send_task(task, args=[run_id], queue=queue)
    fault_fleet.start("executor")
    time.sleep(3)  # let every stale message be delivered and dropped
    run = fault_fleet.check([run_id])[run_id]
    assert run["status"] == "cancelled" and run["attempt"] == 0
    assert fault_fleet.row(run_id)["started_at"] is None, "no container was ever started"


def test_cancel_stops_a_running_container(fault_fleet: FaultFleet) -> None:
    run_id = fault_fleet.submit(sleeper(30))
    fault_fleet.wait_printed(run_id, 1)
    requests.post(
        f"{fault_fleet.base}/api/sandbox/runs/{run_id}/cancel", headers=fault_fleet.auth, timeout=10
    )
    run = fault_fleet.check([run_id], timeout=20)[run_id]
    assert run["status"] == "cancelled"


def test_orphan_containers_are_removed(fault_fleet: FaultFleet) -> None:
    assert fault_fleet.settings is not None
    done = fault_fleet.submit(run_request())
    fault_fleet.wait(done)
    client = docker.from_env()
    orphans = [done, new_uuid()]
    for run_id in orphans:
        # The low-level calls: the SDK's create inspects the new container, and the reconciler
        # may remove an orphan between any two of these calls.
        created = client.api.create_container(
            "sandbox-runner/busybox:dev",
            ["sleep", "60"],
            labels={
                docker_backend.LABEL_RUN: run_id,
                docker_backend.LABEL_ATTEMPT: "1",
                docker_backend.LABEL_FLEET: fault_fleet.settings.fleet_name,
            },
        )
        try:
            client.api.start(created["Id"])
        except docker.errors.NotFound:
            pass  # the reconciler was quicker: it removed the orphan before it even started
    deadline = time.monotonic() + 15
    while any(fault_fleet.containers(run_id) for run_id in orphans):
        assert time.monotonic() < deadline, "orphans survived the reconciler"
        time.sleep(0.2)
