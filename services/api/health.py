"""``/healthz`` (the process answers) and ``/readyz`` (Postgres and the broker answer)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify

logger = logging.getLogger(__name__)

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz() -> Any:
    """Say the process is up."""
    return jsonify({"status": "ok"})


@blp.get("/readyz")
def readyz() -> Any:
    """Say whether Postgres and the broker can be reached (503 naming the one that cannot)."""
    rt = current_app.extensions["sandbox_runtime"]
    checks: dict[str, str] = {}
    try:
        with rt.pool.connection(timeout=3) as conn:
            conn.execute("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as exc:
        logger.warning("readiness: postgres unreachable: %s", type(exc).__name__)
        checks["postgres"] = "unreachable"
    try:
        with rt.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        logger.warning("readiness: broker unreachable: %s", type(exc).__name__)
        checks["broker"] = "unreachable"
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), (
        200 if ready else 503
    )
