"""The Docker backend against the real engine: limits, streams, OOM, timeout, missing image."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import docker
import pytest

from shared.backends import docker as docker_backend
from shared.errors import ImageNotFound
from shared.policy import Resources
from tests.builders import TEST_IMAGE

SMALL = Resources(0.5, 128, 20)
# Its own fleet label, so no running fleet's reconciler takes these containers for orphans.
FLEET = "test-docker-backend"


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker_backend.connect()


@pytest.fixture(scope="module")
def image_id(client: docker.DockerClient) -> str:
    return docker_backend.resolve_image(client, TEST_IMAGE).image_id


def run(
    client: docker.DockerClient,
    image_id: str,
    payload: dict[str, Any],
    resources: Resources = SMALL,
) -> tuple[docker_backend.ContainerOutcome, list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    spec = docker_backend.ContainerSpec(
        run_id=str(uuid.uuid4()),
        attempt=1,
        method_id="test.run",
        image_id=image_id,
        input_json=json.dumps(payload).encode(),
        resources=resources,
        pids_limit=64,
        fleet=FLEET,
    )
    outcome = docker_backend.run_container(
        client, spec, lambda stream, raws: lines.extend((stream, r.decode()) for r in raws)
    )
    return outcome, lines


def test_stdout_and_stderr_are_kept_apart_and_the_evaluation_is_printed(
    client: docker.DockerClient, image_id: str
) -> None:
    outcome, lines = run(
        client,
        image_id,
        {"action": "echo", "stdout": ["out-1", "out-2"], "stderr": ["err-1"], "value": 7},
    )
    assert outcome.exit_code == 0 and not outcome.oom_killed and not outcome.timed_out
    stderr = [line for stream, line in lines if stream == "stderr"]
    stdout = [line for stream, line in lines if stream == "stdout"]
    assert "err-1" in stderr and "err-1" not in stdout
    assert [x for x in stdout if x.startswith("out-")] == ["out-1", "out-2"]
    assert not any(x.startswith("out-") for x in stderr)
    assert '::sandbox-evaluation::{"echo":7}' in stdout


def test_limits_are_applied_to_the_container(client: docker.DockerClient, image_id: str) -> None:
    seen: dict[str, Any] = {}
    run_id = str(uuid.uuid4())

    def inspect_while_running() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not seen:
            found = client.containers.list(
                all=True, filters={"label": f"{docker_backend.LABEL_RUN}={run_id}"}
            )
            if found:
                seen.update(found[0].attrs)
            time.sleep(0.1)

    watcher = threading.Thread(target=inspect_while_running)
    watcher.start()
    spec = docker_backend.ContainerSpec(
        run_id=run_id,
        attempt=3,
        method_id="test.run",
        image_id=image_id,
        input_json=b'{"action": "env"}',
        resources=Resources(0.5, 96, 20),
        pids_limit=64,
        fleet=FLEET,
    )
    lines: list[str] = []
    outcome = docker_backend.run_container(
        client, spec, lambda s, raws: lines.extend(r.decode() for r in raws)
    )
    watcher.join()
    host = seen["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 96 * 1024 * 1024
    assert host["MemorySwap"] == 96 * 1024 * 1024
    assert host["PidsLimit"] == 64
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert seen["Config"]["User"] == "65534:65534"
    assert seen["Config"]["Labels"][docker_backend.LABEL_ATTEMPT] == "3"
    marker = [x for x in lines if x.startswith("::sandbox-evaluation::")]
    evaluation = json.loads(marker[-1].removeprefix("::sandbox-evaluation::"))
    assert evaluation["uid"] == 65534
    assert evaluation["readOnlyRoot"] is True
    assert evaluation["interfaces"] == []
    assert evaluation["methodId"] == "test.run" and evaluation["runId"] == run_id
    assert outcome.exit_code == 0
    # The container is gone afterwards.
    assert (
        client.containers.list(all=True, filters={"label": f"{docker_backend.LABEL_RUN}={run_id}"})
        == []
    )


def test_memory_past_the_limit_is_an_oom_kill(client: docker.DockerClient, image_id: str) -> None:
    outcome, lines = run(
        client, image_id, {"action": "oom", "megabytes": 512}, Resources(0.5, 64, 20)
    )
    assert outcome.oom_killed is True
    assert outcome.exit_code == 137
    assert any("allocated" in line for _, line in lines)  # output before the kill is kept


def test_the_wall_limit_kills_the_container(client: docker.DockerClient, image_id: str) -> None:
    outcome, lines = run(
        client, image_id, {"action": "sleep", "seconds": 30}, Resources(0.5, 64, 2)
    )
    assert outcome.timed_out is True
    assert outcome.duration_s < 15
    assert lines, "lines printed before the kill are kept"


def test_a_missing_image_is_reported_with_what_to_do(client: docker.DockerClient) -> None:
    with pytest.raises(ImageNotFound, match="make images"):
        docker_backend.resolve_image(client, "localhost:5000/no-such-adapter:dev")


def test_an_over_long_line_is_cut_not_held(client: docker.DockerClient, image_id: str) -> None:
    lines: list[tuple[str, bytes]] = []
    spec = docker_backend.ContainerSpec(
        run_id=str(uuid.uuid4()),
        attempt=1,
        method_id="test.run",
        image_id=image_id,
        input_json=b'{"action": "spam", "lines": 2, "width": 5000}',
        resources=Resources(0.5, 64, 20),
        fleet=FLEET,
    )
    docker_backend.run_container(
        client, spec, lambda s, raws: lines.extend((s, r) for r in raws), max_line_bytes=2048
    )
    sizes = [len(raw) for s, raw in lines if s == "stdout" and not raw.startswith(b"::")]
    assert max(sizes) == 2048
    assert sum(sizes) == 10000


def test_a_tag_is_looked_up_again_on_every_resolve(
    client: docker.DockerClient, image_id: str
) -> None:
    """Digest references are remembered once resolved; a tag may move between two runs."""
    tag = f"localhost:5000/resolve-probe:{uuid.uuid4().hex[:8]}"
    other = client.images.get("sandbox-runner/egress-proxy:dev")
    client.images.get(image_id).tag(tag)
    try:
        assert docker_backend.resolve_image(client, tag).image_id == image_id
        other.tag(tag)  # the tag moves
        assert docker_backend.resolve_image(client, tag).image_id == other.id
    finally:
        client.images.remove(tag, noprune=True)


def test_a_run_of_a_few_seconds_reports_its_cpu_time_and_memory(
    client: docker.DockerClient, image_id: str
) -> None:
    # The first figures come from a one-shot read once the run outlives the executor's first
    # short wait; a few seconds leave room for a loaded engine (a 1 s run missed them in CI).
    outcome, _ = run(client, image_id, {"action": "sleep", "seconds": 3})
    assert outcome.exit_code == 0
    assert outcome.stats_samples >= 1
    assert outcome.cpu_seconds is not None and outcome.cpu_seconds > 0
    assert outcome.peak_memory_bytes is not None and outcome.peak_memory_bytes > 1024 * 1024
