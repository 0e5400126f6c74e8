"""Executor worker: ``celery -A services.executor.worker worker -Q execute``."""

from __future__ import annotations

from shared.celery_app import make_worker

app, runtime = make_worker("executor")

from services.executor import tasks  # noqa: E402,F401  (registers the tasks on ``app``)
