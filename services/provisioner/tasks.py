"""Provisioner tasks: thin wrappers that parse the id and call the logic."""

from __future__ import annotations

import uuid

import psycopg

from services.provisioner.provision import provision_run
from services.provisioner.worker import app, runtime
from shared.errors import BackendUnavailable
from shared.queues import TaskNames


@app.task(
    name=TaskNames.PROVISION,
    autoretry_for=(BackendUnavailable, psycopg.OperationalError),
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
)
def provision(run_id: str) -> None:
    """Decide limits and image for a queued run, then hand it to the executor."""
    provision_run(runtime, uuid.UUID(run_id))
