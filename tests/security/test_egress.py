"""Egress through the allow-list proxy, on the real engine and a fleet of its own (issue 6).

Everything stays on this machine: the "outside" is a bridge network this module creates, with two
tiny HTTP servers on it (one allowed, one not), and a listener on the host's own addresses. The
fleet lets ``test.egress`` out (a resource policy row set over the admin API) and keeps
``test.run`` without network.
"""

from __future__ import annotations

import io
import ipaddress
import os
import signal
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import psycopg
import pytest
import requests

from shared.backends import docker as docker_backend
from shared.backends import egress
from tests.builders import run_request
from tests.fleet import ROOT
from tests.security.conftest import Images, SecurityFleet, running_fleet
from tests.security.registry import LABEL, LABEL_VALUE

pytestmark = pytest.mark.xdist_group("security")

EGRESS_METHOD = "test.egress"
PORT = 8080
# Answers every GET with who it is; runs as nobody on a read-only root like everything here.
SERVER = (
    "import http.server as h\n"
    "class H(h.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = b'hello from NAME'\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    f"h.ThreadingHTTPServer(('0.0.0.0', {PORT}), H).serve_forever()\n"
)


@dataclass
class Outside:
    """The test's stand-in for the internet: a network, two servers, a host listener."""

    network: str
    allowed: str  # container name (what the allow list names)
    denied: str
    ips: dict[str, str]
    listener_port: int
    accepted: list[bytes] = field(default_factory=list)


@dataclass
class EgressWorld:
    fleet: SecurityFleet
    outside: Outside
    fleet_name: str
    proxy_image: str


def _build_proxy(client: docker.DockerClient, tag: str) -> None:
    """Build the proxy image from this tree (like infra/images/build.sh, without a shell)."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for rel in ("shared/egress_proxy.py", "infra/egress-proxy/Dockerfile"):
            tar.add(str(ROOT / rel), arcname=rel)
    context.seek(0)
    client.images.build(
        fileobj=context,
        custom_context=True,
        dockerfile="infra/egress-proxy/Dockerfile",
        tag=tag,
        labels={LABEL: LABEL_VALUE},
        rm=True,
        forcerm=True,
    )


@pytest.fixture(scope="module")
def outside(docker_client: docker.DockerClient) -> Iterator[Outside]:
    tag = uuid.uuid4().hex[:8]
    network = docker_client.networks.create(
        f"egress-test-{tag}", driver="bridge", labels={LABEL: LABEL_VALUE}
    )
    servers = {}
    stop = threading.Event()
    listener = socket.socket()
    try:
        for role in ("allowed", "denied"):
            servers[role] = docker_client.containers.run(
                "sandbox-runner/python-base:dev",
                ["python3", "-c", SERVER.replace("NAME", role)],
                name=f"egress-{role}-{tag}",
                network=network.name,
                labels={LABEL: LABEL_VALUE},
                user="65534:65534",
                read_only=True,
                cap_drop=["ALL"],
                detach=True,
            )
        ips = {}
        for role, server in servers.items():
            server.reload()
            ips[role] = server.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        # On every host address: the one a sandbox could try through its network's gateway.
        listener.bind(("0.0.0.0", 0))
        listener.listen(8)
        listener.settimeout(0.2)
        found = Outside(
            network=network.name,
            allowed=servers["allowed"].name,
            denied=servers["denied"].name,
            ips=ips,
            listener_port=listener.getsockname()[1],
        )

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                with conn:
                    found.accepted.append(conn.recv(64))

        threading.Thread(target=serve, daemon=True).start()
        yield found
    finally:
        stop.set()
        listener.close()
        for server in servers.values():
            server.remove(force=True)
        network.remove()


@pytest.fixture(scope="module")
def world(
    settings_env: dict[str, str],
    images: Images,
    key_dir: Path,
    outside: Outside,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EgressWorld]:
    proxy_image = f"sandbox-runner/egress-proxy:test-{uuid.uuid4().hex[:8]}"
    _build_proxy(docker_client, proxy_image)
    extra = {
        "SANDBOX_SWEEP_INTERVAL_S": "1",
        "SANDBOX_POLICY_CACHE_TTL_S": "0.2",
        "SANDBOX_EGRESS_ALLOW_HOSTS": f"{outside.allowed}:{PORT}",
        "SANDBOX_EGRESS_NETWORK": outside.network,
        "SANDBOX_EGRESS_PROXY_IMAGE": proxy_image,
    }
    work = tmp_path_factory.mktemp("egress-fleet")
    fleet_name = None
    try:
        with running_fleet(settings_env, images, key_dir, work, "egress", extra) as fleet:
            fleet_name = fleet.settings.fleet_name
            with psycopg.connect(fleet.settings.database_url, autocommit=True) as conn:
                conn.execute("TRUNCATE resource_policy")
            # The policy, not the request, grants egress: one row over the admin API.
            response = _put_policy(fleet, EGRESS_METHOD, {"egress": True})
            assert response.status_code in (200, 201), response.text
            assert response.json()["limits"] == {"egress": True}
            yield EgressWorld(fleet, outside, fleet_name, proxy_image)
    finally:
        # Networks last: one still attached to a proxy container cannot be removed.
        if fleet_name is not None:
            for network in _fleet_networks(docker_client, fleet_name):
                network.remove()
        try:
            docker_client.images.remove(proxy_image, force=True)
        except docker.errors.APIError:
            pass


def _put_policy(fleet: SecurityFleet, method: str, body: dict[str, Any]) -> requests.Response:
    return requests.put(
        f"{fleet.base}/api/sandbox/admin/policies/methods/{method}",
        json=body,
        headers=fleet.auth,
        timeout=10,
    )


def _fleet_networks(client: docker.DockerClient, fleet: str) -> list[Any]:
    return list(client.networks.list(filters={"label": f"{docker_backend.LABEL_FLEET}={fleet}"}))


def _fleet_containers(client: docker.DockerClient, fleet: str) -> list[Any]:
    """The fleet's containers, inspected (the listing is sparse); gone ones are skipped."""
    found = []
    for _, _, sparse in docker_backend.list_sandbox_containers(client, fleet):
        try:
            found.append(client.containers.get(sparse.id))
        except docker.errors.NotFound:
            continue
    return found


def _wait_clean(client: docker.DockerClient, fleet: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while _fleet_containers(client, fleet) or _fleet_networks(client, fleet):
        left = [c.name for c in _fleet_containers(client, fleet)]
        left += [n.name for n in _fleet_networks(client, fleet)]
        assert time.monotonic() < deadline, f"left behind: {left}"
        time.sleep(0.2)


def _submit(world: EgressWorld, images: Images, method: str, **body: Any) -> str:
    dry_run = body.pop("dryRun", False)
    return world.fleet.submit(
        run_request(methodId=method, adapterImage=images.signed, input=body, dryRun=dry_run)
    )


def _fetch_input(out: Outside) -> dict[str, Any]:
    allowed, denied = f"{out.allowed}:{PORT}", f"{out.denied}:{PORT}"
    return {
        "action": "fetch",
        "urls": [
            f"http://{allowed}/",
            f"http://{denied}/",
            # The allowed server by address: listed by name only, so refused.
            f"http://{out.ips['allowed']}:{PORT}/",
            # Names match whatever their case; a listed port is the only port.
            f"http://{out.allowed.upper()}:{PORT}/",
            f"http://{out.allowed}:{PORT + 1}/",
        ],
        "tunnels": [allowed, denied],
        # Around the proxy: straight to the servers, and to the host through the gateway.
        "direct": [f"{ip}:{PORT}" for ip in out.ips.values()],
        "gatewayPorts": [out.listener_port],
        "resolve": ["secret-data.exfil.invalid", out.allowed],
    }


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_only_the_allowed_host_is_reached_and_refusals_are_recorded(
    world: EgressWorld, images: Images
) -> None:
    out = world.outside
    run = world.fleet.wait(_submit(world, images, EGRESS_METHOD, **_fetch_input(out)), 90)
    assert run["status"] == "succeeded", run["statusReason"]
    got = run["evaluation"]
    allowed_url = f"http://{out.allowed}:{PORT}/"
    # Through the proxy, by its address (the container resolves nothing).
    ipaddress.ip_address(urlsplit(got["proxy"]).hostname or "")
    hello = {"status": 200, "body": "hello from allowed"}
    assert got["urls"][allowed_url] == hello
    assert got["urls"][f"http://{out.allowed.upper()}:{PORT}/"] == hello
    assert got["urls"][f"http://{out.denied}:{PORT}/"] == {"status": 403}
    assert got["urls"][f"http://{out.ips['allowed']}:{PORT}/"] == {"status": 403}
    assert got["urls"][f"http://{out.allowed}:{PORT + 1}/"] == {"status": 403}
    assert got["tunnels"][f"{out.allowed}:{PORT}"] == {"status": 200, "body": "hello from allowed"}
    assert "403" in got["tunnels"][f"{out.denied}:{PORT}"]["detail"]
    # Bypassing the proxy fails: no route to the servers, no host address on the network.
    assert got["direct"] and all(v != "connected" for v in got["direct"].values()), got
    assert got["gatewayPorts"][str(out.listener_port)] != "connected", got
    assert out.accepted == []
    # No DNS: neither an exfiltration name nor the allowed host resolves inside.
    assert all(v == "gaierror" for v in got["resolve"].values()), got["resolve"]
    # The refusals are on the run, with host, port and time.
    record = run["egress"]
    assert record["allowedTotal"] == 3 and record["deniedTotal"] == 4, record
    denied = {(d["host"], d["port"], d["method"]) for d in record["denied"]}
    assert denied == {
        (out.denied, PORT, "GET"),
        (out.ips["allowed"], PORT, "GET"),
        (out.allowed, PORT + 1, "GET"),
        (out.denied, PORT, "CONNECT"),
    }
    started, finished = _time(run["timestamps"]["started"]), _time(run["timestamps"]["finished"])
    for entry in record["denied"]:
        slack = timedelta(seconds=2)
        assert started - slack <= _time(entry["time"]) <= finished + slack, entry
    _wait_clean(docker_backend.connect(), world.fleet_name)


def test_a_run_without_egress_still_has_no_network(world: EgressWorld, images: Images) -> None:
    run = world.fleet.wait(_submit(world, images, "test.run", **_fetch_input(world.outside)), 90)
    assert run["status"] == "succeeded", run["statusReason"]
    got = run["evaluation"]
    assert got["proxy"] == "" and got["interfaces"] == [] and got["gateway"] is None
    assert all("error" in v for v in got["urls"].values()), got["urls"]
    assert all(v != "connected" for v in got["direct"].values())
    assert run["egress"] is None
    assert "egress" not in run["resources"]
    assert world.outside.accepted == []


def test_the_plan_records_the_network_and_the_allow_list(
    world: EgressWorld, images: Images
) -> None:
    plans = {}
    for method in (EGRESS_METHOD, "test.run"):
        run = world.fleet.wait(
            _submit(world, images, method, action="echo", dryRun=True), timeout=30
        )
        assert run["status"] == "succeeded", run["statusReason"]
        plans[method] = run["plan"]
    assert plans[EGRESS_METHOD]["network"] == "egress"
    assert plans[EGRESS_METHOD]["egressAllowHosts"] == [f"{world.outside.allowed}:{PORT}"]
    assert plans[EGRESS_METHOD]["resources"]["egress"] is True
    assert plans["test.run"]["network"] == "none"
    assert "egressAllowHosts" not in plans["test.run"]


def test_a_request_cannot_grant_itself_egress(world: EgressWorld, images: Images) -> None:
    body = run_request(adapterImage=images.signed, resources={"egress": True})
    response = world.fleet.post(body)
    assert response.status_code == 422
    assert "egress" in response.json()["errors"]["json"]["resources"]


def _running_parts(
    client: docker.DockerClient, fleet: str, timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for container in _fleet_containers(client, fleet):
            role = container.labels.get(egress.LABEL_ROLE, "run")
            if container.status == "running":
                found[role] = container
        networks = _fleet_networks(client, fleet)
        if {"run", egress.ROLE_PROXY} <= set(found) and networks:
            found["network"] = networks[0]
            return found
        time.sleep(0.1)
    raise AssertionError("the egress run never had its container, proxy and network running")


def test_the_proxy_is_hardened_and_the_run_sits_on_its_own_internal_network(
    world: EgressWorld, images: Images
) -> None:
    client = docker_backend.connect()
    run_id = _submit(world, images, EGRESS_METHOD, action="sleep", seconds=4)
    parts = _running_parts(client, world.fleet_name)
    proxy = client.api.inspect_container(parts[egress.ROLE_PROXY].id)
    adapter = client.api.inspect_container(parts["run"].id)
    network = client.api.inspect_network(parts["network"].id)
    run = world.fleet.wait(run_id, 60)
    assert run["status"] == "succeeded", run["statusReason"]
    assert run["egress"] == {"denied": [], "deniedTotal": 0, "allowedTotal": 0}

    host = proxy["HostConfig"]
    assert proxy["Config"]["User"] == "65534:65534"
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == host["MemorySwap"] == egress.PROXY_MEMORY_MB * 1024 * 1024
    assert host["PidsLimit"] == egress.PROXY_PIDS_LIMIT
    assert not host.get("Binds") and not proxy["Mounts"]
    assert proxy["Config"]["Labels"][docker_backend.LABEL_RUN] == run_id
    assert set(proxy["NetworkSettings"]["Networks"]) == {network["Name"], world.outside.network}

    # The run: on the internal network only, no DNS of its own, the proxy by address.
    proxy_ip = proxy["NetworkSettings"]["Networks"][network["Name"]]["IPAddress"]
    assert adapter["HostConfig"]["NetworkMode"] == network["Name"]
    assert set(adapter["NetworkSettings"]["Networks"]) == {network["Name"]}
    assert adapter["HostConfig"]["Dns"] == [proxy_ip]
    assert f"HTTPS_PROXY=http://{proxy_ip}:3128" in adapter["Config"]["Env"]
    assert adapter["HostConfig"]["ReadonlyRootfs"] is True
    assert adapter["HostConfig"]["CapDrop"] == ["ALL"]

    assert network["Internal"] is True
    assert network["Options"][egress.INHIBIT_IPV4] == "true"
    assert network["Labels"][docker_backend.LABEL_RUN] == run_id
    assert network["Labels"][docker_backend.LABEL_FLEET] == world.fleet_name
    assert set(network["Containers"]) == {parts["run"].id, parts[egress.ROLE_PROXY].id}
    _wait_clean(client, world.fleet_name)


def test_the_reconciler_removes_what_a_dead_executor_left(
    world: EgressWorld, images: Images
) -> None:
    client = docker_backend.connect()
    fleet = world.fleet
    run_id = _submit(world, images, EGRESS_METHOD, action="sleep", seconds=15)
    _running_parts(client, world.fleet_name)
    proc = fleet.procs.pop("executor")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    try:
        # Nobody follows the run now; cancelling ends it, and only the reconciler is left to
        # clean up after it.
        assert fleet.get(f"/api/sandbox/runs/{run_id}").json()["status"] == "running"
        done = requests.post(
            f"{fleet.base}/api/sandbox/runs/{run_id}/cancel", headers=fleet.auth, timeout=10
        )
        assert done.json()["status"] == "cancelled"
        # Container, proxy and network: gone by the reconciler's sweeps, with no executor.
        _wait_clean(client, world.fleet_name, timeout=30)
    finally:
        fleet.start("executor")
    run = fleet.wait(_submit(world, images, EGRESS_METHOD, action="echo", value=3), 90)
    assert run["status"] == "succeeded", run["statusReason"]
    _wait_clean(client, world.fleet_name)
