"""The workers' Celery consumer, sending task events in batches.

Celery buffers task events and then schedules a flush for every one of them, so under load a
worker published each event as a Redis message of its own: about a third of a worker's main
process CPU, and one message for Flower to take apart per event. Flushing at most every
``EVENT_FLUSH_S`` sends what gathered as one ``task-multi`` message, which Flower's receiver
unpacks the same way.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer

EVENT_FLUSH_S = 0.1
NAME = f"{__name__}:Consumer"


class Consumer(CeleryConsumer):  # type: ignore[misc]
    _events_flush_due = False

    def on_send_event_buffered(self) -> None:
        if self.hub and not self._events_flush_due:
            self._events_flush_due = True
            self.hub.call_later(EVENT_FLUSH_S, self._flush_buffered_events)

    def _flush_buffered_events(self) -> None:
        self._events_flush_due = False
        self._flush_events()
