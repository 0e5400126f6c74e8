"""Simulators of the Event Hubs producer and the Service Bus sender (their AMQP side).

Event Hubs and Service Bus speak AMQP and have no emulator that runs here (both ship only as
MCR container images), so the boundary is the client object: these stand in for
``EventHubProducerClient`` and ``ServiceBusSender`` and hand out the SDKs' REAL batch types
(``EventDataBatch``, ``ServiceBusMessageBatch``), whose size accounting raises when a batch is
full exactly as in production. ``max_batch_bytes`` makes batches small; ``fail_after`` makes
the N+1th send fail (a dropped connection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ServiceRequestError
from azure.eventhub import EventDataBatch
from azure.servicebus import ServiceBusMessageBatch


@dataclass
class SimulatedEventHubProducer:
    max_batch_bytes: int = 1024 * 1024
    fail_after: int | None = None
    sent: list[EventDataBatch] = field(default_factory=list)
    closed: bool = False

    def create_batch(self, **kwargs: Any) -> EventDataBatch:
        return EventDataBatch(max_size_in_bytes=self.max_batch_bytes, **kwargs)

    def send_batch(self, batch: EventDataBatch) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ServiceRequestError("simulated: connection to the namespace lost")
        self.sent.append(batch)

    def events(self) -> list[tuple[str | None, Any]]:
        """Return (partition key, EventData) for every event sent, in order."""
        out = []
        for batch in self.sent:
            key = batch._partition_key
            out += [
                (key.decode() if isinstance(key, bytes) else key, e) for e in batch._internal_events
            ]
        return out

    def close(self) -> None:
        self.closed = True


@dataclass
class SimulatedServiceBusSender:
    max_batch_bytes: int = 256 * 1024
    fail_after: int | None = None
    sent: list[ServiceBusMessageBatch] = field(default_factory=list)

    def create_message_batch(self, **kwargs: Any) -> ServiceBusMessageBatch:
        return ServiceBusMessageBatch(max_size_in_bytes=self.max_batch_bytes, **kwargs)

    def send_messages(self, batch: ServiceBusMessageBatch) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ServiceRequestError("simulated: connection to the namespace lost")
        self.sent.append(batch)

    def messages(self) -> list[Any]:
        return [m for batch in self.sent for m in batch._messages]

    def close(self) -> None:
        pass
