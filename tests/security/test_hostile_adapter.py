"""A hostile adapter through the real fleet: every escape attempt ends as expected.

Each attack is its own run, from the signed test image in the test's registry; afterwards a
normal run still succeeds and no container of this fleet is left.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from shared.backends import docker as docker_backend
from tests.builders import run_request
from tests.security.conftest import Images, SecurityFleet

pytestmark = pytest.mark.xdist_group("security")

NO_CAPS = "0000000000000000"


def attack(fleet: SecurityFleet, images: Images, **body: Any) -> dict[str, Any]:
    resources = body.pop("resources", None)
    request = run_request(adapterImage=images.signed, input=body)
    if resources:
        request["resources"] = resources
    return fleet.run(request, timeout=60)


def test_a_fork_bomb_hits_the_pids_limit(security_fleet: SecurityFleet, images: Images) -> None:
    run = attack(security_fleet, images, action="fork_bomb", resources={"memoryMb": 512})
    assert run["status"] == "succeeded", run["statusReason"]
    assert run["evaluation"]["forked"] < 64  # SANDBOX_PIDS_LIMIT of this fleet
    assert run["evaluation"]["error"] == "BlockingIOError"


def test_a_memory_bomb_is_oom_killed(security_fleet: SecurityFleet, images: Images) -> None:
    run = attack(security_fleet, images, action="oom", megabytes=1024, resources={"memoryMb": 64})
    assert run["status"] == "failed"
    assert run["statusReason"].startswith("oom")
    assert run["oomKilled"] is True


def test_a_cpu_spin_is_killed_at_the_wall_limit(
    security_fleet: SecurityFleet, images: Images
) -> None:
    run = attack(security_fleet, images, action="cpu_spin", resources={"timeoutS": 2})
    assert run["status"] == "timed_out"
    assert run["statusReason"].startswith("timeout")


def test_filling_tmp_stops_at_the_tmpfs_size(security_fleet: SecurityFleet, images: Images) -> None:
    for path in ("/tmp", "/sandbox/out"):
        run = attack(security_fleet, images, action="fill_tmp", path=path)
        assert run["status"] == "succeeded", run["statusReason"]
        assert run["evaluation"]["error"] == "OSError:28"  # ENOSPC
        assert run["evaluation"]["writtenBytes"] <= 16 * 1024 * 1024  # SANDBOX_TMPFS_SIZE_MB


def test_the_root_filesystem_and_the_input_are_read_only(
    security_fleet: SecurityFleet, images: Images
) -> None:
    run = attack(security_fleet, images, action="write_root")
    assert run["status"] == "succeeded", run["statusReason"]
    results = run["evaluation"]["results"]
    assert results and all(v != "written" for v in results.values()), results


def test_becoming_root_fails(security_fleet: SecurityFleet, images: Images) -> None:
    run = attack(security_fleet, images, action="become_root")
    assert run["status"] == "succeeded", run["statusReason"]
    got = run["evaluation"]
    assert got["uid"] == got["euid"] == 65534
    assert got["attempts"]["setuid"] == got["attempts"]["setgid"] == "PermissionError"
    assert got["attempts"]["chroot"] == "PermissionError"
    # su/sudo: absent, or refused (never uid 0 printed).
    assert "out '0'" not in got["attempts"]["su"] and "out '0'" not in got["attempts"]["sudo"]
    status = got["status"]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[cap] == NO_CAPS, (cap, status)
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # the engine's default seccomp filter


def test_host_files_and_environment_are_not_visible(
    security_fleet: SecurityFleet, images: Images
) -> None:
    run = attack(security_fleet, images, action="read_host")
    assert run["status"] == "succeeded", run["statusReason"]
    results = run["evaluation"]["results"]
    assert results["/etc/shadow"] == "PermissionError"  # the image's own, root-only
    assert results["/host/etc/shadow"] == "FileNotFoundError"
    assert results["/proc/kcore"] != "read"
    # PID 1 is the adapter itself: it sees its own environment, none of the fleet's.
    names = set(results["environNames"].split(","))
    assert "SANDBOX_RUN_ID" in names
    assert not {"SANDBOX_DATABASE_URL", "SANDBOX_BROKER_URL", "SANDBOX_STATE_DIR"} & names


def test_the_docker_socket_is_not_reachable(security_fleet: SecurityFleet, images: Images) -> None:
    run = attack(security_fleet, images, action="docker_socket")
    assert run["status"] == "succeeded", run["statusReason"]
    assert all(v == "FileNotFoundError" for v in run["evaluation"]["results"].values())


def test_a_host_listener_on_loopback_is_not_reachable(
    security_fleet: SecurityFleet, images: Images
) -> None:
    accepted: list[bytes] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        server.settimeout(0.2)
        port = server.getsockname()[1]
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                with conn:
                    accepted.append(conn.recv(64))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            run = attack(security_fleet, images, action="connect", port=port)
        finally:
            stop.set()
            thread.join(timeout=5)
    assert run["status"] == "succeeded", run["statusReason"]
    assert run["evaluation"]["connected"] is False
    assert accepted == []


def test_dns_exfiltration_fails(security_fleet: SecurityFleet, images: Images) -> None:
    run = attack(security_fleet, images, action="dns")
    assert run["status"] == "succeeded", run["statusReason"]
    got = run["evaluation"]
    assert got["attempted"] is True  # no interface but lo
    assert all(v == "gaierror" for v in got["results"].values()), got


def test_printing_without_end_is_capped(security_fleet: SecurityFleet, images: Images) -> None:
    run = attack(security_fleet, images, action="print_forever", resources={"logCapMb": 1})
    assert run["status"] == "failed"
    assert run["statusReason"].startswith("output_limit")


def test_the_fleet_stays_healthy_and_leaves_no_container(
    security_fleet: SecurityFleet, images: Images
) -> None:
    run = attack(security_fleet, images, action="echo", stdout=["still fine"], value=7)
    assert run["status"] == "succeeded", run["statusReason"]
    assert run["evaluation"] == {"echo": 7}
    assert security_fleet.get("/readyz").status_code == 200
    client = docker_backend.connect()
    assert security_fleet.settings is not None
    deadline = time.monotonic() + 20
    while docker_backend.list_sandbox_containers(client, security_fleet.settings.fleet_name):
        assert time.monotonic() < deadline, "containers left behind"
        time.sleep(0.2)
