"""Where the outbox relay publishes run events: the structured log, Event Hubs or Service Bus.

Every sink gets the relay's event rows in outbox order and returns how many of them, from the
first, it delivered; the relay marks only those sent, so the rest wait for the next sweep.
Delivery is at least once: the envelope's ``id`` (the outbox event id) is also the Event Hubs
``eventId`` property and the Service Bus ``message_id``, for consumers (and Service Bus
duplicate detection) to drop repeats. The envelope is documented in
``infra/schemas/sandbox.run.state_changed.json``; its ``data`` was redacted when written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared.config import Settings

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"


class EventSink(Protocol):
    """Publishes outbox event rows; returns how many leading rows were delivered."""

    def publish(self, rows: Sequence[dict[str, Any]]) -> int: ...

    def close(self) -> None: ...


def envelope(row: dict[str, Any]) -> dict[str, Any]:
    """Return the published form of an outbox event row (see the JSON schema)."""
    created = row.get("created_at")
    return {
        "id": str(row["event_id"]),
        "type": row["kind"],
        "schemaVersion": SCHEMA_VERSION,
        "time": created.isoformat() if created is not None else None,
        "runId": str(row["run_id"]),
        "data": row["payload"],
    }


def _body(row: dict[str, Any]) -> bytes:
    return json.dumps(envelope(row), separators=(",", ":"), default=str).encode()


class LogSink:
    """The default: one structured log line per event (what the relay always did)."""

    def publish(self, rows: Sequence[dict[str, Any]]) -> int:
        for row in rows:
            logger.info(
                "event %s",
                row["kind"],
                extra={
                    "eventId": str(row["event_id"]),
                    "runId": str(row["run_id"]),
                    "event": row["payload"],
                },
            )
        return len(rows)

    def close(self) -> None:
        pass


class EventHubSink:
    """Azure Event Hubs: batches per run (partition key = run id keeps a run's events ordered)."""

    def __init__(self, producer: Any) -> None:
        # An azure.eventhub.EventHubProducerClient.
        self.producer = producer

    def publish(self, rows: Sequence[dict[str, Any]]) -> int:
        from azure.eventhub import EventData

        sent = 0
        batch, batch_rows, key = None, 0, None
        try:
            for row in rows:
                run_key = str(row["run_id"])
                if batch is not None and run_key != key:
                    self.producer.send_batch(batch)
                    sent += batch_rows
                    batch, batch_rows = None, 0
                if batch is None:
                    batch, key = self.producer.create_batch(partition_key=run_key), run_key
                event = EventData(_body(row))
                event.content_type = "application/json"
                event.properties = {"eventId": str(row["event_id"]), "type": row["kind"]}
                try:
                    batch.add(event)
                except ValueError:  # the batch is full: send it, start another
                    if batch_rows == 0:
                        raise  # one event larger than a batch can never be sent
                    self.producer.send_batch(batch)
                    sent += batch_rows
                    batch, batch_rows = self.producer.create_batch(partition_key=run_key), 0
                    batch.add(event)
                batch_rows += 1
            if batch is not None and batch_rows:
                self.producer.send_batch(batch)
                sent += batch_rows
        except Exception:
            logger.warning("Event Hubs publish failed after %d events; the rest wait", sent)
        return sent

    def close(self) -> None:
        self.producer.close()


class ServiceBusSink:
    """An Azure Service Bus topic: message_id = event id (duplicate detection), batched."""

    def __init__(self, sender: Any, client: Any = None) -> None:
        # An azure.servicebus.ServiceBusSender, and the ServiceBusClient that opened it (its
        # connection is closed with the sink).
        self.sender, self.client = sender, client

    def publish(self, rows: Sequence[dict[str, Any]]) -> int:
        from azure.servicebus import ServiceBusMessage
        from azure.servicebus.exceptions import MessageSizeExceededError

        sent = 0
        try:
            batch, batch_rows = self.sender.create_message_batch(), 0
            for row in rows:
                message = ServiceBusMessage(
                    _body(row),
                    message_id=str(row["event_id"]),
                    content_type="application/json",
                    subject=row["kind"],
                    # Sessions keyed by run would keep a run's events in order for consumers.
                    application_properties={"runId": str(row["run_id"]), "type": row["kind"]},
                )
                try:
                    batch.add_message(message)
                except MessageSizeExceededError:
                    if batch_rows == 0:
                        raise
                    self.sender.send_messages(batch)
                    sent += batch_rows
                    batch, batch_rows = self.sender.create_message_batch(), 0
                    batch.add_message(message)
                batch_rows += 1
            if batch_rows:
                self.sender.send_messages(batch)
                sent += batch_rows
        except Exception:
            logger.warning("Service Bus publish failed after %d events; the rest wait", sent)
        return sent

    def close(self) -> None:
        self.sender.close()
        if self.client is not None:
            self.client.close()


def open_event_sink(
    settings: Settings, *, client_options: Mapping[str, Any] | None = None
) -> EventSink:
    """Return the sink ``SANDBOX_EVENT_SINK`` names, with its SDK client (nothing connects yet).

    Event Hubs and Service Bus authenticate with the managed identity (DefaultAzureCredential,
    see ``shared.backends.aci.credential``) unless a connection string is configured: then
    ``SANDBOX_EVENTHUB_CONNECTION_REF`` / ``SANDBOX_SERVICEBUS_CONNECTION_REF`` name the secret
    that holds it (``env:``, ``file:`` or ``kv:``, resolved by ``shared.secrets``). That is how
    SAS-key namespaces, Microsoft's emulators (``UseDevelopmentEmulator=true``) and the tests'
    AMQP simulator are reached. ``client_options`` are passed to the SDK client (retries).
    Raises ValueError when the settings are incomplete, SecretError when the secret is not.
    """
    options = dict(client_options or {})
    if settings.event_sink == "eventhub":
        from azure.eventhub import EventHubProducerClient

        if settings.eventhub_connection_ref:
            producer = EventHubProducerClient.from_connection_string(
                _connection_string(settings, settings.eventhub_connection_ref),
                eventhub_name=settings.eventhub_name,  # None: the string's EntityPath
                **options,
            )
        else:
            if not settings.eventhub_namespace or not settings.eventhub_name:
                raise ValueError(
                    "SANDBOX_EVENTHUB_NAMESPACE and SANDBOX_EVENTHUB_NAME are needed "
                    "(or SANDBOX_EVENTHUB_CONNECTION_REF)"
                )
            producer = EventHubProducerClient(
                settings.eventhub_namespace,
                settings.eventhub_name,
                _credential(settings),
                **options,
            )
        return EventHubSink(producer)
    if settings.event_sink == "servicebus":
        from azure.servicebus import ServiceBusClient

        if not settings.servicebus_topic:
            raise ValueError("SANDBOX_SERVICEBUS_TOPIC is needed")
        if settings.servicebus_connection_ref:
            client = ServiceBusClient.from_connection_string(
                _connection_string(settings, settings.servicebus_connection_ref), **options
            )
        else:
            if not settings.servicebus_namespace:
                raise ValueError(
                    "SANDBOX_SERVICEBUS_NAMESPACE is needed (or SANDBOX_SERVICEBUS_CONNECTION_REF)"
                )
            client = ServiceBusClient(
                settings.servicebus_namespace, _credential(settings), **options
            )
        return ServiceBusSink(client.get_topic_sender(settings.servicebus_topic), client)
    return LogSink()


def _credential(settings: Settings) -> Any:
    from shared.backends.aci import credential

    return credential(settings)


def _connection_string(settings: Settings, ref: str) -> str:
    """Read a connection string from its secret reference (never a setting's value)."""
    from shared.secrets import provider_for

    return provider_for(settings).get(ref)
