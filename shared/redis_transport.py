"""Kombu's Redis transport, with one reusable client per channel.

Kombu's channel builds a new ``redis.Redis`` for every publish, ack and event outside its
event loop (``conn_or_acquire``). Building one copies redis-py's table of response callbacks,
about 60 µs of CPU, and a run passes through that path a dozen times across the fleet (its
task message, acks, and the task events Flower reads). A client only borrows a connection
from the channel's pool per command and is safe to share, so one per channel does the same
work. Everything else is kombu's own transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    _shared_client: tuple[Any, Any] | None = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        shared = self._shared_client
        # The pool is rebuilt after a disconnect: a client of the old pool must not survive it.
        if shared is None or shared[0] is not pool:
            shared = self._shared_client = (pool, self._create_client())
        yield shared[1]


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


NAME = f"{__name__}:Transport"
