"""``POST /api/sandbox/webhooks/github``: GitHub events that start runs (no bearer token).

Authenticated by ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with the secret behind
``SANDBOX_GITHUB_WEBHOOK_SECRET_REF``). ``ping`` answers; an event listed in
``SANDBOX_GITHUB_WEBHOOK_EVENTS`` starts the run in its payload (``repository_dispatch``:
``client_payload`` is the run request); anything else is acknowledged and ignored. GitHub's
``X-GitHub-Delivery`` is the idempotency key, so a redelivery returns the same run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from flask import jsonify, request
from flask_smorest import Blueprint, abort
from marshmallow import ValidationError

from services.api import runs
from services.api.callbacks import check_targets
from services.api.errors import error_body
from services.api.schemas import RunRequestSchema
from shared.secrets import SecretError, provider_for
from shared.webhooks.signing import verify_github

logger = logging.getLogger(__name__)

CALLER = "github-webhook"

blp = Blueprint(
    "github_webhooks",
    __name__,
    url_prefix="/api/sandbox/webhooks",
    description="GitHub webhooks that start runs (signed, idempotent per delivery).",
)


def _json_error(code: int, message: str) -> Any:
    return jsonify(error_body(code, message)), code


@blp.route("/github", methods=["POST"])
@blp.alt_response(200, description="ping answered")
@blp.alt_response(202, description="run accepted (its id and status), or the event ignored")
@blp.alt_response(400, description="X-GitHub-Delivery missing, or the body is not JSON")
@blp.alt_response(401, description="X-Hub-Signature-256 is missing or does not match")
@blp.alt_response(404, description="GitHub webhooks are not configured on this server")
@blp.alt_response(409, description="this delivery is being handled by a concurrent request")
@blp.alt_response(413, description="the run's input is over SANDBOX_MAX_INPUT_BYTES")
@blp.alt_response(422, description="client_payload is not a valid run request")
def github() -> Any:
    """Verify a GitHub webhook, answer ``ping`` and start runs for configured events."""
    rt = runs.runtime()
    settings = rt.settings
    if not settings.github_webhook_secret_ref:
        return _json_error(404, "GitHub webhooks are not configured on this server")
    try:
        secret = provider_for(settings).get(settings.github_webhook_secret_ref)
    except SecretError:
        logger.error("GitHub webhook secret cannot be read")
        return _json_error(503, "GitHub webhook secret is unavailable")
    raw = request.get_data(cache=True)
    if not verify_github(secret, raw, request.headers.get("X-Hub-Signature-256")):
        return _json_error(401, "X-Hub-Signature-256 is missing or does not match")
    event = request.headers.get("X-GitHub-Event", "")
    delivery = request.headers.get("X-GitHub-Delivery", "")
    if event == "ping":
        return jsonify({"status": "pong", "delivery": delivery}), 200
    allowed = {e.strip() for e in settings.github_webhook_events.split(",") if e.strip()}
    if event not in allowed:
        return jsonify({"status": "ignored", "event": event}), 202
    if not 1 <= len(delivery) <= 255:
        return _json_error(400, "X-GitHub-Delivery is required")
    try:
        payload = json.loads(raw)
    except ValueError:
        return _json_error(400, "body is not JSON")
    run_request = payload.get("client_payload") if isinstance(payload, dict) else None
    if not isinstance(run_request, dict):
        return _json_error(422, "client_payload must be a run request object")
    try:
        body = RunRequestSchema().load(run_request)
    except ValidationError as exc:
        abort(
            422, message="client_payload is not a valid run request", errors={"json": exc.messages}
        )
    size = len(json.dumps(body["input"], separators=(",", ":")).encode())
    if size > settings.max_input_bytes:
        abort(413, message=f"input is {size} bytes; the limit is {settings.max_input_bytes}")
    check_targets(settings, body)
    digest = hashlib.sha256(raw).hexdigest()
    for _ in range(2):
        try:
            return runs._submit_once(rt, body, delivery, CALLER, digest)
        except runs._KeyTaken:
            continue  # a concurrent redelivery committed first: the next pass replays its run
    abort(409, message="this delivery is being handled by a concurrent request")
    raise AssertionError("unreachable")
