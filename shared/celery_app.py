"""The Celery application every worker service and the api build the same way."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown

from shared.config import Settings, load_settings
from shared.errors import RunnerError
from shared.logs import configure_logging
from shared.queues import ROUTES, TaskNames
from shared.runtime import Runtime

logger = logging.getLogger(__name__)


def make_celery(name: str, settings: Settings, task_cls: str | type | None = None) -> Celery:
    """Build a Celery app with the fleet's delivery guarantees; it connects lazily."""
    app = Celery(name, broker=settings.broker_url, task_cls=task_cls)
    longest_run_s = 300
    app.conf.update(
        task_routes={task: {"queue": queue} for task, queue in ROUTES.items()},
        task_default_queue="provision",
        # A message is acknowledged only after its task finished, and comes back if the worker
        # process dies; tasks are idempotent, so a second delivery is harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # Redis redelivers an unacked message after this; it must outlast the longest run.
        broker_transport_options={"visibility_timeout": longest_run_s * 4},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule={
            "reconcile": {
                "task": TaskNames.RECONCILE,
                "schedule": float(settings.sweep_interval_s),
            },
            "relay-outbox": {"task": TaskNames.RELAY_OUTBOX, "schedule": 2.0},
        },
        enable_utc=True,
    )
    return app


def send(
    app: Celery, task: str, run_id: uuid.UUID, attempt: int | None = None, **options: Any
) -> None:
    """Enqueue ``task`` for a run: the message carries the run id (and attempt), nothing else."""
    args: list[Any] = [str(run_id)] if attempt is None else [str(run_id), attempt]
    app.send_task(task, args=args, queue=ROUTES[task], **options)


class RunTask(Task):  # type: ignore[misc]
    """Base task: when a run's task gives up (retries exhausted), the run ends ``error``."""

    runtime: Runtime

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        from shared.db import runs as runs_db
        from shared.states import TERMINAL, RunStatus

        try:
            run_id = uuid.UUID(str(args[0]))
        except (IndexError, ValueError):
            return
        logger.error(
            "task %s gave up on run %s: %s",
            self.name,
            run_id,
            type(exc).__name__,
            extra={"runId": str(run_id)},
        )
        reason = _failure_reason(exc, self.request.retries)
        with self.runtime.pool.connection() as conn:
            run = runs_db.get_run(conn, run_id)
            if run is None or run.status in TERMINAL:
                return
            runs_db.transition(conn, run_id, RunStatus.ERROR, from_=(run.status,), reason=reason)


def _failure_reason(exc: BaseException, retries: int) -> str:
    if isinstance(exc, RunnerError):
        return f"platform_error: {exc} (after {retries} retries)"
    # Exception text from a library may carry anything; keep only its type.
    return f"platform_error: {type(exc).__name__} (after {retries} retries)"


def make_worker(service: str) -> tuple[Celery, Runtime]:
    """Build the Celery app and runtime of one worker service from the environment."""
    settings = load_settings()
    configure_logging(service, settings)
    runtime = Runtime(settings)
    RunTask.runtime = runtime
    app = make_celery(service, settings, task_cls=RunTask)
    runtime.celery = app

    @worker_process_init.connect(weak=False)
    def _after_fork(**_: Any) -> None:
        runtime.reset_after_fork()

    @worker_process_shutdown.connect(weak=False)
    def _on_shutdown(**_: Any) -> None:
        runtime.close()

    return app, runtime
