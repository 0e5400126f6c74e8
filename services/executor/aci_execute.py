"""Execution on Azure Container Instances: create the attempt's group, then poll it.

No worker waits minutes for a group. ``start`` (inside the execute task) creates the group and
hands the run to ``sandbox.aci_poll``; each poll renews the lease, reads the group's state and
its log, and re-schedules itself with a countdown (far below the broker's visibility timeout)
until the container has stopped. The last poll records the outcome exactly as the Docker path
does (same statuses, same reasons) and deletes the group once the outcome is committed.

Logs: ACI keeps one interleaved log per container and returns only its tail (4 MB while it
runs, the last 16 KB or 1,000 lines after it stops), so every poll reads the tail while the
container runs and appends what is new to our own copy of the log (``aci_logs``: overlap
matching, a marker line where output was lost). The copy is fed to the same LogCapture the
Docker path uses, which skips lines by position (the raw line count stored with the lease),
exactly as when an executor re-attaches to a Docker container: no line twice. All lines land
on ``stdout``: ACI does not keep the streams apart.

Under ``auto``, ACI refusing the group for capacity (429, 503, quota) when it is created hands
the attempt back to the Docker path (``FallBackToDocker``), recorded on the run as the
provisioner records its own fallback.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from services.executor import aci_logs
from services.executor.log_capture import LogCapture
from services.executor.outcome import hand_to_finalizer
from shared import dispatch
from shared.backends import aci
from shared.backends.docker import dumps_input
from shared.db import runs as runs_db
from shared.errors import BackendError, BackendUnavailable, ImageNotFound
from shared.policy import Resources
from shared.queues import TaskNames
from shared.runtime import Runtime
from shared.secrets import SecretError
from shared.states import RunStatus
from shared.storage import StorageError

logger = logging.getLogger(__name__)

_NO_LINES = {"stdout": 0, "stderr": 0}


class FallBackToDocker(Exception):
    """ACI refused the group of an ``auto`` run: this attempt runs on Docker (``run`` says so)."""

    def __init__(self, run: runs_db.Run) -> None:
        super().__init__("ACI refused the container group; the attempt runs on Docker")
        self.run = run


def poll_owner(run_id: uuid.UUID, attempt: int) -> str:
    """Name the lease holder of an ACI attempt: the poll chain, whichever worker runs it."""
    return f"aci:{run_id}:{attempt}"


def start(rt: Runtime, run: runs_db.Run, owner: str) -> RunStatus | None:
    """Create (or find) the attempt's container group and hand the run to the poll task.

    Raises BackendUnavailable (after releasing the lease) when ACI is throttling, out of
    quota or unreachable, so the execute task retries with backoff; FallBackToDocker instead
    when the run's backend was chosen under ``auto`` and ACI refused the group for capacity.
    """
    from services.executor import execute as ex  # the shared claim/attempt helpers

    log = {"runId": str(run.id), "attempt": run.attempt}
    cfg = rt.aci_config
    try:
        if cfg is None:
            raise BackendError("ACI is not configured (SANDBOX_ACI_SUBSCRIPTION_ID)")
        client = rt.aci()
        # A run claimed from ready has a brand-new attempt number no group can carry yet.
        state = (
            None
            if run.takeovers == 0
            else aci.get(client, cfg, aci.group_name(str(run.id), run.attempt))
        )
        if state is None and run.raw_lines not in (None, _NO_LINES):
            # The attempt printed before its group vanished: start a clean attempt.
            fresh = ex._new_attempt(rt, run, owner)
            if fresh is None:
                return None
            run = fresh
            _discard_copy(rt, run.id)
        if state is None:
            try:
                aci.create(client, cfg, _spec(run))
            except aci.AciCapacity as exc:
                if (run.plan or {}).get("backendChoice", {}).get("asked") != "auto":
                    raise
                docker_run = _fall_back_to_docker(rt, run, owner, exc)
                if docker_run is None:
                    return None  # the run moved on meanwhile (cancelled, taken over)
                raise FallBackToDocker(docker_run) from exc
        else:
            logger.info("re-attaching to the attempt's container group", extra=log)
    except BackendUnavailable:
        with rt.pool.connection() as conn:
            runs_db.release_lease(conn, run.id, attempt=run.attempt)
        raise
    except BackendError as exc:
        _error(rt, run, owner, exc)
        return RunStatus.ERROR
    resources = Resources.from_json(run.resources or {})
    with rt.pool.connection() as conn:
        moved = runs_db.transition(
            conn,
            run.id,
            RunStatus.RUNNING,
            from_=(RunStatus.RUNNING,),
            attempt=run.attempt,
            owner=owner,
            lease_owner=poll_owner(run.id, run.attempt),
            # A group may take minutes to pull and start: its deadline allows for that.
            deadline_s=resources.timeout_s
            + rt.settings.run_grace_s
            + rt.settings.aci_start_timeout_s,
        )
        dispatch_id = (
            dispatch.enqueue(conn, TaskNames.ACI_POLL, run.id, attempt=run.attempt)
            if moved
            else None
        )
    if dispatch_id is None:
        return None
    dispatch.flush(rt.celery, rt.pool, [dispatch_id])
    logger.info("container group created; polling", extra=log)
    return RunStatus.RUNNING


def _fall_back_to_docker(
    rt: Runtime, run: runs_db.Run, owner: str, exc: BackendError
) -> runs_db.Run | None:
    """Move an ``auto`` run to Docker, recording why as the provisioner does.

    Only a refusal ARM answered (429, 503, quota) leads here, so no group exists for the
    attempt: the Docker container is its only one. Returns None when the run moved on.
    """
    plan = dict(run.plan or {})
    choice = dict(plan.get("backendChoice") or {})
    reason = rt.redactor().redact_text(f"ACI refused the container group at execution: {exc}")
    choice.update(chosen="docker", fallbackReason=reason)
    plan.update(backend="docker", backendChoice=choice)
    with rt.pool.connection() as conn:
        moved = runs_db.transition(
            conn,
            run.id,
            RunStatus.RUNNING,
            from_=(RunStatus.RUNNING,),
            attempt=run.attempt,
            owner=owner,
            backend="docker",
            plan=plan,
        )
    if moved is not None:
        logger.info(
            "ACI not usable; the run goes to Docker: %s",
            reason,
            extra={"runId": str(run.id), "attempt": run.attempt},
        )
    return moved


def poll(rt: Runtime, run_id: uuid.UUID, attempt: int) -> float | None:
    """Look at the attempt's group once; return the countdown to the next poll, or None.

    None means the chain ends: the outcome is recorded, the run is not this chain's any more,
    or another poll of the same attempt holds the run's poll lock (a duplicate delivery).
    """
    key = uuid.UUID(str(run_id)).int & ((1 << 63) - 1)
    with rt.pool.connection() as lock_conn:
        lock_conn.autocommit = True
        row = lock_conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()
        if not row or not row["ok"]:
            return None
        try:
            return _poll_locked(rt, run_id, attempt)
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            lock_conn.autocommit = False


def _poll_locked(rt: Runtime, run_id: uuid.UUID, attempt: int) -> float | None:
    with rt.pool.connection() as conn:
        run = runs_db.get_run(conn, run_id)
    if run is None or run.attempt != attempt or rt.aci_config is None:
        return None
    cfg, client = rt.aci_config, rt.aci()
    name = aci.group_name(str(run_id), attempt)
    owner = poll_owner(run_id, attempt)
    log = {"runId": str(run_id), "attempt": attempt}
    if run.terminal:
        # Cancelled, or ended by the reconciler: stop the container by deleting its group.
        _delete(client, cfg, name)
        _discard_copy(rt, run_id)
        return None
    if run.status is not RunStatus.RUNNING or run.lease_owner != owner:
        return None
    with rt.pool.connection() as conn:
        if not runs_db.heartbeat(conn, run_id, attempt=attempt, owner=owner):
            return None
    elapsed = time.time() - (run.started_at.timestamp() if run.started_at else time.time())
    try:
        state = aci.get(client, cfg, name)
        if state is None:
            raise BackendError("the container group disappeared before it finished")
        failure = state.failure()
        if failure is not None:
            raise failure
    except BackendUnavailable as exc:
        logger.info("ACI busy; polling later: %s", exc, extra=log)
        return _countdown(rt, elapsed, busy=True)
    except BackendError as exc:
        return _error(rt, run, owner, exc)
    resources = Resources.from_json(run.resources or {})
    if state.started_at is None and not state.terminated:
        if elapsed > rt.settings.aci_start_timeout_s:
            return _error(
                rt,
                run,
                owner,
                BackendError(f"the container group did not start within {int(elapsed)} s"),
            )
        return _countdown(rt, elapsed)
    started = state.started_at.timestamp() if state.started_at else time.time()
    timed_out = not state.terminated and time.time() - started > resources.timeout_s
    try:
        content = aci.logs(client, cfg, name)
    except BackendUnavailable:
        return _countdown(rt, elapsed, busy=True)
    final = state.terminated or timed_out
    try:
        copy = aci_logs.LogCopy.load(rt.blobs, _copy_key(rt), str(run_id), attempt)
        copy.extend(content.encode(), stopped=state.container_state == "Terminated")
    except StorageError:
        logger.warning("cannot keep the ACI log copy; polling later", extra=log)
        return _countdown(rt, elapsed, busy=True)
    except (aci_logs.CopyUnreadable, SecretError) as exc:
        _error(rt, run, owner, BackendError(str(exc)))
        return None
    capture = LogCapture.for_run(rt, run, owner)
    lines = _lines(copy.text(), final=final)
    if lines:
        capture.sink_lines("stdout", lines)
    if copy.gaps:
        capture.truncated = True  # some output was not kept: the run's logs say so
    capture.close()
    if capture.revoked:
        return None
    stopped = rt.settings.log_overflow == "kill" and capture.overflowed and not final
    if not final and not stopped:
        return _countdown(rt, elapsed)
    if timed_out or stopped:
        _delete(client, cfg, name)  # killing the group's container is deleting the group
    return _finish(rt, run, owner, state, capture, timed_out=timed_out, stopped=stopped)


def _finish(
    rt: Runtime,
    run: runs_db.Run,
    owner: str,
    state: aci.GroupState,
    capture: LogCapture,
    *,
    timed_out: bool,
    stopped: bool,
) -> None:
    """Record the outcome and hand the run to the finalizer (mirrors the Docker path)."""
    exit_code = None if (timed_out or stopped) else state.exit_code
    moved = hand_to_finalizer(
        rt,
        run,
        owner,
        capture,
        exit_code=exit_code,
        oom_killed=bool(exit_code is not None and state.oom_killed),
        wall_timed_out=timed_out,
        output_limited=stopped,
    )
    if moved is None:
        return None
    # Only now, with the outcome committed, may the group and the raw log copy go.
    assert rt.aci_config is not None
    _delete(rt.aci(), rt.aci_config, aci.group_name(str(run.id), run.attempt))
    _discard_copy(rt, run.id)
    logger.info(
        "container group finished",
        extra={
            "runId": str(run.id),
            "attempt": run.attempt,
            "exitCode": exit_code,
            "oomKilled": state.oom_killed,
            "timedOut": timed_out,
        },
    )
    return None


def _error(rt: Runtime, run: runs_db.Run, owner: str, exc: Exception) -> None:
    """End the run ``error`` with the Azure reason (redacted) and delete its group."""
    code = "image_not_found" if isinstance(exc, ImageNotFound) else "backend_error"
    reason = rt.redactor().redact_text(f"{code}: {exc}")
    with rt.pool.connection() as conn:
        runs_db.transition(
            conn,
            run.id,
            RunStatus.ERROR,
            from_=(RunStatus.RUNNING,),
            attempt=run.attempt,
            owner=owner,
            reason=reason,
        )
    if rt.aci_config is not None:
        _delete(rt.aci(), rt.aci_config, aci.group_name(str(run.id), run.attempt))
    _discard_copy(rt, run.id)
    logger.warning("run failed on ACI: %s", reason, extra={"runId": str(run.id)})
    return None


def _delete(client: Any, cfg: aci.AciConfig, name: str) -> None:
    try:
        aci.delete(client, cfg, name)
    except BackendError:
        # The reconciler's orphan sweep deletes it later.
        logger.warning("could not delete container group %s; the reconciler will", name)


def _discard_copy(rt: Runtime, run_id: uuid.UUID) -> None:
    try:
        aci_logs.discard(rt.blobs, str(run_id))
    except StorageError:
        # Retention deletes the run's folder later; the copy is encrypted meanwhile.
        logger.warning("could not delete the ACI log copy", extra={"runId": str(run_id)})


_keys: dict[tuple[str | None, str], bytes] = {}


def _copy_key(rt: Runtime) -> bytes:
    """Return the log copies' key, resolved once per process (a Key Vault read at most)."""
    where = (rt.settings.aci_log_key_ref, str(rt.settings.blob_signing_key_path))
    key = _keys.get(where)
    if key is None:
        key = _keys[where] = aci_logs.copy_key(rt.settings)
    return key


def _countdown(rt: Runtime, elapsed: float, *, busy: bool = False) -> float:
    """Poll often at first, then back off (and longer while ACI throttles), within a cap."""
    base = max(rt.settings.aci_poll_interval_s, elapsed / 10)
    if busy:
        base *= 2
    return min(base, rt.settings.aci_poll_max_interval_s)


def _lines(data: bytes, *, final: bool) -> list[bytes]:
    """Split the log into raw lines; a last line without newline waits unless the run ended."""
    if not data:
        return []
    parts = data.split(b"\n")
    tail = parts.pop()
    if final and tail:
        parts.append(tail)
    return parts


def _spec(run: runs_db.Run) -> aci.GroupSpec:
    assert run.plan is not None and run.resources is not None, "a ready run has a plan"
    digest = str(run.plan.get("imageDigest") or "")
    # ACI pulls by reference: the pinned digest when the registry gave one.
    image = digest if "@" in digest else str(run.plan["image"])
    return aci.GroupSpec(
        run_id=str(run.id),
        attempt=run.attempt,
        method_id=run.method_id,
        image=image,
        input_json=dumps_input(run.input),
        resources=Resources.from_json(run.resources),
    )
