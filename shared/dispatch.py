"""Hand work to the next service through the outbox: durable first, fast when the broker is up.

The dispatch row is written in the transaction of the state change that calls for it, so a
crash or a broker outage between the commit and the publish loses nothing: the relay (a beat
task) publishes what is still unsent. After the commit the caller publishes at once and marks
the row sent, so the normal path pays no polling delay. A duplicate publish is harmless: every
task starts with a compare-and-set.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import kombu.exceptions
import psycopg
from celery import Celery
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from shared import db
from shared.queues import ROUTES

logger = logging.getLogger(__name__)

DISPATCH = "sandbox.dispatch"


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A dispatch intent written to the outbox: what ``flush`` publishes once it is committed."""

    event_id: uuid.UUID
    payload: dict[str, Any]


def enqueue(
    conn: psycopg.Connection[Any], task: str, run_id: uuid.UUID, attempt: int | None = None
) -> Dispatch:
    """Write a dispatch intent for ``task`` in the caller's transaction and return it."""
    if task not in ROUTES:
        raise ValueError(f"unknown task {task}")
    event_id = uuid.uuid4()
    payload = {"task": task, "runId": str(run_id), "attempt": attempt}
    # Nothing is read back, so in a pipeline this waits for no round trip of its own.
    conn.execute(
        "INSERT INTO outbox (event_id, run_id, kind, payload) VALUES (%s, %s, %s, %s)",
        (event_id, run_id, DISPATCH, Jsonb(payload)),
    )
    return Dispatch(event_id, payload)


def publish(celery: Celery, payload: dict[str, Any], message_id: str | None = None) -> None:
    """Send one dispatch to its queue: the message carries the run id (and attempt) only."""
    task = payload["task"]
    args: list[Any] = [payload["runId"]]
    if payload.get("attempt") is not None:
        args.append(payload["attempt"])
    celery.send_task(task, args=args, queue=ROUTES[task], task_id=message_id, retry=False)


def flush(celery: Celery, pool: ConnectionPool, dispatches: Sequence[Dispatch]) -> bool:
    """Publish committed dispatches now; on a broker error leave them to the relay.

    Returns True when every one was published. The caller committed them, so their content is
    known: publish first, then mark them sent. A relay sweep racing this may publish one twice,
    which is harmless (every task starts with a compare-and-set). A worker hands on one run at
    a time, so there is nothing to batch: it marks at once (the api batches, see below).
    """
    if not dispatches:
        return True
    try:
        for item in dispatches:
            publish(celery, item.payload, str(item.event_id))
    except (kombu.exceptions.OperationalError, OSError) as exc:
        logger.warning("broker unavailable; the relay will publish: %s", type(exc).__name__)
        return False
    _mark_sent(pool, [item.event_id for item in dispatches])
    return True


def _mark_sent(pool: ConnectionPool, event_ids: list[uuid.UUID]) -> None:
    try:
        # Losing this mark in a database crash costs only a duplicate publish by the relay.
        with db.transaction(pool, flush_wal=False) as conn:
            conn.execute(
                "UPDATE outbox SET sent_at = now() WHERE event_id = ANY(%s) AND sent_at IS NULL",
                (event_ids,),
            )
    except psycopg.Error:
        logger.warning("could not mark dispatches sent; the relay may publish them again")


class _Flusher:
    """One thread per process that publishes what requests committed, in batches.

    Each message goes out as soon as its request committed; the marks that stop the relay from
    publishing it again are collected for up to ``_MARK_EVERY_S`` and written with one
    statement. The relay leaves rows younger than a second alone, so a short delay costs
    nothing, and under load it saves a transaction per request.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self.marks: dict[int, tuple[ConnectionPool, list[uuid.UUID]]] = {}
        threading.Thread(target=self._loop, name="dispatch", daemon=True).start()

    def _loop(self) -> None:
        due: float | None = None
        while True:
            batch = []
            try:
                wait = None if due is None else max(0.0, due - time.monotonic())
                batch.append(self.queue.get(timeout=wait))
                while len(batch) < _MAX_BATCH:
                    batch.append(self.queue.get_nowait())
            except queue.Empty:
                pass
            try:
                self._publish(batch)
                if self.marks and due is None:
                    due = time.monotonic() + _MARK_EVERY_S
                if due is not None and time.monotonic() >= due:
                    due = None
                    self.write_marks()
            except Exception:  # never lose the thread: the relay publishes what is left
                logger.exception("background dispatch failed; the relay will publish")

    def _publish(self, batch: list[_Item]) -> None:
        try:
            for context, celery, pool, dispatches in batch:
                for item in dispatches:
                    # In its request's context: the request id goes into the message header.
                    context.run(publish, celery, item.payload, str(item.event_id))
                    self.marks.setdefault(id(pool), (pool, []))[1].append(item.event_id)
        except (kombu.exceptions.OperationalError, OSError) as exc:
            logger.warning("broker unavailable; the relay will publish: %s", type(exc).__name__)

    def write_marks(self) -> None:
        marks, self.marks = self.marks, {}
        for pool, event_ids in marks.values():
            _mark_sent(pool, event_ids)


# (request context, app, pool, dispatches)
_Item = tuple[contextvars.Context, Celery, ConnectionPool, Sequence[Dispatch]]
_MAX_BATCH = 256
_MARK_EVERY_S = 0.1
_flusher: _Flusher | None = None
_flusher_lock = threading.Lock()


def flush_in_background(
    celery: Celery, pool: ConnectionPool, dispatches: Sequence[Dispatch]
) -> None:
    """Publish committed dispatches from a helper thread, so the caller answers at once.

    For the api: with the broker down a publish waits out the client's connection retries
    (seconds); the run is already safe in the outbox, so the response must not wait for that.
    """
    global _flusher
    with _flusher_lock:
        # One thread per process, created after fork (a thread does not survive a fork).
        if _flusher is None or _flusher.pid != os.getpid():
            _flusher = _Flusher()
        flusher = _flusher
    flusher.queue.put((contextvars.copy_context(), celery, pool, dispatches))
    # Let the helper take the GIL now rather than when this request next blocks: the hop to
    # the provisioner fell from ~7 to ~4 ms.
    time.sleep(0)
