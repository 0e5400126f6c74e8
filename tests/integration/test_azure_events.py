"""The outbox relay publishes run events to Event Hubs or Service Bus, over AMQP.

The sinks get their clients from ``open_event_sink`` exactly as in production: the REAL
``EventHubProducerClient`` and ``ServiceBusClient``/``ServiceBusSender``, built from a
connection string read through a secret reference. The string points them at the AMQP 1.0
SIMULATOR of ``tests/sim/amqp_sim.py`` (plain AMQP on 127.0.0.1, ``UseDevelopmentEmulator``),
which decodes what arrives and can refuse a CBS token, drop the connection or reject transfers.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from azure.eventhub import EventData, EventHubProducerClient
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSender
from psycopg_pool import ConnectionPool

from services.finalizer.housekeeping import relay_outbox
from shared.config import Settings
from shared.db import runs as runs_db
from shared.events_sinks import EventHubSink, LogSink, ServiceBusSink, open_event_sink
from shared.runtime import Runtime
from shared.secrets import SecretError
from shared.states import RunStatus
from tests.builders import PERSONA, TEST_IMAGE, stored_run
from tests.sim.amqp_sim import AmqpSimulator, Received
from tests.sim.fixtures import amqp_sim, amqp_sim_session  # noqa: F401

SCHEMA = json.loads(
    (
        Path(__file__).resolve().parents[2] / "infra/schemas/sandbox.run.state_changed.json"
    ).read_text()
)
HUB, TOPIC = "sandbox-events", "sandbox-run-events"
# No SDK retries: a fault fails the send at once (production keeps the SDK's default 3).
FAST = {"retry_total": 0}


def _runs(pool: ConnectionPool, count: int) -> list[uuid.UUID]:
    """Create runs and move each through three states; the outbox gets their events."""
    ids = []
    with pool.connection() as conn:
        for _ in range(count):
            run = stored_run(
                conn,
                persona_id=uuid.UUID(PERSONA),
                adapter_image=TEST_IMAGE,
                input={"action": "echo"},
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
def hub_settings(
    settings: Settings,
    amqp_sim: AmqpSimulator,  # noqa: F811
    tmp_path: Path,
) -> Settings:
    """Event Hubs through a ``file:`` secret holding the connection string (as mounted)."""
    secret = tmp_path / "eventhub-connection"
    secret.write_text(amqp_sim.connection_string() + "\n")
    return dataclasses.replace(
        settings,
        event_sink="eventhub",
        eventhub_name=HUB,
        eventhub_connection_ref=f"file:{secret}",
    )


@pytest.fixture
def bus_settings(
    settings: Settings,
    amqp_sim: AmqpSimulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """Service Bus through an ``env:`` secret holding the connection string."""
    monkeypatch.setenv("SANDBOX_TEST_SERVICEBUS_CONNECTION", amqp_sim.connection_string())
    return dataclasses.replace(
        settings,
        event_sink="servicebus",
        servicebus_topic=TOPIC,
        servicebus_connection_ref="env:SANDBOX_TEST_SERVICEBUS_CONNECTION",
    )


def _runtime(settings: Settings, **options: Any) -> Iterator[Runtime]:
    rt = Runtime(settings)
    sink = open_event_sink(settings, client_options=options)
    rt.event_sink = sink  # type: ignore[misc]  # the property would open one with defaults
    yield rt
    sink.close()
    rt.close()


@pytest.fixture
def hub_rt(hub_settings: Settings, pool: ConnectionPool) -> Iterator[Runtime]:
    yield from _runtime(hub_settings, **FAST)


@pytest.fixture
def bus_rt(bus_settings: Settings, pool: ConnectionPool) -> Iterator[Runtime]:
    yield from _runtime(bus_settings, **FAST)


def _body(message: Received) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(message.body)
    return body


def test_event_hubs_gets_every_event_batched_per_run_valid_and_redacted(
    hub_rt: Runtime,
    pool: ConnectionPool,
    amqp_sim: AmqpSimulator,  # noqa: F811
) -> None:
    ids = _runs(pool, 3)
    amqp_sim.max_message_size = 1200  # the link's limit sizes the SDK's batches: ~2 events
    assert relay_outbox(hub_rt, older_than_s=0) == len(_outbox(pool))
    rows = _outbox(pool)
    assert rows and all(row["sent_at"] is not None for row in rows)
    events = amqp_sim.received
    assert [e.application_properties["eventId"] for e in events] == [
        str(r["event_id"]) for r in rows
    ]
    assert len(amqp_sim.transfers) > len(ids)  # full batches were split, each a transfer
    assert all(len(batch) <= 2 for batch in amqp_sim.transfers)
    assert {tuple({e.partition_key for e in batch}) for batch in amqp_sim.transfers} == {
        (str(i),) for i in ids
    }  # a batch never mixes runs
    for event in events:
        body = _body(event)
        jsonschema.validate(body, SCHEMA)
        assert event.entity == HUB
        assert event.partition_key == body["runId"] == body["data"]["runId"]
        assert event.prop("content_type") == "application/json"
        assert event.application_properties["type"] == "sandbox.run.state_changed"
        assert "ops@example.com" not in json.dumps(body)
        assert "AKIAIOSFODNN7EXAMPLE" not in json.dumps(body)
    per_run = [_body(e)["data"]["status"] for e in events if e.partition_key == str(ids[0])]
    assert per_run == ["queued", "provisioning", "error"]  # a run's events stay in order
    # The client authenticated with CBS: a SAS token signed with the string's key.
    assert any(audience.endswith(f"/{HUB}") for audience in amqp_sim.tokens)


@pytest.mark.parametrize("fault", ["drop_after", "reject_after"])
def test_events_the_hub_did_not_take_wait_for_the_next_sweep(
    hub_rt: Runtime,
    pool: ConnectionPool,
    amqp_sim: AmqpSimulator,  # noqa: F811
    fault: str,
) -> None:
    _runs(pool, 2)  # two runs: two batches
    setattr(amqp_sim, fault, 1)  # the first transfer is taken, every later one fails
    first = relay_outbox(hub_rt, older_than_s=0)
    rows = _outbox(pool)
    sent_first = [r for r in rows if r["sent_at"] is not None]
    assert 0 < len(sent_first) == first < len(rows)
    assert [e.application_properties["eventId"] for e in amqp_sim.received] == [
        str(r["event_id"]) for r in sent_first
    ]  # exactly the first batch went, and the relay marked exactly those
    setattr(amqp_sim, fault, None)
    relay_outbox(hub_rt, older_than_s=0)
    assert all(r["sent_at"] is not None for r in _outbox(pool))
    event_ids = [e.application_properties["eventId"] for e in amqp_sim.received]
    assert event_ids == [str(r["event_id"]) for r in rows]  # none twice, in order


def test_a_refused_token_sends_nothing_and_the_events_wait(
    hub_rt: Runtime,
    pool: ConnectionPool,
    amqp_sim: AmqpSimulator,  # noqa: F811
) -> None:
    _runs(pool, 1)
    amqp_sim.refuse_tokens = 100
    assert relay_outbox(hub_rt, older_than_s=0) == 0
    assert not amqp_sim.received and all(r["sent_at"] is None for r in _outbox(pool))
    amqp_sim.refuse_tokens = 0
    assert relay_outbox(hub_rt, older_than_s=0) == len(_outbox(pool)) == 3


def test_a_wrong_key_in_the_connection_string_is_refused_by_cbs(
    hub_settings: Settings,
    pool: ConnectionPool,
    amqp_sim: AmqpSimulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    secret = tmp_path / "wrong"
    secret.write_text(amqp_sim.connection_string(key="d3Jvbmcta2V5"))
    settings = dataclasses.replace(hub_settings, eventhub_connection_ref=f"file:{secret}")
    _runs(pool, 1)
    for rt in _runtime(settings, **FAST):
        assert relay_outbox(rt, older_than_s=0) == 0
    assert not amqp_sim.received and not amqp_sim.tokens


def test_a_transient_rejection_is_retried_by_the_sdk(
    hub_settings: Settings,
    pool: ConnectionPool,
    amqp_sim: AmqpSimulator,  # noqa: F811
) -> None:
    _runs(pool, 1)
    amqp_sim.reject_next = 1  # server busy once
    for rt in _runtime(hub_settings):  # the SDK's default retries, as in production
        assert relay_outbox(rt, older_than_s=0) == 3
    assert len(amqp_sim.received) == 3


def test_service_bus_topic_gets_messages_keyed_by_event_id(
    bus_rt: Runtime,
    pool: ConnectionPool,
    amqp_sim: AmqpSimulator,  # noqa: F811
) -> None:
    _runs(pool, 2)
    amqp_sim.max_message_size = 1500
    relay_outbox(bus_rt, older_than_s=0)
    rows = _outbox(pool)
    messages = amqp_sim.received
    assert [m.prop("message_id") for m in messages] == [str(r["event_id"]) for r in rows]
    assert len(amqp_sim.transfers) > 1  # batches, split by the link's size
    for message in messages:
        body = _body(message)
        jsonschema.validate(body, SCHEMA)
        assert message.entity == TOPIC
        assert message.prop("subject") == "sandbox.run.state_changed"
        assert message.prop("content_type") == "application/json"
        assert message.application_properties == {
            "runId": body["runId"],
            "type": "sandbox.run.state_changed",
        }
    assert any(audience.endswith(f"/{TOPIC}") for audience in amqp_sim.tokens)


def test_messages_the_topic_did_not_take_wait_for_the_next_sweep(
    bus_rt: Runtime,
    pool: ConnectionPool,
    amqp_sim: AmqpSimulator,  # noqa: F811
) -> None:
    _runs(pool, 2)
    amqp_sim.max_message_size = 1500
    amqp_sim.drop_after = 1
    first = relay_outbox(bus_rt, older_than_s=0)
    rows = _outbox(pool)
    assert 0 < first < len(rows)
    assert [m.prop("message_id") for m in amqp_sim.received] == [
        str(r["event_id"]) for r in rows[:first]
    ]
    amqp_sim.drop_after = None
    relay_outbox(bus_rt, older_than_s=0)
    assert [m.prop("message_id") for m in amqp_sim.received] == [str(r["event_id"]) for r in rows]


def test_the_sink_is_chosen_by_settings(
    settings: Settings,
    hub_settings: Settings,
    bus_settings: Settings,
    amqp_sim: AmqpSimulator,  # noqa: F811
) -> None:
    assert isinstance(open_event_sink(settings), LogSink)
    hub = open_event_sink(hub_settings)
    assert isinstance(hub, EventHubSink) and isinstance(hub.producer, EventHubProducerClient)
    # The real client's $management request (the hub's partitions) over the wire.
    assert hub.producer.get_partition_ids() == ["0", "1"]
    assert amqp_sim.management[-1]["name"] == HUB
    hub.close()
    bus = open_event_sink(bus_settings)
    assert isinstance(bus, ServiceBusSink) and isinstance(bus.sender, ServiceBusSender)
    bus.close()
    with pytest.raises(ValueError, match="SANDBOX_EVENTHUB_NAMESPACE"):
        open_event_sink(dataclasses.replace(hub_settings, eventhub_connection_ref=None))
    with pytest.raises(SecretError):
        open_event_sink(dataclasses.replace(hub_settings, eventhub_connection_ref="env:NOPE_X"))


def test_the_simulator_takes_single_and_multi_frame_messages_from_the_real_clients(
    amqp_sim: AmqpSimulator,  # noqa: F811
) -> None:
    big = b"y" * 40_000  # more than the simulator's 16 KB frames: sent in several transfers
    with EventHubProducerClient.from_connection_string(
        amqp_sim.connection_string(), eventhub_name=HUB, retry_total=0
    ) as producer:
        producer.send_event(EventData(big), partition_id="1")
    with (
        ServiceBusClient.from_connection_string(
            amqp_sim.connection_string(), retry_total=0
        ) as client,
        client.get_queue_sender("work") as sender,
    ):
        sender.send_messages(ServiceBusMessage(b"single", message_id="m-1", subject="s"))
    hub, queue = amqp_sim.received
    assert (hub.entity, hub.body) == (f"{HUB}/Partitions/1", big)
    assert (queue.entity, queue.body, queue.prop("message_id"), queue.prop("subject")) == (
        "work",
        b"single",
        "m-1",
        "s",
    )
