"""Provisioning: resolve the resource policy and the image, record the plan, hand on."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from shared import db, dispatch, faults, image_policy
from shared.backends import choice as backend_choice
from shared.backends import docker as docker_backend
from shared.backends import egress
from shared.db import runs as runs_db
from shared.errors import ImageNotFound, PolicyViolation
from shared.queues import TaskNames
from shared.runtime import Runtime
from shared.states import RunStatus

logger = logging.getLogger(__name__)

BACKEND = "docker"


def provision_run(rt: Runtime, run_id: uuid.UUID) -> RunStatus | None:
    """Provision one run; return the status it was left in, or None if it was not ours to move."""
    log = {"runId": str(run_id)}
    # A claim lost in a database crash leaves the run queued: the hand-off below then fails its
    # compare-and-set, and the reconciler sends the run again.
    with db.transaction(rt.pool, flush_wal=False) as conn:
        run = runs_db.transition(
            conn, run_id, RunStatus.PROVISIONING, from_=(RunStatus.QUEUED, RunStatus.PROVISIONING)
        )
    if run is None:
        logger.info("run not claimable for provisioning; skipping", extra=log)
        return None
    try:
        resources = rt.policy.resolve(str(run.persona_id), run.method_id, _requested(run))
    except PolicyViolation as exc:
        return _fail(rt, run_id, f"policy_violation: {exc}")
    try:
        # Registry allow-list, tag -> digest, signature: what runs is the checked digest.
        decision = image_policy.check(rt.settings, run.adapter_image)
    except image_policy.ImagePolicyError as exc:
        return _fail(rt, run_id, f"image_policy: {exc}")
    try:
        image = docker_backend.resolve_image(rt.docker(), decision.ref, rt.settings.pull_timeout_s)
    except ImageNotFound as exc:
        return _fail(rt, run_id, f"image_not_found: {exc}")
    plan = {
        "image": run.adapter_image,
        "imageDigest": image.digest,
        "imageId": image.image_id,
        "imagePolicy": decision.to_json(),
        "resources": resources.to_json(),
        "backend": BACKEND,
        **egress.plan_network(resources, rt.settings.egress_allow_hosts),  # none | egress
        "pidsLimit": rt.settings.pids_limit,
    }
    values: dict[str, Any] = {
        "resources": resources.to_json(),
        "backend": BACKEND,
        "image_digest": image.digest,
        "plan": plan,
    }
    values.update(backend_choice.decide(rt, run, plan))  # docker | aci | auto (issue 7)
    with db.transaction(rt.pool) as conn:
        if run.dry_run:
            moved = runs_db.transition(
                conn,
                run_id,
                RunStatus.SUCCEEDED,
                from_=(RunStatus.PROVISIONING,),
                reason="dry_run: validated; no container was started",
                provisioned_at=_now(conn),
                **values,
            )
            return moved.status if moved else None
        moved = runs_db.transition(
            conn,
            run_id,
            RunStatus.READY,
            from_=(RunStatus.PROVISIONING,),
            deadline_s=rt.settings.queue_deadline_s,
            **values,
        )
        # The hand-off commits with the state change: a crash after this loses nothing.
        queued = dispatch.enqueue(conn, TaskNames.EXECUTE, run_id) if moved else None
    if moved is None or queued is None:
        return None
    faults.crash_point(rt.settings, "provision.after_commit")
    dispatch.flush(rt.celery, rt.pool, [queued])
    logger.info("run provisioned", extra={**log, "imageDigest": image.digest})
    return moved.status


def _requested(run: runs_db.Run) -> dict[str, Any] | None:
    if not run.requested_resources:
        return None
    names = {
        "cpu": "cpu",
        "memoryMb": "memory_mb",
        "timeoutS": "timeout_s",
        "logCapMb": "log_cap_mb",
    }
    return {names[k]: v for k, v in run.requested_resources.items() if k in names}


def _now(conn: Any) -> Any:
    return conn.execute("SELECT now() AS now").fetchone()["now"]


def _fail(rt: Runtime, run_id: uuid.UUID, reason: str) -> RunStatus | None:
    redacted = rt.redactor().redact_text(reason)
    with db.transaction(rt.pool) as conn:
        moved = runs_db.transition(
            conn, run_id, RunStatus.ERROR, from_=(RunStatus.PROVISIONING,), reason=redacted
        )
    logger.warning("run could not be provisioned: %s", redacted, extra={"runId": str(run_id)})
    return moved.status if moved else None
