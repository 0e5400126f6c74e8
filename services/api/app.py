"""The api application factory: ``create_app(settings)``."""

from __future__ import annotations

import uuid

from flask import Flask, g, request
from flask_smorest import Api

from services.api import deliveries as api_deliveries

# logs and run_list add routes to runs.blp
from services.api import downloads, errors, health, logs, run_list, runs  # noqa: F401
from services.api import github_webhooks as api_github
from services.api import metrics as api_metrics
from services.api import openapi as api_openapi
from services.api import policies as api_policies
from services.api import security as api_security
from shared.auth import TokenVerifier
from shared.celery_app import make_celery
from shared.config import Settings, load_settings
from shared.runtime import Runtime


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app; nothing connects until the first request."""
    settings = settings or load_settings()
    app = Flask("sandbox_runner_api")
    app.config.update(
        API_TITLE="Sandbox Runner",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        # Bodies far beyond the input cap are refused before they are parsed (413).
        MAX_CONTENT_LENGTH=settings.max_input_bytes * 4 + 64 * 1024,
    )
    runtime = Runtime(settings, make_celery("api", settings))
    app.extensions["sandbox_runtime"] = runtime
    app.extensions["sandbox_verifier"] = TokenVerifier(settings)

    @app.before_request
    def _request_id() -> None:
        g.request_id = request.headers.get("X-Request-Id") or str(uuid.uuid4())

    @app.after_request
    def _echo_request_id(response):  # type: ignore[no-untyped-def]
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    # 401/403/429/503, 413/415/422 come from hooks, not views: a plugin documents them (issue 6).
    api = Api(app, spec_kwargs={"extra_plugins": [api_openapi.ErrorResponses()]})
    api_openapi.register(api)
    api.register_blueprint(runs.blp)
    api.register_blueprint(api_deliveries.blp)  # issue 9: webhooks and commit statuses
    api.register_blueprint(api_github.blp)
    api.register_blueprint(api_policies.blp)  # issue 6: resource policy admin
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    api.spec.options["security"] = [{"bearerAuth": []}]
    app.register_blueprint(health.blp)
    app.register_blueprint(downloads.blobs)  # signed links: no bearer token
    errors.register_error_handlers(app)
    api_security.init_app(app, settings)  # 415, security headers, rate limit, dev issuer JWKS
    api_metrics.init_app(app, runtime)  # /metrics, request metrics, log context
    return app
