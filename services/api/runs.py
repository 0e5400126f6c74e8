"""``/api/sandbox/runs``: submit a run, read it, read its logs."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from typing import Any

import redis
from flask import current_app, g, request, url_for
from flask_smorest import Blueprint, abort

from services.api.callbacks import check_targets
from services.api.presenters import run_json
from services.api.schemas import RunGetQuerySchema, RunRequestSchema
from shared import db, dispatch, logstream
from shared.db import idempotency
from shared.db import runs as runs_db
from shared.queues import TaskNames
from shared.runtime import Runtime
from shared.states import RunStatus

logger = logging.getLogger(__name__)

blp = Blueprint(
    "runs",
    __name__,
    url_prefix="/api/sandbox/runs",
    description="Submit sandbox runs and read their results and logs.",
)


def runtime() -> Runtime:
    return current_app.extensions["sandbox_runtime"]  # type: ignore[no-any-return]


def parse_id(run_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(run_id)
    except ValueError:
        abort(404, message=f"no run with id {run_id!r}")
    raise AssertionError("unreachable")


class _KeyTaken(Exception):
    """A concurrent request bound the idempotency key first."""


@blp.route("", methods=["POST"])
@blp.arguments(RunRequestSchema())
@blp.response(202)
@blp.alt_response(409, description="Idempotency-Key reused with another body")
@blp.alt_response(413, description="input over SANDBOX_MAX_INPUT_BYTES")
@blp.alt_response(415, description="Content-Type is not application/json")
def submit(body: dict[str, Any]) -> Any:
    """Accept a run: persist it, its audit event and its dispatch in one transaction.

    With an ``Idempotency-Key`` header the same key and body return the same run; the same key
    with another body is a 409.
    """
    rt = runtime()
    size = len(json.dumps(body["input"], separators=(",", ":")).encode())
    if size > rt.settings.max_input_bytes:
        abort(413, message=f"input is {size} bytes; the limit is {rt.settings.max_input_bytes}")
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        abort(422, message="Idempotency-Key must be 1 to 255 characters")
    check_targets(rt.settings, body)  # callback and github (issue 9): 422 before anything is kept
    caller = str(g.claims.get("sub", ""))
    # What an Idempotency-Key is bound to; without a key nothing needs it.
    digest = (
        hashlib.sha256(json.dumps(request.get_json(), sort_keys=True).encode()).hexdigest()
        if key is not None
        else ""
    )
    for _ in range(2):
        try:
            return _submit_once(rt, body, key, caller, digest)
        except _KeyTaken:
            continue  # the other request committed: the next pass replays its run
    abort(409, message="Idempotency-Key is being used by a concurrent request")
    raise AssertionError("unreachable")


def _submit_once(
    rt: Runtime, body: dict[str, Any], key: str | None, caller: str, digest: str
) -> Any:
    with db.transaction(rt.pool) as conn:
        if key is not None:
            known = idempotency.lookup(conn, caller, key)
            if known is not None:
                if known[0] != digest:
                    abort(409, message="Idempotency-Key was used with a different request body")
                run = runs_db.get_run(conn, known[1])
                assert run is not None
                return _accepted(run, replayed=True)
        run = runs_db.create_run(
            conn,
            persona_id=body["personaId"],
            method_id=body["methodId"],
            adapter_image=body["adapterImage"],
            input=body["input"],
            dry_run=body["dryRun"],
            requested_resources=body.get("resources"),
            request_id=g.request_id,
            deadline_s=rt.settings.queue_deadline_s,
            callback=body.get("callback"),
            github=body.get("github"),
        )
        if key is not None and not idempotency.remember(
            conn, caller, key, digest, run.id, rt.settings.idempotency_ttl_s
        ):
            raise _KeyTaken
        queued = dispatch.enqueue(conn, TaskNames.PROVISION, run.id)
    # Committed: the run is safe. Ring now; if the broker is down the relay rings later.
    dispatch.flush_in_background(rt.celery, rt.pool, [queued])
    logger.info(
        "run accepted",
        extra={"runId": str(run.id), "methodId": run.method_id, "requestId": g.request_id},
    )
    return _accepted(run, replayed=False)


def _accepted(run: runs_db.Run, *, replayed: bool) -> Any:
    headers = {"Location": url_for("runs.get_run", run_id=str(run.id))}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return {"id": str(run.id), "status": run.status.value}, 202, headers


@blp.route("/<run_id>/cancel", methods=["POST"])
@blp.response(200)
@blp.alt_response(404, description="No run with this id")
@blp.alt_response(409, description="The run already ended otherwise")
def cancel(run_id: str) -> Any:
    """Cancel a run: it ends ``cancelled`` and its container is stopped. Idempotent."""
    rid = parse_id(run_id)
    caller = str(g.claims.get("sub", ""))
    with runtime().pool.connection() as conn:
        run = runs_db.get_run(conn, rid)
        if run is None:
            abort(404, message=f"no run with id {run_id!r}")
        if run.status is not RunStatus.CANCELLED:
            moved = runs_db.transition(
                conn,
                rid,
                RunStatus.CANCELLED,
                reason=f"cancelled: by {caller}",
                cancel_requested_by=caller,
            )
            run = moved or runs_db.get_run(conn, rid)
            assert run is not None
        if run.status is not RunStatus.CANCELLED:
            abort(409, message=f"run already ended {run.status.value}; it cannot be cancelled")
    # A running container is stopped by its executor, whose lease the cancel just revoked.
    runtime().announce_status(str(rid), run.status.value)
    logger.info("run cancelled", extra={"runId": str(rid), "requestId": g.request_id})
    return run_json(run)


@blp.route("/<run_id>", methods=["GET"])
@blp.arguments(RunGetQuerySchema(), location="query")
@blp.response(200)
@blp.alt_response(404, description="No run with this id")
def get_run(query: dict[str, Any], run_id: str) -> Any:
    """Return a run's status, result, limits and timestamps.

    With ``wait``, a run that is not over yet is answered when it ends (or when the wait is up):
    a client waiting for a result needs one request instead of a polling loop.
    """
    rid = parse_id(run_id)
    rt = runtime()
    with rt.pool.connection() as conn:
        run = runs_db.get_run(conn, rid)
    if run is None:
        abort(404, message=f"no run with id {run_id!r}")
    if query["wait"] > 0 and not run.terminal:
        run = _wait_for_end(rt, rid, query["wait"]) or run
    return run_json(run)


_WAIT_POLL_S = 0.5


def _wait_for_end(rt: Runtime, run_id: uuid.UUID, wait_s: float) -> runs_db.Run | None:
    """Return the run once it is over or ``wait_s`` passed; woken by its status announcements.

    Postgres is re-read every half second as well, for ends nobody announced (a reconciler's
    deadline, a lost message) and when Redis is unreachable.
    """
    deadline = time.monotonic() + wait_s
    pubsub = None
    try:
        pubsub = rt.pubsub.pubsub(ignore_subscribe_messages=True)
        # Subscribed before the next read, so an end between the two is not missed.
        pubsub.subscribe(logstream.channel(str(run_id)))
    except redis.RedisError:
        pubsub = None
    try:
        while True:
            with rt.pool.connection() as conn:
                run = runs_db.get_run(conn, run_id)
            if run is None or run.terminal or time.monotonic() >= deadline:
                return run
            until = min(deadline, time.monotonic() + _WAIT_POLL_S)
            while (left := until - time.monotonic()) > 0:
                if pubsub is None:
                    time.sleep(left)
                    break
                try:
                    if logstream.is_status(pubsub.get_message(timeout=left)):
                        break
                except redis.RedisError:
                    pubsub = None
    finally:
        if pubsub is not None:
            pubsub.close()


@blp.before_request
def authenticate() -> Any:
    """Refuse requests without a valid bearer token (401), too many (429) or not allowed (403)."""
    from services.api.security import authenticate as check

    return check()
