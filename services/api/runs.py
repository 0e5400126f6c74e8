"""``/api/sandbox/runs``: submit a run, read it, read its logs."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import kombu.exceptions
from flask import current_app, g, request, url_for
from flask_smorest import Blueprint, abort

from services.api.presenters import log_line_json, run_json
from services.api.schemas import LogsQuerySchema, RunRequestSchema
from shared.celery_app import send
from shared.db import run_logs
from shared.db import runs as runs_db
from shared.errors import Unavailable
from shared.queues import TaskNames
from shared.runtime import Runtime

logger = logging.getLogger(__name__)

blp = Blueprint(
    "runs",
    __name__,
    url_prefix="/api/sandbox/runs",
    description="Submit sandbox runs and read their results and logs.",
)


def _runtime() -> Runtime:
    return current_app.extensions["sandbox_runtime"]  # type: ignore[no-any-return]


def _parse_id(run_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(run_id)
    except ValueError:
        abort(404, message=f"no run with id {run_id!r}")
    raise AssertionError("unreachable")


@blp.route("", methods=["POST"])
@blp.arguments(RunRequestSchema)
@blp.response(202)
def submit(body: dict[str, Any]) -> Any:
    """Accept a run: persist it with its audit event, then ring the provisioner."""
    rt = _runtime()
    size = len(json.dumps(body["input"], separators=(",", ":")).encode())
    if size > rt.settings.max_input_bytes:
        abort(413, message=f"input is {size} bytes; the limit is {rt.settings.max_input_bytes}")
    with rt.pool.connection() as conn:
        run = runs_db.create_run(
            conn,
            persona_id=body["personaId"],
            method_id=body["methodId"],
            adapter_image=body["adapterImage"],
            input=body["input"],
            dry_run=body["dryRun"],
            requested_resources=body.get("resources"),
            request_id=g.request_id,
        )
    try:
        send(rt.celery, TaskNames.PROVISION, run.id, retry=False)
    except (kombu.exceptions.OperationalError, OSError) as exc:
        # The run was committed but nobody was told: take it back so nothing is half-written.
        with rt.pool.connection() as conn:
            runs_db.delete_run(conn, run.id)
        raise Unavailable("the broker") from exc
    logger.info(
        "run accepted",
        extra={"runId": str(run.id), "methodId": run.method_id, "requestId": g.request_id},
    )
    location = url_for("runs.get_run", run_id=str(run.id))
    return {"id": str(run.id), "status": run.status.value}, 202, {"Location": location}


@blp.route("/<run_id>", methods=["GET"])
@blp.response(200)
def get_run(run_id: str) -> Any:
    """Return a run's status, result, limits and timestamps."""
    rid = _parse_id(run_id)
    with _runtime().pool.connection() as conn:
        run = runs_db.get_run(conn, rid)
    if run is None:
        abort(404, message=f"no run with id {run_id!r}")
    return run_json(run)


@blp.route("/<run_id>/logs", methods=["GET"])
@blp.arguments(LogsQuerySchema, location="query")
@blp.response(200)
def get_logs(query: dict[str, Any], run_id: str) -> Any:
    """Return a page of the run's redacted stdout/stderr lines."""
    rid = _parse_id(run_id)
    with _runtime().pool.connection() as conn:
        run = runs_db.get_run(conn, rid)
        if run is None:
            abort(404, message=f"no run with id {run_id!r}")
        lines = run_logs.page(
            conn, rid, after=query["after"], limit=query["limit"], stream=query.get("stream")
        )
    next_after = lines[-1].seq if lines else query["after"]
    return {
        "runId": str(rid),
        "status": run.status.value,
        "lines": [log_line_json(ln) for ln in lines],
        "nextAfter": next_after,
        # The client may stop polling: the run is over and this page reached the end.
        "complete": run.terminal and len(lines) < query["limit"],
        "truncated": run.logs_truncated,
    }


@blp.before_request
def authenticate() -> Any:
    """Refuse requests without a valid bearer token (401, JSON)."""
    from shared.auth import AuthError

    verifier = current_app.extensions["sandbox_verifier"]
    try:
        g.claims = verifier.verify(request.headers.get("Authorization"))
    except AuthError as exc:
        from flask import jsonify

        from services.api.errors import error_body

        response = jsonify(error_body(401, str(exc)))
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response, 401
    return None
