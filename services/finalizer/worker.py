"""Finalizer worker: ``celery -A services.finalizer.worker worker -Q finalize,maintenance``."""

from __future__ import annotations

from shared.celery_app import make_worker

app, runtime = make_worker("finalizer")

from services.finalizer import tasks  # noqa: E402,F401  (registers the tasks on ``app``)
