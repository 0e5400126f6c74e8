"""Per-process resources (pool, engine client, Celery app), opened on first use after fork."""

from __future__ import annotations

import logging
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import redis

from shared import logstream
from shared.config import Settings
from shared.db import make_pool
from shared.policy import CachedPolicy, load_policy
from shared.redaction import Redactor
from shared.storage import BlobStore
from shared.storage.factory import open_blob_store

if TYPE_CHECKING:
    import docker
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient
    from celery import Celery
    from psycopg_pool import ConnectionPool

    from shared.backends.aci import AciConfig
    from shared.events_sinks import EventSink

logger = logging.getLogger(__name__)


class Runtime:
    """What a service process needs, created lazily so nothing connects at import or before fork."""

    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        self.settings = settings
        self.celery = celery
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._docker: docker.DockerClient | None = None
        self._aci: ContainerInstanceManagementClient | None = None

    @property
    def pool(self) -> ConnectionPool:
        """Return the Postgres pool, opening it on first use in this process."""
        with self._lock:
            if self._pool is None:
                pool = make_pool(self.settings.database_url, self.settings.db_pool_max)
                pool.open(wait=False)
                self._pool = pool
            return self._pool

    def docker(self) -> docker.DockerClient:
        """Return the Docker client, connecting on first use."""
        from shared.backends import docker as docker_backend

        with self._lock:
            if self._docker is None:
                self._docker = docker_backend.connect(self.settings.docker_url)
            return self._docker

    @cached_property
    def policy(self) -> CachedPolicy:
        """Return the resource policy: the file's (validated when first read) under the
        database's overrides (re-read every ``policy_cache_ttl_s``)."""
        from shared.db import policies as policies_db

        return CachedPolicy(
            load_policy(self.settings.policy_file),
            lambda: cast(Any, policies_db.load_overrides(self.pool)),
            self.settings.policy_cache_ttl_s,
        )

    @cached_property
    def blobs(self) -> BlobStore:
        """Return the blob store the settings name."""
        return open_blob_store(self.settings)

    @cached_property
    def pubsub(self) -> redis.Redis:
        """Return the Redis client for live log lines (the broker's server unless configured)."""
        return logstream.connect(self.settings.pubsub_url or self.settings.broker_url)

    def publish_lines(self, run_id: str, message: str) -> None:
        """Announce a stored batch of a run's log lines to its followers."""
        self.pubsub.publish(logstream.channel(run_id), message)

    def announce_status(self, run_id: str, status: str) -> None:
        """Tell the run's followers and waiters its new (committed) status; best effort."""
        try:
            logstream.announce_status(self.pubsub, run_id, status)
        except Exception:  # they poll Postgres too: a lost announcement only delays them
            logger.debug("could not announce a status", exc_info=True)

    def aci(self) -> ContainerInstanceManagementClient:
        """Return the ARM client for container groups, created on first use (issue 7)."""
        from shared.backends import aci as aci_backend

        with self._lock:
            if self._aci is None:
                self._aci = aci_backend.connect(self.settings)
            return self._aci

    @cached_property
    def aci_config(self) -> AciConfig | None:
        """Return where container groups go, or None when ACI is not configured."""
        from shared.backends.aci import AciConfig

        return AciConfig.from_settings(self.settings)

    @cached_property
    def event_sink(self) -> EventSink:
        """Return where the relay publishes run events (the structured log by default)."""
        from shared.events_sinks import open_event_sink

        return open_event_sink(self.settings)

    def redactor(self, secrets: tuple[str, ...] = ()) -> Redactor:
        """Return a fresh redactor (its counters belong to one run)."""
        return Redactor(secrets=secrets, keep_ip_addresses=self.settings.keep_ip_addresses)

    def reset_after_fork(self) -> None:
        """Forget connections inherited from a parent process."""
        self._lock = threading.Lock()
        self._pool = None
        self._docker = None
        self._aci = None
        self.__dict__.pop("pubsub", None)
        self.__dict__.pop("event_sink", None)

    def close(self) -> None:
        """Close what this process opened."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
