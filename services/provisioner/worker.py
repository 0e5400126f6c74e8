"""Provisioner worker: ``celery -A services.provisioner.worker worker -Q provision``."""

from __future__ import annotations

from shared.celery_app import make_worker

app, runtime = make_worker("provisioner")

from services.provisioner import tasks  # noqa: E402,F401  (registers the tasks on ``app``)
