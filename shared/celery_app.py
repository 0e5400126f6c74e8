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


# The longest a task may take: the timeout guardrail plus teardown. The visibility timeout
# (SANDBOX_VISIBILITY_TIMEOUT_S, default three times this) must stay above it, so a message is
# not redelivered while its task still legitimately runs.
LONGEST_TASK_S = 300 + 120


def make_celery(name: str, settings: Settings, task_cls: str | type | None = None) -> Celery:
    """Build a Celery app with the fleet's delivery guarantees; it connects lazily."""
    app = Celery(name, broker=settings.broker_url, task_cls=task_cls)
    visibility_s = settings.visibility_timeout_s
    transport = {
        # Redis hands an unacked message to another worker after this: longer than any task.
        "visibility_timeout": visibility_s,
        # A half-open connection must fail, not hang a worker forever (celery#9705).
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 25,
        "retry_on_timeout": True,
    }
    app.conf.update(
        task_routes={task: {"queue": queue} for task, queue in ROUTES.items()},
        task_default_queue="provision",
        # Acknowledge after the task ran, so a dying worker's message comes back; tasks are
        # idempotent (compare-and-set on the run), so a second delivery is harmless.
        task_acks_late=True,
        # A killed pool child must requeue its message, not ack it (celery#1628).
        task_reject_on_worker_lost=True,
        # Reserve one message per process: long tasks must not hold others hostage.
        worker_prefetch_multiplier=1,
        # Postgres holds run state; results in Redis would only expire and eat memory.
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # The visibility timeout must be the same everywhere it is read (celery#7651).
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": visibility_s},
        visibility_timeout=visibility_s,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        # After a broker reconnect, stop late-ack tasks that will be redelivered anyway, rather
        # than run them twice in parallel (celery PR #6654).
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # On SIGTERM, give running tasks a bounded warm phase, then requeue what is unacked.
        worker_soft_shutdown_timeout=20.0,
        worker_enable_soft_shutdown_on_idle=True,
        # Backstop only: the executor enforces the wall limit itself; hard < visibility timeout.
        task_soft_time_limit=LONGEST_TASK_S,
        task_time_limit=LONGEST_TASK_S + 30,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule={
            # Periodic messages expire, so a stopped maintenance worker does not find a backlog.
            "reconcile": {
                "task": TaskNames.RECONCILE,
                "schedule": float(settings.sweep_interval_s),
                "options": {"expires": float(settings.sweep_interval_s)},
            },
            # Short, so a dispatch the broker refused is published soon after it is back.
            "relay-outbox": {
                "task": TaskNames.RELAY_OUTBOX,
                "schedule": 1.0,
                "options": {"expires": 5.0},
            },
        },
        enable_utc=True,
    )
    return app


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
