"""``/api/sandbox/runs/<id>/deliveries``: a run's webhooks and commit statuses, and re-sending."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint, abort

from services.api.runs import authenticate, parse_id, runtime
from shared.db import deliveries
from shared.db import runs as runs_db

blp = Blueprint(
    "deliveries",
    __name__,
    url_prefix="/api/sandbox/runs",
    description="Result webhooks and GitHub commit statuses of a run, with every attempt.",
)
blp.before_request(authenticate)


def _ts(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _target(d: deliveries.Delivery) -> dict[str, Any]:
    # Only what a caller already knows; a configured endpoint's URL stays on the server.
    keep = ("url", "endpoint") if d.kind == deliveries.WEBHOOK else ("repository", "sha")
    return {k: d.target[k] for k in keep if k in d.target}


def delivery_json(d: deliveries.Delivery, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the public view of one delivery (its body was redacted before it was stored)."""
    return {
        "id": str(d.id),
        "kind": d.kind,
        "event": "sandbox.run.state_changed",
        "eventStatus": d.event_status,
        "state": d.state,
        "attempts": d.attempts,
        "nextAttemptAt": _ts(d.next_attempt_at) if d.state == "pending" else None,
        "expiresAt": _ts(d.expires_at),
        "lastStatusCode": d.last_status,
        "lastError": d.last_error,
        "redeliveryOf": str(d.redelivery_of) if d.redelivery_of else None,
        "createdAt": _ts(d.created_at),
        "deliveredAt": _ts(d.delivered_at),
        "target": _target(d),
        "payload": d.payload,
        "attemptLog": [
            {
                "attempt": a["attempt"],
                "at": _ts(a["started_at"]),
                "durationMs": a["duration_ms"],
                "statusCode": a["status_code"],
                "error": a["error"],
            }
            for a in attempts
        ],
    }


@blp.route("/<run_id>/deliveries", methods=["GET"])
@blp.response(200)
@blp.alt_response(404, description="No run with this id")
def list_deliveries(run_id: str) -> Any:
    """List the run's deliveries in order, each with its attempts."""
    rid = parse_id(run_id)
    with runtime().pool.connection() as conn:
        if runs_db.get_run(conn, rid) is None:
            abort(404, message=f"no run with id {run_id!r}")
        found = deliveries.for_run(conn, rid)
        attempts = deliveries.attempts_for(conn, [d.id for d in found])
    return {
        "runId": str(rid),
        "deliveries": [delivery_json(d, attempts.get(d.id, [])) for d in found],
    }


@blp.route("/<run_id>/deliveries/<delivery_id>/redeliver", methods=["POST"])
@blp.response(202)
@blp.alt_response(404, description="No such run or delivery")
def redeliver(run_id: str, delivery_id: str) -> Any:
    """Send a delivery's body to its target again, as a new delivery with a new id."""
    rid = parse_id(run_id)
    did = parse_id(delivery_id)
    rt = runtime()
    with rt.pool.connection() as conn:
        original = deliveries.get(conn, did)
        if original is None or original.run_id != rid:
            abort(404, message=f"run {run_id} has no delivery {delivery_id!r}")
        added = deliveries.add(
            conn,
            run_id=original.run_id,
            event_id=original.event_id,
            kind=original.kind,
            event_status=original.event_status,
            target=original.target,
            payload=original.payload,
            horizon_s=rt.settings.webhook_horizon_s,
            redelivery_of=original.id,
        )
        assert added is not None
    return delivery_json(added, []), 202
