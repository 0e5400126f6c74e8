"""Who may call what, and the hardening every response gets (issue 6).

- ``authenticate``: the blueprints' ``before_request``. Verifies the bearer token (401 with
  ``WWW-Authenticate``), counts the caller against the rate limit (429 with ``Retry-After``) and
  checks the permission the endpoint needs (403 naming it). Errors never echo the token.
- ``init_app``: strict content types (415), security headers and ``Cache-Control: no-store`` on
  every response, no CORS headers, a per-IP rate limit for endpoints without a token, and the dev
  issuer's discovery document and JWKS.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

import redis
from flask import Blueprint, Flask, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from services.api.errors import error_body
from shared.auth import AuthError, PermissionDenied, dev_discovery, dev_jwks, dev_wellknown_prefix
from shared.config import Settings

logger = logging.getLogger(__name__)

# The permission each endpoint needs. An endpoint not listed needs ``read`` for GET and ``admin``
# otherwise, so a new write endpoint is closed until someone decides who may use it.
ENDPOINT_PERMISSIONS = {
    "runs.submit": "submit",
    "runs.cancel": "cancel",
    "deliveries.redeliver": "submit",  # re-sends what the submitter asked to be told
}
ADMIN_BLUEPRINTS = {"policies"}
# Blueprints whose endpoints all run authenticate() first (the OpenAPI document says so too).
TOKEN_BLUEPRINTS = frozenset({"runs", "deliveries", *ADMIN_BLUEPRINTS})
# Endpoints that never count against the limit: probes and scrapers.
_UNLIMITED = {"health.healthz", "health.readyz", "metrics.scrape"}
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# GitHub chooses the content type of its webhooks; that endpoint checks its own signature first.
ANY_CONTENT_TYPE = frozenset({"github_webhooks.github"})


def required_permission(endpoint: str | None, method: str) -> str:
    """Return the permission ``endpoint`` needs for ``method``."""
    if endpoint in ENDPOINT_PERMISSIONS:
        return ENDPOINT_PERMISSIONS[endpoint]
    if endpoint and endpoint.split(".", 1)[0] in ADMIN_BLUEPRINTS:
        return "admin"
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "admin"


class RateLimiter:
    """A fixed-window counter per caller in Redis (``SANDBOX_RATE_LIMIT_PER_MINUTE``).

    Fails open: while Redis cannot be reached requests are not limited (and Redis is not asked
    again for a few seconds), since a limiter must not take the api down with it.
    """

    WINDOW_S = 60

    def __init__(self, url: str, per_minute: int) -> None:
        self.url = url
        self.per_minute = per_minute
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()
        self._skip_until = 0.0

    def _redis(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self.url, socket_timeout=1, socket_connect_timeout=1
                )
            return self._client

    def hit(self, caller: str) -> int | None:
        """Count one request of ``caller``; return seconds to wait when over the limit."""
        if self.per_minute <= 0 or time.monotonic() < self._skip_until:
            return None
        now = time.time()
        window = int(now // self.WINDOW_S)
        digest = hashlib.sha256(caller.encode()).hexdigest()[:32]
        key = f"sandbox:ratelimit:{digest}:{window}"
        try:
            pipe = self._redis().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self.WINDOW_S + 5)
            count = int(pipe.execute()[0])
        except redis.RedisError as exc:
            logger.warning("rate limit not applied: %s", type(exc).__name__)
            self._skip_until = time.monotonic() + 5
            return None
        if count <= self.per_minute:
            return None
        return max(1, int((window + 1) * self.WINDOW_S - now) + 1)


def _too_many(retry_after: int) -> ResponseReturnValue:
    limit = current_app.extensions["sandbox_rate_limiter"].per_minute
    response = jsonify(
        error_body(429, f"rate limit of {limit} requests per minute exceeded; retry later")
    )
    response.headers["Retry-After"] = str(retry_after)
    return response, 429


def _limit(caller: str) -> ResponseReturnValue | None:
    wait = current_app.extensions["sandbox_rate_limiter"].hit(caller)
    return _too_many(wait) if wait is not None else None


def client_ip() -> str:
    """Return the peer address (behind a proxy, wrap the app in ProxyFix to trust its header)."""
    return request.remote_addr or "unknown"


def authenticate() -> ResponseReturnValue | None:
    """Refuse requests without a valid token (401), too many (429) or not allowed (403)."""
    verifier = current_app.extensions["sandbox_verifier"]
    try:
        claims = verifier.verify(request.headers.get("Authorization"))
    except PermissionDenied as exc:  # a valid token no rule allows (GitHub OIDC)
        response = jsonify(error_body(403, str(exc)))
        response.headers["WWW-Authenticate"] = 'Bearer error="insufficient_scope"'
        return response, 403
    except AuthError as exc:
        over = _limit(f"ip:{client_ip()}")  # guessing tokens counts against the address
        if over is not None:
            return over
        response = jsonify(error_body(401, str(exc)))
        if request.headers.get("Authorization"):
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        else:
            response.headers["WWW-Authenticate"] = 'Bearer realm="sandbox-runner"'
        return response, 401
    g.claims = claims
    over = _limit(f"sub:{claims.get('iss')}|{claims.get('sub')}")
    if over is not None:
        return over
    needed = required_permission(request.endpoint, request.method)
    if needed not in claims.get("permissions", ()):
        response = jsonify(
            error_body(
                403,
                f"the token's roles do not grant {needed!r} "
                f"(roles: {', '.join(map(str, claims.get('roles') or [])) or 'none'})",
            )
        )
        response.headers["WWW-Authenticate"] = 'Bearer error="insufficient_scope"'
        return response, 403
    return None


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def init_app(app: Flask, settings: Settings) -> None:
    """Install the hardening hooks and the dev issuer's well-known documents on ``app``."""
    app.extensions["sandbox_rate_limiter"] = RateLimiter(
        settings.rate_limit_url or settings.broker_url, settings.rate_limit_per_minute
    )

    @app.before_request
    def _strict_content_type() -> ResponseReturnValue | None:
        if request.method not in BODY_METHODS or request.endpoint in ANY_CONTENT_TYPE:
            return None
        has_body = bool(request.content_length) or "chunked" in request.headers.get(
            "Transfer-Encoding", ""
        )
        if request.content_type or has_body:
            if not _is_json(request.mimetype):
                shown = (request.mimetype or "none")[:100]
                message = f"Content-Type must be application/json, not {shown}"
                return jsonify(error_body(415, message)), 415
        return None

    @app.before_request
    def _limit_anonymous() -> ResponseReturnValue | None:
        # Endpoints behind a token are counted per caller in authenticate().
        if request.blueprint in TOKEN_BLUEPRINTS:
            return None
        if request.endpoint in _UNLIMITED:
            return None
        return _limit(f"ip:{client_ip()}")

    @app.after_request
    def _security_headers(response):  # type: ignore[no-untyped-def]
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        headers.setdefault("Cache-Control", "no-store")
        return response

    if settings.dev_issuer_enabled:
        prefix = dev_wellknown_prefix(settings)
        wellknown = Blueprint("dev_issuer", __name__, url_prefix=f"{prefix}/.well-known")

        @wellknown.get("/openid-configuration")
        def openid_configuration() -> Any:
            """The dev issuer's discovery document (shaped like Entra's)."""
            response = jsonify(dev_discovery(settings))
            response.headers["Cache-Control"] = "public, max-age=300"
            return response

        @wellknown.get("/jwks.json")
        def jwks() -> Any:
            """The dev issuer's signing keys."""
            response = jsonify(dev_jwks(settings))
            response.headers["Cache-Control"] = "public, max-age=300"
            return response

        app.register_blueprint(wellknown)
