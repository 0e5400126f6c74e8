"""The outbox relay publishes run events to Event Hubs or Service Bus (simulated clients)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from psycopg_pool import ConnectionPool

from services.finalizer.housekeeping import relay_outbox
from shared.config import Settings
from shared.db import runs as runs_db
from shared.events_sinks import EventHubSink, ServiceBusSink, open_event_sink
from shared.runtime import Runtime
from shared.states import RunStatus
from tests.builders import PERSONA, TEST_IMAGE
from tests.sim.messaging import SimulatedEventHubProducer, SimulatedServiceBusSender

SCHEMA = json.loads(
    (
        Path(__file__).resolve().parents[2] / "infra/schemas/sandbox.run.state_changed.json"
    ).read_text()
)


def _runs(pool: ConnectionPool, count: int) -> list[uuid.UUID]:
    """Create runs and move each through three states; the outbox gets their events."""
    ids = []
    with pool.connection() as conn:
        for _ in range(count):
            run = runs_db.create_run(
                conn,
                persona_id=uuid.UUID(PERSONA),
                method_id="test.run",
                adapter_image=TEST_IMAGE,
                input={"action": "echo"},
                dry_run=False,
            )
            runs_db.transition(conn, run.id, RunStatus.PROVISIONING)
            runs_db.transition(
                conn,
                run.id,
                RunStatus.ERROR,
                reason="backend_error: mail ops@example.com, key AKIAIOSFODNN7EXAMPLE",
            )
            ids.append(run.id)
    return ids


def _outbox(pool: ConnectionPool) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT event_id, run_id, sent_at FROM outbox WHERE kind <> 'sandbox.dispatch' "
            "ORDER BY id"
        ).fetchall()


@pytest.fixture
def rt(settings: Settings, pool: ConnectionPool) -> Runtime:
    return Runtime(settings)


def test_event_hubs_gets_every_event_batched_per_run_valid_and_redacted(
    rt: Runtime, pool: ConnectionPool
) -> None:
    ids = _runs(pool, 3)
    producer = SimulatedEventHubProducer(max_batch_bytes=1200)  # about two events a batch
    rt.event_sink = EventHubSink(producer)  # type: ignore[misc]
    relay_outbox(rt, older_than_s=0)
    rows = _outbox(pool)
    assert rows and all(row["sent_at"] is not None for row in rows)
    events = producer.events()
    assert [_prop(e, "eventId") for _, e in events] == [str(r["event_id"]) for r in rows]
    assert len(producer.sent) > len(ids)  # full batches were split
    for key, event in events:
        body = json.loads(b"".join(event.body))
        jsonschema.validate(body, SCHEMA)
        assert key == body["runId"] == body["data"]["runId"]
        assert "ops@example.com" not in json.dumps(body)
        assert "AKIAIOSFODNN7EXAMPLE" not in json.dumps(body)
    per_run = [
        json.loads(b"".join(e.body))["data"]["status"] for k, e in events if k == str(ids[0])
    ]
    assert per_run == ["queued", "provisioning", "error"]  # a run's events stay in order


def test_events_the_hub_did_not_take_wait_for_the_next_sweep(
    rt: Runtime, pool: ConnectionPool
) -> None:
    _runs(pool, 2)
    producer = SimulatedEventHubProducer(fail_after=1)
    rt.event_sink = EventHubSink(producer)  # type: ignore[misc]
    first = relay_outbox(rt, older_than_s=0)
    rows = _outbox(pool)
    sent_first = [r for r in rows if r["sent_at"] is not None]
    assert 0 < len(sent_first) == first < len(rows)
    producer.fail_after = None
    relay_outbox(rt, older_than_s=0)
    assert all(r["sent_at"] is not None for r in _outbox(pool))
    event_ids = [_prop(e, "eventId") for _, e in producer.events()]
    assert sorted(event_ids) == sorted(str(r["event_id"]) for r in rows)  # none twice


def test_service_bus_topic_gets_messages_keyed_by_event_id(
    rt: Runtime, pool: ConnectionPool
) -> None:
    _runs(pool, 2)
    sender = SimulatedServiceBusSender(max_batch_bytes=1500)
    rt.event_sink = ServiceBusSink(sender)  # type: ignore[misc]
    relay_outbox(rt, older_than_s=0)
    rows = _outbox(pool)
    messages = sender.messages()
    assert [m.message_id for m in messages] == [str(r["event_id"]) for r in rows]
    for message in messages:
        body = json.loads(b"".join(message.body))
        jsonschema.validate(body, SCHEMA)
        assert message.subject == "sandbox.run.state_changed"
        props = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in message.application_properties.items()
        }
        assert props == {"runId": body["runId"], "type": "sandbox.run.state_changed"}


def test_the_sink_is_chosen_by_settings(settings: Settings) -> None:
    import dataclasses

    assert type(open_event_sink(settings)).__name__ == "LogSink"
    hub = dataclasses.replace(settings, event_sink="eventhub")
    assert isinstance(open_event_sink(hub, producer=SimulatedEventHubProducer()), EventHubSink)
    bus = dataclasses.replace(settings, event_sink="servicebus")
    assert isinstance(open_event_sink(bus, sender=SimulatedServiceBusSender()), ServiceBusSink)


def _prop(event: Any, name: str) -> str:
    value = event.properties.get(name, event.properties.get(name.encode()))
    return value.decode() if isinstance(value, bytes) else str(value)
