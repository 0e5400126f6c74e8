"""The Docker host pull cache against the real engine, Postgres and a local registry."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from psycopg_pool import ConnectionPool

from shared.backends import image_cache
from shared.db import image_cache as cache_db
from shared.db import runs as runs_db
from shared.states import RunStatus
from tests.builders import stored_run
from tests.security.registry import LocalRegistry, push

pytestmark = pytest.mark.xdist_group("image-cache")


@pytest.fixture
def client() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture
def images(client: docker.DockerClient) -> Iterator[list[str]]:
    """Three small images of the test's own (distinct ids, so each can be evicted alone)."""
    made, tags = [], []
    for i in range(3):
        box = client.containers.create("sandbox-runner/busybox:dev", ["true"])
        tag = f"sandbox-cache-test-{uuid.uuid4().hex[:8]}:v{i}"
        image = box.commit(*tag.split(":"), conf={"Labels": {"n": str(i)}})
        box.remove()
        made.append(image.id)
        tags.append(tag)
    yield made
    for tag in tags:
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass


def test_least_recently_run_images_go_first_and_protected_ones_stay(
    pool: ConnectionPool, client: docker.DockerClient, images: list[str]
) -> None:
    host = f"host-{uuid.uuid4().hex[:6]}"
    for image_id in images:  # oldest use first
        image_cache.record_use(pool, client, host, image_id, image_id)
    size = int(client.images.get(images[0]).attrs["Size"])
    holder = client.containers.create(images[0], ["true"])  # the oldest is in use: keep it
    try:
        report = image_cache.maintain(pool, client, host, budget_bytes=size * 2, prepull=0)
    finally:
        holder.remove()
    assert report is not None
    assert report.evicted == [images[1]], "the least recently run image not in use went"
    assert report.held_bytes <= size * 2
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(images[1])
    client.images.get(images[0])
    with pool.connection() as conn:
        assert {r["image_id"] for r in cache_db.held(conn, host)} == {images[0], images[2]}


def test_an_image_a_live_run_needs_is_never_evicted(
    pool: ConnectionPool, client: docker.DockerClient, images: list[str]
) -> None:
    host = f"host-{uuid.uuid4().hex[:6]}"
    image_cache.record_use(pool, client, host, images[0], images[0])
    with pool.connection() as conn:
        run = stored_run(
            conn,
        )
        runs_db.transition(conn, run.id, RunStatus.PROVISIONING)
        runs_db.transition(conn, run.id, RunStatus.READY, plan={"imageId": images[0]})
    report = image_cache.maintain(pool, client, host, budget_bytes=0, prepull=0)
    assert report is not None and report.evicted == []
    client.images.get(images[0])


def test_one_maintainer_per_host_at_a_time(
    pool: ConnectionPool, client: docker.DockerClient
) -> None:
    host = f"host-{uuid.uuid4().hex[:6]}"
    import zlib

    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(f"image-cache:{host}".encode()),)
        )
        assert image_cache.maintain(pool, client, host, 0, 0) is None


def test_the_most_run_images_are_pre_pulled_by_digest(
    pool: ConnectionPool, client: docker.DockerClient, images: list[str], tmp_path: Path
) -> None:
    registry = LocalRegistry(tmp_path)
    registry.start()
    try:
        ref = f"{registry.host}/cache-test:v1"
        client.images.get(images[2]).tag(ref)
        push(client, ref)
        digest = f"{registry.host}/cache-test@{registry.manifest_digest('cache-test', 'v1')}"
        client.images.remove(ref, force=True)
        with pool.connection() as conn:
            run = stored_run(
                conn,
                adapter_image=ref,
                dry_run=True,
            )
            conn.execute("UPDATE sandbox_run SET image_digest = %s WHERE id = %s", (digest, run.id))
        host = f"host-{uuid.uuid4().hex[:6]}"
        report = image_cache.maintain(pool, client, host, budget_bytes=1 << 40, prepull=3)
        assert report is not None and digest in report.prepulled
        client.images.get(digest)
        with pool.connection() as conn:
            assert [r["ref"] for r in cache_db.held(conn, host)] == [digest]
    finally:
        for image in client.images.list(name=f"{registry.host}/cache-test"):
            client.images.remove(image.id, force=True)
        registry.stop()
