"""A registry, signed and unsigned images, and a fleet that enforces the image policy.

The fleet runs as processes (like tests/faults): its own database, Redis server and fleet
label; it allows only the test's registry and requires signatures made by the test's key.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import psycopg
import pytest

from shared.auth import issue_token
from shared.backends import docker as docker_backend
from shared.config import Settings, load_settings
from shared.db.migrate import ensure_database, migrate
from tests.fleet import SERVICES, Fleet, RedisServer, free_port, start_service, wait_ready
from tests.security.registry import LocalRegistry, build_adapter, new_key, push

REPO = "security/test-adapter"


@dataclass
class Images:
    """References in the test registry, by what the policy should say about them."""

    registry: LocalRegistry
    signed: str
    unsigned: str
    wrong_key: str
    other_digest: str
    moving: str
    digests: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


@dataclass
class SecurityFleet(Fleet):
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    settings: Settings | None = None

    def start(self, name: str) -> None:
        self.procs[name] = start_service(
            name, self.env, self.logs, self.port, 4 if name == "executor" else 2
        )

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass

    def wait_status(self, run_id: str, status: str, timeout: float = 30.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get(f"/api/sandbox/runs/{run_id}").json()["status"] == status:
                return
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} never reached {status}")


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    return docker_backend.connect()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    reg = LocalRegistry(tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def images(
    docker_client: docker.DockerClient, registry: LocalRegistry, key_dir: Path
) -> Iterator[Images]:
    good = new_key(key_dir, "good")
    wrong = new_key(key_dir, "wrong")
    base = f"{registry.host}/{REPO}"
    found = Images(
        registry=registry,
        signed=f"{base}:signed",
        unsigned=f"{base}:unsigned",
        wrong_key=f"{base}:wrong-key",
        other_digest=f"{base}:other-digest",
        moving=f"{base}:moving",
    )
    try:
        for name, ref in (
            ("signed", found.signed),
            ("unsigned", found.unsigned),
            ("wrong-key", found.wrong_key),
            ("other-digest", found.other_digest),
            ("moving", found.moving),
        ):
            found.ids.append(build_adapter(docker_client, ref, variant=name))
            found.tags.append(ref)
            push(docker_client, ref)
            found.digests[name] = registry.manifest_digest(REPO, ref.rsplit(":", 1)[1])
        registry.sign(REPO, found.digests["signed"], good)
        registry.sign(REPO, found.digests["moving"], good)
        registry.sign(REPO, found.digests["wrong-key"], wrong)
        # A genuine signature, but of another image, stored under this image's digest.
        registry.sign(
            REPO, found.digests["other-digest"], good, payload_digest=found.digests["signed"]
        )
        found.good_key = good  # type: ignore[attr-defined]
        yield found
    finally:
        for ref in found.tags + found.ids:
            try:
                docker_client.images.remove(ref, force=True)
            except docker.errors.APIError:
                pass


@pytest.fixture(scope="session")
def security_fleet(
    settings_env: dict[str, str],
    images: Images,
    key_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SecurityFleet]:
    with running_fleet(
        settings_env,
        images,
        key_dir,
        tmp_path_factory.mktemp("security-fleet"),
        "security",
        {
            "SANDBOX_PIDS_LIMIT": "64",
            "SANDBOX_TMPFS_SIZE_MB": "16",
            "SANDBOX_LOG_OVERFLOW": "kill",
        },
    ) as fleet:
        yield fleet


@contextlib.contextmanager
def running_fleet(
    settings_env: dict[str, str],
    images: Images,
    key_dir: Path,
    work: Path,
    name: str,
    extra_env: dict[str, str],
) -> Iterator[SecurityFleet]:
    """Run a fleet with its own database and Redis (``name``) that trusts the test registry.

    Signatures are required (the test key); ``extra_env`` adds or overrides settings. On exit the
    services are killed and the fleet's containers removed.
    """
    database_url = settings_env["SANDBOX_DATABASE_URL"] + f"_{name}"
    ensure_database(database_url)
    migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE sandbox_run_log, outbox, idempotency_key, sandbox_run")
    redis = RedisServer(work / "redis")
    redis.dir.mkdir()
    redis.start()
    logs = work / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        **settings_env,
        "PYTHONUNBUFFERED": "1",
        "SANDBOX_DATABASE_URL": database_url,
        "SANDBOX_BROKER_URL": redis.url,
        "SANDBOX_STATE_DIR": str(work / "state"),
        "SANDBOX_FLEET_NAME": f"{name}-" + database_url.rsplit("/", 1)[1],
        "SANDBOX_IMAGE_REGISTRIES": images.registry.host,
        "SANDBOX_IMAGE_REQUIRE_SIGNATURE": "true",
        "SANDBOX_IMAGE_SIGNING_KEYS": f"file:{key_dir / 'good.pub.pem'}",
        "SANDBOX_HEARTBEAT_INTERVAL_S": "0.5",
        **extra_env,
    }
    settings = load_settings(env)
    port = free_port()
    fleet = SecurityFleet(
        base=f"http://127.0.0.1:{port}",
        token=issue_token(settings),
        logs=logs,
        env=env,
        port=port,
        settings=settings,
    )
    try:
        for service in SERVICES:
            fleet.start(service)
        wait_ready(fleet.base, fleet.procs, logs)
        yield fleet
    finally:
        for service in list(fleet.procs):
            proc = fleet.procs.pop(service)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        redis.stop()
        client = docker_backend.connect()
        for _, _, container in docker_backend.list_sandbox_containers(client, settings.fleet_name):
            docker_backend.remove_labelled(container)
