"""The error answers every operation can give, declared in the OpenAPI document (issue 6).

Authentication, the rate limit, strict content types, the body size cap and dependency outages
are enforced by ``before_request`` hooks and error handlers (``security.py``, ``errors.py``), not
by the views, so no view decorator documents them. ``ErrorResponses`` is an apispec plugin that
adds them to each operation as flask-smorest registers it, from the same facts the hooks act on
(which blueprints need a token, which endpoint takes any content type), so a new endpoint is
documented the day it is added. Every error is the JSON envelope ``{code, status, message}``.
"""

from __future__ import annotations

from typing import Any

from apispec import BasePlugin
from flask_smorest import Api

from services.api.security import ANY_CONTENT_TYPE, BODY_METHODS, TOKEN_BLUEPRINTS

_RETRY_AFTER = {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}
# Component name, description and headers of each shared error response.
_RESPONSES: dict[int, tuple[str, str, dict[str, Any]]] = {
    400: ("BadRequest", "The body is not valid JSON", {}),
    401: (
        "Unauthenticated",
        "No valid bearer token: missing, expired, wrong issuer, audience or signature "
        "(the message says which; the token is never echoed)",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    403: (
        "Forbidden",
        "The token is valid but its roles do not grant this operation (the message names the "
        "permission)",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    413: ("PayloadTooLarge", "The body or the run's input is over its size limit", {}),
    415: ("UnsupportedMediaType", "A body that is not application/json", {}),
    422: (
        "InvalidParameter",
        "A parameter or body field is invalid (``errors`` names it)",
        {},
    ),
    429: (
        "RateLimited",
        "Over SANDBOX_RATE_LIMIT_PER_MINUTE requests per minute for this caller",
        {"Retry-After": _RETRY_AFTER},
    ),
    503: (
        "Unavailable",
        "Postgres, the broker or another dependency cannot be reached; nothing was changed",
        {"Retry-After": _RETRY_AFTER},
    ),
}


def register(api: Api) -> None:
    """Register the shared error responses the plugin refers to (before the blueprints)."""
    for name, description, headers in _RESPONSES.values():
        response: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": api.ERROR_SCHEMA}},
        }
        if headers:
            response["headers"] = headers
        api.spec.components.response(name, response)


class ErrorResponses(BasePlugin):
    """Add the hooks' error answers to every operation, each with the JSON error schema."""

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """Complete each operation's responses (apispec calls this per registered path)."""
        rule = kwargs.get("rule")
        endpoint = str(getattr(rule, "endpoint", "") or "")
        has_path_parameters = bool(getattr(rule, "arguments", None))
        for method, operation in (operations or {}).items():
            responses = {str(code): doc for code, doc in operation.get("responses", {}).items()}
            for code in _codes(endpoint, method, operation, has_path_parameters):
                responses.setdefault(str(code), _RESPONSES[code][0])
            for code, doc in responses.items():
                # The views' own 404/409/... carry a description only: give them the body too.
                if code[0] in "45" and isinstance(doc, dict) and "content" not in doc:
                    doc["content"] = {"application/json": {"schema": "Error"}}
            operation["responses"] = responses


def _codes(endpoint: str, method: str, operation: dict[str, Any], path_params: bool) -> list[int]:
    blueprint = endpoint.split(".", 1)[0]
    codes = [429, 503]  # every caller is counted (per token, or per address without one)
    if blueprint in TOKEN_BLUEPRINTS:
        codes += [401, 403]
    has_body = "requestBody" in operation
    if method.upper() in BODY_METHODS and endpoint not in ANY_CONTENT_TYPE:
        codes.append(415)
    if has_body:
        codes += [400, 413]
    if has_body or path_params or operation.get("parameters"):
        # Besides schema errors: a value Postgres cannot store (errors.py's fallback).
        codes.append(422)
    return codes
