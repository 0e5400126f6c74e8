"""Container hardening, read back from the engine (docker inspect) and from inside."""

from __future__ import annotations

import json
import uuid

import docker
import pytest

from shared.backends import docker as docker_backend
from shared.policy import Resources
from tests.security.conftest import Images

pytestmark = pytest.mark.xdist_group("security")

FLEET = "test-security-hardening"


def test_every_hardening_flag_is_on(docker_client: docker.DockerClient, images: Images) -> None:
    image_id = docker_backend.resolve_image(docker_client, images.signed).image_id
    spec = docker_backend.ContainerSpec(
        run_id=str(uuid.uuid4()),
        attempt=1,
        method_id="test.run",
        image_id=image_id,
        input_json=json.dumps({"action": "probe"}).encode(),
        resources=Resources(0.5, 128, 20),
        pids_limit=64,
        tmpfs_size_mb=16,
        fleet=FLEET,
        nofile_limit=512,
    )
    lines: list[str] = []
    started = docker_backend.start(docker_client, spec)
    try:
        attrs = docker_client.api.inspect_container(started.container.id)
        outcome = docker_backend.follow(
            docker_client,
            started.container,
            20,
            lambda _s, raws: lines.extend(r.decode() for r in raws),
            output=started.output,
        )
    finally:
        docker_backend.remove(docker_client, spec.run_id, spec.attempt)
    host, config = attrs["HostConfig"], attrs["Config"]
    assert config["User"] == "65534:65534"
    assert host["ReadonlyRootfs"] is True
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert not any("unconfined" in opt for opt in host["SecurityOpt"])
    assert host["PidsLimit"] == 64
    assert host["Memory"] == host["MemorySwap"] == 128 * 1024 * 1024
    assert host["NetworkMode"] == "none"
    assert host["IpcMode"] == "private"
    assert {(u["Name"], u["Soft"], u["Hard"]) for u in host["Ulimits"]} == {("nofile", 512, 512)}
    assert set(host["Tmpfs"]) == {"/tmp", "/sandbox/out"}
    for options in host["Tmpfs"].values():
        assert "size=16m" in options and "noexec" in options and "nosuid" in options
    # The only mount from the host is the read-only input; no Docker socket, no host paths.
    assert not host.get("Binds")
    mounts = attrs["Mounts"]
    assert [(m["Type"], m["Destination"], m["RW"]) for m in mounts] == [
        ("bind", docker_backend.INPUT_DIR, False)
    ]
    assert not any("docker.sock" in (m.get("Source") or "") for m in mounts)
    # Inside: the same, as the kernel sees it.
    assert outcome.exit_code == 0
    evaluation = json.loads(
        next(
            line for line in reversed(lines) if line.startswith("::sandbox-evaluation::")
        ).removeprefix("::sandbox-evaluation::")
    )
    assert evaluation["uid"] == evaluation["euid"] == 65534
    assert evaluation["status"]["CapEff"] == "0000000000000000"
    assert evaluation["status"]["NoNewPrivs"] == "1"
    assert evaluation["status"]["Seccomp"] == "2"
    assert evaluation["nofile"] == [512, 512]
    assert evaluation["outWritable"] is True and evaluation["tmpWritable"] is True
    assert evaluation["interfaces"] == []
