"""Execution: claim a ready run, run (or re-attach to) its container, record what happened."""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

from services.executor import aci_execute
from services.executor.log_capture import LogCapture
from services.executor.outcome import hand_to_finalizer
from shared import db, faults
from shared.backends import docker as docker_backend
from shared.backends import egress, image_cache
from shared.backends.docker import Heartbeat
from shared.db import run_logs
from shared.db import runs as runs_db
from shared.errors import BackendError, BackendUnavailable, ImageNotFound
from shared.policy import Resources
from shared.runtime import Runtime
from shared.states import RunStatus

logger = logging.getLogger(__name__)


def lease_owner(rt: Runtime) -> str:
    """Name this process as a lease holder: node and pid, so a dead local holder is recognised."""
    return f"{rt.settings.executor_node}:{os.getpid()}"


def execute_run(rt: Runtime, run_id: uuid.UUID) -> RunStatus | None:
    """Run one attempt of a run, or take over one whose executor died; return where it ended.

    Returns None when the run was not ours to move (a duplicate delivery, a live lease, a run
    already past this step). Raises BackendUnavailable (after releasing the lease) so the task
    can retry with backoff.
    """
    owner = lease_owner(rt)
    run = _claim(rt, run_id, owner)
    if run is None:
        return None
    faults.crash_point(rt.settings, "execute.claimed")
    if run.backend == "aci":
        # Azure Container Instances: create the group, then a poll task follows it (issue 7).
        try:
            return aci_execute.start(rt, run, owner)
        except aci_execute.FallBackToDocker as fallback:
            run = fallback.run  # `auto`, and ACI refused the group: this attempt runs here
    log = {"runId": str(run_id), "attempt": run.attempt}
    client = rt.docker()
    capture: LogCapture | None = None
    try:
        # A run claimed from ready (no takeover yet) has a brand-new attempt number that no
        # container can carry: skip the look-ups a takeover needs.
        fresh = run.takeovers == 0
        container = (
            None if fresh else docker_backend.find_container(client, str(run_id), run.attempt)
        )
        started_at: float | None = None
        output = None  # the attached output of a container this call starts
        if container is None and run.raw_lines != {"stdout": 0, "stderr": 0}:
            # The attempt printed before its container vanished: its output cannot be
            # completed, so this becomes a new attempt from a clean slate.
            run = _new_attempt(rt, run, owner)
            if run is None:
                return None
        if container is None:
            spec = egress.prepare(client, rt.settings, run.plan, _spec(rt, run))  # issue 6
            started = docker_backend.start(client, spec, first_attempt=fresh)
            container, output = started.container, started.output
            started_at = time.time()  # saves an inspect: the wall limit counts from here
            faults.crash_point(rt.settings, "execute.after_start")
        else:
            logger.info("re-attaching to the attempt's container", extra=log)
        resources = _resources(run)
        # A container this call started has printed nothing that was stored yet.
        capture = LogCapture.for_run(rt, run, owner, fresh=fresh and started_at is not None)
        outcome = docker_backend.follow(
            client,
            container,
            resources.timeout_s,
            capture.sink_lines,
            _heartbeat(rt, run, owner, capture),
            rt.settings.heartbeat_interval_s,
            rt.settings.max_line_bytes,
            started_at=started_at,
            output=output,
        )
    except docker_backend.LeaseLost:
        logger.warning("another executor took the run over; detaching", extra=log)
        _abandon(capture)
        return None
    except BackendUnavailable:
        _abandon(capture)
        with rt.pool.connection() as conn:
            runs_db.release_lease(conn, run_id, attempt=run.attempt)
        raise
    except (ImageNotFound, BackendError) as exc:
        _abandon(capture)
        return _platform_error(rt, run, owner, exc)
    capture.close()
    if outcome.cancelled or capture.revoked:
        # Cancelled, or taken over: the container goes only if the run is over.
        with rt.pool.connection() as conn:
            current = runs_db.get_run(conn, run_id)
        if current is None or current.terminal:
            docker_backend.remove(client, str(run_id), run.attempt)
        return None
    logger.info(
        "container finished",
        extra={
            **log,
            "exitCode": outcome.exit_code,
            "oomKilled": outcome.oom_killed,
            "timedOut": outcome.timed_out,
            "durationS": round(outcome.duration_s, 3),
        },
    )
    moved = hand_to_finalizer(
        rt,
        run,
        owner,
        capture,
        exit_code=outcome.exit_code,
        oom_killed=outcome.oom_killed,
        wall_timed_out=outcome.timed_out,
        cpu_seconds=outcome.cpu_seconds,
        peak_memory_bytes=outcome.peak_memory_bytes,
        output_limited=outcome.stopped,
        egress=egress.collect(
            client, run.plan, str(run_id), run.attempt, capture.redactor.redact_value
        ),
    )
    if moved is None:
        return None
    # Only now, with the outcome committed, may the evidence go: an executor dying before this
    # point leaves the exited container for the next one to collect.
    assert run.plan is not None
    docker_backend.remove(
        client, str(run_id), run.attempt, egress=run.plan.get("network") == "egress"
    )
    _care_for_image_cache(rt, client, run)
    return moved.status


_image_cache = image_cache.Maintainer(interval_s=300)
_image_uses = image_cache.UseLog(interval_s=30)


def _care_for_image_cache(rt: Runtime, client: Any, run: runs_db.Run) -> None:
    """Record this host's use of the run's image; now and then, evict and pre-pull."""
    settings = rt.settings
    assert run.plan is not None
    _image_uses.record(
        rt.pool,
        client,
        settings.executor_node,
        run.plan["imageId"],
        run.image_digest or run.adapter_image,
    )
    _image_cache.interval_s = settings.image_cache_interval_s
    _image_cache.run(
        lambda: image_cache.maintain(
            rt.pool,
            client,
            settings.executor_node,
            settings.image_cache_max_mb * 1024 * 1024,
            settings.image_cache_prepull,
        )
    )


def _claim(rt: Runtime, run_id: uuid.UUID, owner: str) -> runs_db.Run | None:
    """Take a ready run (new attempt) or a running one whose executor is gone (takeover)."""
    settings = rt.settings
    with db.transaction(rt.pool) as conn:
        current = runs_db.get_run(conn, run_id)
        if current is None or current.status not in (RunStatus.READY, RunStatus.RUNNING):
            return None
        if current.status is RunStatus.READY:
            resources = _resources(current)
            return runs_db.transition(
                conn,
                run_id,
                RunStatus.RUNNING,
                from_=(RunStatus.READY,),
                bump_attempt=True,
                lease_owner=owner,
                deadline_s=resources.timeout_s + settings.run_grace_s,
            )
        if _holder_is_dead_here(current.lease_owner, settings.executor_node):
            runs_db.release_lease(conn, run_id, attempt=current.attempt)
        run = runs_db.transition(
            conn,
            run_id,
            RunStatus.RUNNING,
            from_=(RunStatus.RUNNING,),
            attempt=current.attempt,
            stale_lease_s=settings.lease_timeout_s,
            bump_takeovers=True,
            lease_owner=owner,
        )
        if run is not None and run.takeovers >= settings.max_attempts:
            # This run keeps killing its executors: stop trying (no hot loop).
            runs_db.transition(
                conn,
                run_id,
                RunStatus.ERROR,
                from_=(RunStatus.RUNNING,),
                attempt=run.attempt,
                reason=(
                    f"max_attempts: gave up after {run.takeovers + 1} tries "
                    "(executor lost or container engine unreachable)"
                ),
            )
            return None
        if run is not None:
            logger.info("took over a run whose executor stopped", extra={"runId": str(run_id)})
        return run


def _holder_is_dead_here(holder: str | None, node: str) -> bool:
    """Tell whether the lease holder was a process on this node that no longer exists."""
    if not holder or ":" not in holder:
        return False
    holder_node, _, pid = holder.rpartition(":")
    if holder_node != node or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _new_attempt(rt: Runtime, run: runs_db.Run, owner: str) -> runs_db.Run | None:
    with rt.pool.connection() as conn:
        fresh = runs_db.transition(
            conn,
            run.id,
            RunStatus.RUNNING,
            from_=(RunStatus.RUNNING,),
            attempt=run.attempt,
            owner=owner,
            bump_attempt=True,
            lease_owner=owner,
        )
        if fresh is not None:
            run_logs.discard_attempt_lines(conn, run.id, fresh.attempt)
        return fresh


def _resources(run: runs_db.Run) -> Resources:
    assert run.resources is not None, "a ready run has resources"
    return Resources.from_json(run.resources)


def _spec(rt: Runtime, run: runs_db.Run) -> docker_backend.ContainerSpec:
    assert run.plan is not None, "a ready run has a plan"
    return docker_backend.ContainerSpec(
        run_id=str(run.id),
        attempt=run.attempt,
        method_id=run.method_id,
        image_id=run.plan["imageId"],
        input_json=docker_backend.dumps_input(run.input),
        resources=_resources(run),
        pids_limit=rt.settings.pids_limit,
        tmpfs_size_mb=rt.settings.tmpfs_size_mb,
        fleet=rt.settings.fleet_name,
        nofile_limit=rt.settings.nofile_limit,
        image_digest=run.image_digest or "",
    )


def _abandon(capture: LogCapture | None) -> None:
    if capture is not None:
        capture.abandon()


def _heartbeat(rt: Runtime, run: runs_db.Run, owner: str, capture: LogCapture) -> Any:
    kill_on_overflow = rt.settings.log_overflow == "kill"

    def beat() -> Heartbeat:
        if kill_on_overflow and capture.overflowed:
            return Heartbeat.STOP
        with rt.pool.connection() as conn:
            if runs_db.heartbeat(conn, run.id, attempt=run.attempt, owner=owner):
                return Heartbeat.CONTINUE
            current = runs_db.get_run(conn, run.id)
        if current is None or current.terminal:
            return Heartbeat.KILL  # cancelled (or ended by the reconciler): stop the container
        return Heartbeat.DETACH

    return beat


def _platform_error(rt: Runtime, run: runs_db.Run, owner: str, exc: Exception) -> RunStatus | None:
    reason = rt.redactor().redact_text(f"backend_error: {exc}")
    if isinstance(exc, ImageNotFound):
        reason = rt.redactor().redact_text(f"image_not_found: {exc}")
    with rt.pool.connection() as conn:
        moved = runs_db.transition(
            conn,
            run.id,
            RunStatus.ERROR,
            from_=(RunStatus.RUNNING,),
            attempt=run.attempt,
            owner=owner,
            reason=reason,
        )
    docker_backend.remove(rt.docker(), str(run.id), run.attempt)
    logger.warning(
        "run failed on the backend: %s",
        reason,
        extra={"runId": str(run.id), "attempt": run.attempt},
    )
    return moved.status if moved else None
