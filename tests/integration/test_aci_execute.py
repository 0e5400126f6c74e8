"""The ACI executor against the ARM simulator: logs past ACI's tail window, execute-time fallback.

The provisioner and the executor's functions run in the test process, with the real ARM
client talking HTTPS to ``tests/sim/aci_sim.py``; the poll task's body (``aci_execute.poll``)
is called in a loop with the countdown it asks for, as Celery would.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery
from psycopg_pool import ConnectionPool

from services.executor import aci_execute, aci_logs
from services.executor.execute import execute_run
from services.provisioner.provision import provision_run
from shared.backends import aci
from shared.config import load_settings
from shared.db import run_logs
from shared.db import runs as runs_db
from shared.errors import BackendUnavailable
from shared.runtime import Runtime
from shared.states import RunStatus
from shared.storage import BlobNotFound
from tests.builders import PERSONA, TEST_IMAGE, stored_run
from tests.sim.aci_sim import AciSimulator
from tests.sim.fixtures import aci_env, aci_sim, aci_sim_session, sim_tls  # noqa: F401
from tests.sim.tls import Tls

pytestmark = pytest.mark.docker  # the provisioner resolves the image in the engine
GAP = aci_logs.GAP_LINE.decode()


@pytest.fixture
def rt(
    settings_env: dict[str, str],
    aci_sim: AciSimulator,  # noqa: F811
    sim_tls: Tls,  # noqa: F811
    pool: ConnectionPool,
) -> Iterator[Runtime]:
    settings = load_settings(
        {**settings_env, **aci_env(aci_sim, sim_tls), "SANDBOX_BACKEND": "aci"}
    )
    # Dispatches go to an in-memory broker: the test itself plays the poll task.
    runtime = Runtime(settings, celery=Celery("test-aci", broker="memory://"))
    yield runtime
    runtime.close()


def _ready_run(rt: Runtime, input: dict[str, object]) -> uuid.UUID:
    with rt.pool.connection() as conn:
        run = stored_run(
            conn,
            persona_id=uuid.UUID(PERSONA),
            adapter_image=TEST_IMAGE,
            input=input,
        )
    assert provision_run(rt, run.id) is RunStatus.READY
    return run.id


def _get(rt: Runtime, run_id: uuid.UUID) -> runs_db.Run:
    with rt.pool.connection() as conn:
        run = runs_db.get_run(conn, run_id)
    assert run is not None
    return run


def _poll_until_done(rt: Runtime, run_id: uuid.UUID, *, first_delay_s: float = 0.0) -> None:
    """Play the ``sandbox.aci_poll`` chain: poll, sleep the countdown it returns, again."""
    attempt = _get(rt, run_id).attempt
    time.sleep(first_delay_s)
    deadline = time.monotonic() + 120
    while (countdown := aci_execute.poll(rt, run_id, attempt)) is not None:
        assert time.monotonic() < deadline, "the poll chain did not end"
        time.sleep(countdown)


def _lines(rt: Runtime, run_id: uuid.UUID) -> list[str]:
    with rt.pool.connection() as conn:
        return [line.line for line in run_logs.all_lines(conn, run_id)]


def _spam(count: int) -> list[str]:
    return [(f"{i:08d} " + "x" * 80)[:80] for i in range(count)]


def test_a_long_slow_run_keeps_every_line_although_aci_keeps_only_the_tail(
    rt: Runtime,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    # 200 KB over 12 s, read every 0.2-0.5 s through a window of 24 KB while it runs (made
    # smaller than ACI's 4 MB so it slides) and of 16 KB after it stopped.
    aci_sim.running_log_bytes = 24 * 1024
    run_id = _ready_run(rt, {"action": "spam", "lines": 2500, "width": 80, "seconds": 12})
    assert execute_run(rt, run_id) is RunStatus.RUNNING
    _poll_until_done(rt, run_id)
    run = _get(rt, run_id)
    assert run.status is RunStatus.FINALIZING, run.status_reason
    assert _lines(rt, run_id) == _spam(2500)
    assert run.logs_truncated is False
    assert run.evaluation_raw is not None and '"lines": 2500' in run.evaluation_raw
    assert aci_sim.log_reads > 10  # read while it ran, not once at the end
    with pytest.raises(BlobNotFound):  # the raw copy went with the outcome
        rt.blobs.get(f"{aci_logs.copy_prefix(str(run_id))}attempt-{run.attempt}.bin")


def test_a_burst_bigger_than_the_window_between_reads_is_recorded_as_a_gap(
    rt: Runtime,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    aci_sim.running_log_bytes = 16 * 1024
    # 100 lines over 2 s (read as they come), then 2,000 lines (160 KB) at once.
    run_id = _ready_run(
        rt, {"action": "spam", "lines": 100, "width": 80, "seconds": 2, "burst": 2000}
    )
    execute_run(rt, run_id)
    _poll_until_done(rt, run_id)
    run = _get(rt, run_id)
    assert run.status is RunStatus.FINALIZING, run.status_reason
    lines, printed = _lines(rt, run_id), _spam(2100)
    gap = lines.index(GAP)
    # The slow part as it came (up to the last read before the burst), the marker, then the
    # end of the burst that was still in the window (its first line cut where ACI cut it):
    # in order, nothing twice.
    assert gap >= 50 and lines[:gap] == printed[:gap]
    cut, *tail = lines[gap + 1 :]
    assert tail and tail == printed[-len(tail) :]
    assert printed[-len(tail) - 1].endswith(cut)
    assert len(lines) - 1 < len(printed)
    assert run.logs_truncated is True  # the run says some output was not kept
    assert run.evaluation_raw is not None  # printed last: inside the window


def test_a_first_read_after_the_container_stopped_records_that_the_start_is_lost(
    rt: Runtime,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    run_id = _ready_run(rt, {"action": "spam", "lines": 1500, "width": 80})
    execute_run(rt, run_id)
    _poll_until_done(rt, run_id, first_delay_s=1.0)  # it printed 120 KB and stopped meanwhile
    run = _get(rt, run_id)
    lines = _lines(rt, run_id)
    assert lines[0] == GAP
    cut, *tail = lines[1:]
    assert tail == _spam(1500)[-len(tail) :] and _spam(1500)[-len(tail) - 1].endswith(cut)
    kept = sum(len(line) + 1 for line in [cut, *tail])
    assert 16 * 1024 - 100 < kept < 16 * 1024  # what ACI keeps of a stopped container
    assert run.logs_truncated is True


@pytest.mark.parametrize(
    "refusal", [(503, "ServiceUnavailable"), (409, "ContainerGroupQuotaReached")]
)
def test_auto_falls_back_to_docker_when_aci_refuses_the_group_at_execution(
    rt: Runtime,
    aci_sim: AciSimulator,  # noqa: F811
    refusal: tuple[int, str],
) -> None:
    auto = Runtime(dataclasses.replace(rt.settings, backend="auto"), celery=rt.celery)
    run_id = _ready_run(auto, {"action": "echo", "stdout": ["ran on docker"], "value": 3})
    planned = _get(auto, run_id)
    assert planned.backend == "aci"  # ACI's usage API said yes at provisioning
    aci_sim.refuse_create = refusal
    try:
        assert execute_run(auto, run_id) is RunStatus.FINALIZING
    finally:
        auto.close()
    run = _get(rt, run_id)
    assert run.backend == "docker" and run.exit_code == 0
    assert run.plan is not None and run.plan["backend"] == "docker"
    choice = run.plan["backendChoice"]
    assert choice["asked"] == "auto" and choice["chosen"] == "docker"
    assert "at execution" in choice["fallbackReason"]
    assert str(refusal[0]) in choice["fallbackReason"] and refusal[1] in choice["fallbackReason"]
    assert "ran on docker" in _lines(rt, run_id)  # the real test adapter ran, in Docker
    assert not aci_sim.created and any(r.startswith("PUT") for r in aci_sim.requests)


def test_aci_asked_for_explicitly_waits_for_capacity_instead(
    rt: Runtime,
    aci_sim: AciSimulator,  # noqa: F811
) -> None:
    run_id = _ready_run(rt, {"action": "echo", "value": 1})
    aci_sim.refuse_create = (409, "ContainerGroupQuotaReached")
    with pytest.raises(aci.AciCapacity):
        execute_run(rt, run_id)
    run = _get(rt, run_id)
    assert run.status is RunStatus.RUNNING and run.backend == "aci"
    assert run.lease_owner is None  # released: the task's retry claims it again
    assert issubclass(aci.AciCapacity, BackendUnavailable)
