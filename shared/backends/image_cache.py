"""The pull cache of a Docker executor host: bounded in bytes, least recently run evicted first,
the images run most often pre-pulled.

Only images this host ran are managed (the ``image_cache`` table), never the engine's others.
An image that a container on the host uses, or that a live run was planned with, is never
evicted: the run's digest was recorded at provisioning, so an evicted image comes back by digest,
never by a tag that may have moved.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, cast

import docker
import docker.errors
import requests.exceptions
from psycopg_pool import ConnectionPool

from shared.db import image_cache as cache_db

logger = logging.getLogger(__name__)


@dataclass
class CacheReport:
    """What one maintenance pass did."""

    held_bytes: int = 0
    evicted: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    prepulled: list[str] = field(default_factory=list)


def record_use(
    pool: ConnectionPool,
    client: docker.DockerClient,
    host: str,
    image_id: str,
    ref: str,
    uses: int = 1,
    size: int | None = None,
) -> None:
    """Note that this host just ran ``image_id`` ``uses`` times (and how big it is)."""
    if size is None:
        size = image_size(client, image_id)
        if size is None:
            return
    with pool.connection() as conn:
        cache_db.touch(conn, host, image_id, ref, size, uses)


def image_size(client: docker.DockerClient, image_id: str) -> int | None:
    """Return the image's size on the engine, or None when it cannot be read."""
    try:
        return int(client.images.get(image_id).attrs.get("Size") or 0)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return None


class UseLog:
    """A host's image uses, counted in memory and written at most every ``interval_s``.

    An image inspect and a database write after every run cost the executor more than the rest
    of its bookkeeping; eviction can live with use times up to ``interval_s`` old, because the
    images of live runs and of existing containers are protected from it anyway.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[str, int]] = {}
        self._sizes: dict[str, int] = {}
        self._last = float("-inf")

    def record(
        self, pool: ConnectionPool, client: docker.DockerClient, host: str, image_id: str, ref: str
    ) -> None:
        """Count one use; write the counts if the last write is ``interval_s`` old."""
        with self._lock:
            uses = self._pending.get(image_id, (ref, 0))[1]
            self._pending[image_id] = (ref, uses + 1)
            if time.monotonic() - self._last < self.interval_s:
                return
            self._last = time.monotonic()
            pending, self._pending = self._pending, {}
        for pending_id, (pending_ref, count) in pending.items():
            size = self._sizes.get(pending_id)
            if size is None:
                size = image_size(client, pending_id)
                if size is None:
                    continue
                self._sizes[pending_id] = size
            try:
                record_use(pool, client, host, pending_id, pending_ref, count, size)
            except Exception:  # bookkeeping only: the run already succeeded
                logger.warning("could not record image use", exc_info=True)


def maintain(
    pool: ConnectionPool, client: docker.DockerClient, host: str, budget_bytes: int, prepull: int
) -> CacheReport | None:
    """Evict past the budget and pre-pull the most run images; None if another process is at it.

    One process per host does this at a time (a Postgres advisory lock keyed by the host).
    """
    report = CacheReport()
    with pool.connection() as conn:
        lock = zlib.crc32(f"image-cache:{host}".encode())
        got = cast(
            dict[str, Any] | None,
            conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (lock,)).fetchone(),
        )
        if not got or not got["ok"]:
            return None
        held = cache_db.held(conn, host)
        in_use = _in_use(client)
        if in_use is None:
            logger.warning("cannot list the engine's containers; no eviction this pass")
            return report
        protected = cache_db.needed_by_live_runs(conn) | in_use
        report.held_bytes = sum(int(row["size_bytes"]) for row in held)
        for row in held:
            if report.held_bytes <= budget_bytes:
                break
            if row["image_id"] in protected:
                continue
            if _remove(client, row["image_id"]):
                report.evicted.append(str(row["ref"]))
                report.freed_bytes += int(row["size_bytes"])
                report.held_bytes -= int(row["size_bytes"])
            cache_db.forget(conn, host, row["image_id"])
        wanted = cache_db.most_run(conn, prepull) if prepull else []
    for digest in wanted:
        if report.held_bytes >= budget_bytes:
            break
        if _present(client, digest):
            continue
        try:
            image = client.images.pull(digest)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            logger.info("pre-pull of %s failed; it will be pulled when a run needs it", digest)
            continue
        report.prepulled.append(digest)
        report.held_bytes += int(image.attrs.get("Size") or 0)
        with pool.connection() as conn:
            cache_db.touch(conn, host, image.id, digest, int(image.attrs.get("Size") or 0))
    if report.evicted or report.prepulled:
        logger.info(
            "image cache: evicted %d (%d bytes), pre-pulled %d, holding %d bytes",
            len(report.evicted),
            report.freed_bytes,
            len(report.prepulled),
            report.held_bytes,
        )
    return report


def _in_use(client: docker.DockerClient) -> set[str] | None:
    """Return the image ids of the engine's containers, or None when they cannot be listed.

    Sparse: the full listing inspects each container, and one removed meanwhile failed it; the
    empty answer given then left every image unprotected.
    """
    try:
        return {c.attrs.get("ImageID", "") for c in client.containers.list(all=True, sparse=True)}
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return None


def _present(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return True  # cannot tell: do not pull blindly


def _remove(client: docker.DockerClient, image_id: str) -> bool:
    try:
        client.images.remove(image_id, force=False, noprune=False)
        return True
    except docker.errors.ImageNotFound:
        return True
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        # Still referenced by another tag or a stopped container: keep it, try again later.
        logger.info("could not evict %s: %s", image_id, type(exc).__name__)
        return False


class Maintainer:
    """Run ``maintain`` at most once per interval from a busy process (after runs)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last = 0.0
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Tell whether a pass is due now (and claim it)."""
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval_s:
                return False
            self._last = now
            return True

    def run(self, fn: Any) -> None:
        """Run one pass if due; a failing pass never fails the run that triggered it."""
        if not self.due():
            return
        try:
            fn()
        except Exception:
            logger.warning("image cache maintenance failed", exc_info=True)
