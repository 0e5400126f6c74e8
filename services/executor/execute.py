"""Execution: claim a ready run, run its container under limits, record what happened."""

from __future__ import annotations

import logging
import uuid

from services.executor.log_capture import LogCapture
from shared.backends import docker as docker_backend
from shared.celery_app import send
from shared.db import run_logs
from shared.db import runs as runs_db
from shared.errors import BackendError, BackendUnavailable, ImageNotFound
from shared.policy import Resources
from shared.queues import TaskNames
from shared.runtime import Runtime
from shared.states import RunStatus

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5.0
# A running run whose heartbeat is older than this belongs to a dead executor and may be taken.
LEASE_TIMEOUT_S = 30.0


def execute_run(rt: Runtime, run_id: uuid.UUID) -> RunStatus | None:
    """Run one attempt of a ready run; return the status it was left in, or None if not ours.

    Raises BackendUnavailable (after releasing the lease) so the task can retry with backoff.
    """
    owner = rt.settings.executor_id
    with rt.pool.connection() as conn:
        run = runs_db.transition(
            conn,
            run_id,
            RunStatus.RUNNING,
            from_=(RunStatus.READY, RunStatus.RUNNING),
            bump_attempt=True,
            stale_lease_s=LEASE_TIMEOUT_S,
            lease_owner=owner,
        )
        if run is not None:
            run_logs.discard_attempt_lines(conn, run_id, run.attempt)
    if run is None:
        logger.info("run not claimable for execution; skipping", extra={"runId": str(run_id)})
        return None
    log = {"runId": str(run_id), "attempt": run.attempt}
    assert run.resources is not None and run.plan is not None
    spec = docker_backend.ContainerSpec(
        run_id=str(run_id),
        attempt=run.attempt,
        method_id=run.method_id,
        image_id=run.plan["imageId"],
        input_json=docker_backend.dumps_input(run.input),
        resources=Resources.from_json(run.resources),
        pids_limit=rt.settings.pids_limit,
        tmpfs_size_mb=rt.settings.tmpfs_size_mb,
    )
    capture = LogCapture(rt.pool, run_id, run.attempt, rt.redactor(), rt.settings.max_log_bytes)

    def heartbeat() -> bool:
        with rt.pool.connection() as conn:
            return runs_db.heartbeat(conn, run_id, attempt=run.attempt, owner=owner)

    try:
        outcome = docker_backend.run_container(
            rt.docker(),
            spec,
            capture.sink,
            heartbeat,
            HEARTBEAT_INTERVAL_S,
            rt.settings.max_line_bytes,
        )
    except BackendUnavailable:
        with rt.pool.connection() as conn:
            runs_db.release_lease(conn, run_id, attempt=run.attempt)
        raise
    except (ImageNotFound, BackendError) as exc:
        capture.close()
        reason = rt.redactor().redact_text(f"backend_error: {exc}")
        with rt.pool.connection() as conn:
            moved = runs_db.transition(
                conn,
                run_id,
                RunStatus.ERROR,
                from_=(RunStatus.RUNNING,),
                attempt=run.attempt,
                reason=reason,
            )
        logger.warning("run failed on the backend: %s", reason, extra=log)
        return moved.status if moved else None
    capture.close()
    with rt.pool.connection() as conn:
        moved = runs_db.transition(
            conn,
            run_id,
            RunStatus.FINALIZING,
            from_=(RunStatus.RUNNING,),
            attempt=run.attempt,
            exit_code=outcome.exit_code,
            oom_killed=outcome.oom_killed,
            wall_timed_out=outcome.timed_out,
            cpu_seconds=outcome.cpu_seconds,
            peak_memory_bytes=outcome.peak_memory_bytes,
            evaluation_raw=capture.evaluation_raw,
            log_lines=capture.stored_lines,
            log_bytes=sum(capture.seen_bytes.values()),
            logs_truncated=capture.truncated,
            lease_owner=None,
        )
    if moved is None:
        logger.warning("attempt went stale while running; result dropped", extra=log)
        return None
    send(rt.celery, TaskNames.FINALIZE, run_id)
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
    return moved.status
