"""One JSON error envelope ``{code, status, message, errors?}`` for every failure."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import kombu.exceptions
import psycopg
import psycopg_pool
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

from shared.errors import Unavailable

logger = logging.getLogger(__name__)


def error_body(code: int, message: str, **extra: Any) -> dict[str, Any]:
    """Return the envelope for ``code``."""
    return {"code": code, "status": HTTPStatus(code).phrase, "message": message, **extra}


def register_error_handlers(app: Flask) -> None:
    """Map dependency outages to 503 and anything unexpected to a 500 without details."""

    def unavailable(exc: Exception) -> ResponseReturnValue:
        logger.warning("dependency unavailable: %s", type(exc).__name__)
        what = (
            "the broker" if isinstance(exc, kombu.exceptions.OperationalError) else "the database"
        )
        if isinstance(exc, Unavailable):
            what = str(exc)
        response = jsonify(error_body(503, f"service unavailable: cannot reach {what}"))
        response.headers["Retry-After"] = "5"
        return response, 503

    for exc_type in (
        psycopg.OperationalError,
        psycopg_pool.PoolTimeout,
        kombu.exceptions.OperationalError,
        Unavailable,
    ):
        app.register_error_handler(exc_type, unavailable)

    def unstorable(exc: Exception) -> ResponseReturnValue:
        # A value Postgres cannot hold (a NUL character in a path or query parameter) is the
        # caller's error, not ours: every schema refuses it, this catches any route that forgot.
        logger.info("refused a value the database cannot store: %s", type(exc).__name__)
        return jsonify(
            error_body(
                422,
                "a parameter contains characters that cannot be stored (NUL or a lone surrogate)",
            )
        ), 422

    app.register_error_handler(psycopg.DataError, unstorable)

    def internal(exc: Exception) -> ResponseReturnValue:
        logger.exception("unhandled error")
        return jsonify(error_body(500, "internal error")), 500

    app.register_error_handler(Exception, internal)
