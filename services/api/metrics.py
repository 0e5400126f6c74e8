"""``GET /metrics`` of the api, request metrics and the request id in every log record."""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared import metrics
from shared.logs import bind_context, reset_context
from shared.queues import Queues
from shared.runtime import Runtime

blp = Blueprint("metrics", __name__)


@blp.get("/metrics")
def scrape() -> Response:
    """Prometheus exposition: every gunicorn worker's counters, plus the fleet's gauges."""
    body = generate_latest(metrics.scrape_registry())
    body += generate_latest(current_app.extensions["sandbox_fleet_registry"])
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask, runtime: Runtime) -> None:
    """Register ``/metrics``, the request hooks and the fleet collector on ``app``."""
    settings = runtime.settings
    client: dict[str, Any] = {}

    def redis_client() -> Any:
        if "redis" not in client:
            client["redis"] = redis.Redis.from_url(
                settings.broker_url, socket_timeout=2, socket_connect_timeout=2
            )
        return client["redis"]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        metrics.FleetCollector(
            redis_client,
            lambda: runtime.pool.connection(timeout=2),
            Queues.all(),
            settings.lease_timeout_s,
        )
    )
    app.extensions["sandbox_fleet_registry"] = registry
    app.register_blueprint(blp)

    @app.before_request
    def _start() -> None:
        g.metrics_started = time.monotonic()
        # A gunicorn thread serves many requests: start each one with a clean log context.
        reset_context(None)
        bind_context(requestId=g.get("request_id"))

    @app.after_request
    def _observe(response: Response) -> Response:
        try:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            if rule != "/metrics":
                metrics.API_REQUESTS.labels(rule, request.method, str(response.status_code)).inc()
                started = g.get("metrics_started")
                if started is not None:
                    metrics.API_LATENCY.labels(rule, request.method).observe(
                        time.monotonic() - started
                    )
        except Exception:
            current_app.logger.exception("could not record request metrics")
        return response

    @app.teardown_request
    def _forget(_: BaseException | None) -> None:
        reset_context(None)
