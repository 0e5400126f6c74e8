"""Live log lines between the executor and the api's followers: a Redis pub/sub channel per run.

Redis rather than Postgres LISTEN/NOTIFY: each follower holds a subscription for minutes, and a
Redis connection costs a few kilobytes where a Postgres backend costs megabytes and a slot from a
small max_connections; NOTIFY payloads are also capped at 8000 bytes, less than one batch. The
channel only speeds followers up: they read history from Postgres and poll it when no message
comes, so a lost message delays a line but never loses it.
"""

from __future__ import annotations

import json

import redis


def channel(run_id: str) -> str:
    """Return the pub/sub channel of a run's live lines."""
    return f"sandbox:logs:{run_id}"


def connect(url: str) -> redis.Redis:
    """Return a Redis client for pub/sub (it connects on first use)."""
    return redis.Redis.from_url(
        url, socket_timeout=10, socket_connect_timeout=3, health_check_interval=25
    )


def announce_status(client: redis.Redis, run_id: str, status: str) -> None:
    """Tell a run's followers and waiters it reached ``status`` (already committed).

    They re-read Postgres on it; a lost announcement only delays them until their next poll.
    """
    client.publish(channel(run_id), json.dumps({"lines": [], "status": status}))


def is_status(message: dict[str, object] | None) -> bool:
    """Tell whether a pub/sub message announces a status (a cheap test: no JSON parsing)."""
    if not message or message.get("type") != "message":
        return False
    data = message.get("data")
    return isinstance(data, bytes) and data.startswith(b'{"lines": [], "status"')
