"""The outbox relay and the broker transport against real Postgres and Redis."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from psycopg_pool import ConnectionPool

from services.finalizer.housekeeping import relay_outbox
from shared import dispatch
from shared.celery_app import make_celery
from shared.config import Settings
from shared.db import outbox
from shared.queues import ROUTES, TaskNames
from shared.runtime import Runtime
from tests.builders import stored_run


@pytest.fixture
def rt(settings: Settings, pool: ConnectionPool) -> Iterator[Runtime]:
    runtime = Runtime(settings, make_celery("test-relay", settings))
    broker = redis.Redis.from_url(settings.broker_url)
    broker.delete(ROUTES[TaskNames.PROVISION])
    yield runtime
    broker.delete(ROUTES[TaskNames.PROVISION])
    runtime.close()


def _submit(pool: ConnectionPool) -> uuid.UUID:
    """A run as the api writes it, whose dispatch the broker never got."""
    with pool.connection() as conn:
        run = stored_run(
            conn,
            method_id="test.relay",
            dry_run=True,
        )
        dispatch.enqueue(conn, TaskNames.PROVISION, run.id)
    return run.id


def test_one_sweep_drains_a_backlog_larger_than_a_batch(
    rt: Runtime, pool: ConnectionPool, settings: Settings
) -> None:
    runs = [_submit(pool) for _ in range(7)]  # 14 rows: an event and a dispatch per run
    assert relay_outbox(rt, limit=3, older_than_s=0) == 14
    with pool.connection() as conn:
        rows = [row for run in runs for row in outbox.events_for_run(conn, run)]
    assert len(rows) == 14 and all(row["sent_at"] is not None for row in rows)
    # The dispatches behind the events reached the provisioner's queue, each once.
    queued = redis.Redis.from_url(settings.broker_url).lrange(ROUTES[TaskNames.PROVISION], 0, -1)
    run_ids = sorted(json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in queued)
    assert run_ids == sorted(str(r) for r in runs)


def test_the_fleet_publishes_through_one_client_per_channel(settings: Settings) -> None:
    app = make_celery("test-transport", settings)
    broker = redis.Redis.from_url(settings.broker_url)
    queue = ROUTES[TaskNames.PROVISION]
    broker.delete(queue)
    try:
        with app.connection_for_write() as conn:
            assert type(conn.transport).__module__ == "shared.redis_transport"
        payload = {"task": TaskNames.PROVISION, "runId": str(uuid.uuid4()), "attempt": None}
        for _ in range(3):
            dispatch.publish(app, payload, str(uuid.uuid4()))
        assert broker.llen(queue) == 3
        with app.producer_or_acquire() as producer:
            channel = producer.channel
            with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
                assert first is second
    finally:
        broker.delete(queue)
