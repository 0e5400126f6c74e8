"""The lean engine client (engine_http): against the real engine, and a socket that drops idle
kept-alive connections the way an engine restarting its listener does."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import docker.tls
import pytest
import requests.exceptions

from shared.backends import docker as docker_backend
from shared.backends import engine_http
from shared.errors import BackendUnavailable
from shared.policy import Resources
from tests.builders import TEST_IMAGE
from tests.sim.tls import make_tls

FLEET = "test-engine-http"


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker_backend.connect()


@pytest.fixture(scope="module")
def image_id(client: docker.DockerClient) -> str:
    return docker_backend.resolve_image(client, TEST_IMAGE).image_id


@pytest.fixture
def name(client: docker.DockerClient) -> Iterator[str]:
    name = f"test-engine-http-{uuid.uuid4()}"
    yield name
    try:
        client.api.remove_container(name, force=True)
    except docker.errors.NotFound:
        pass


def _config(image_id: str, **extra: object) -> dict[str, object]:
    return {
        "Image": image_id,
        "Env": ["SANDBOX_METHOD_ID=test.run"],
        "Labels": {docker_backend.LABEL_FLEET: FLEET},
        "HostConfig": {"NetworkMode": "none"},
        **extra,
    }


def test_a_container_is_created_started_waited_for_inspected_and_removed(
    client: docker.DockerClient, image_id: str, name: str
) -> None:
    engine = engine_http.for_client(client)
    container_id = engine.create_container(name, _config(image_id))
    engine.start(container_id)
    status = engine.wait(container_id, timeout=30)
    attrs = engine.inspect_container(name)
    assert attrs["Id"] == container_id
    assert attrs["State"]["Status"] == "exited"
    assert attrs["State"]["ExitCode"] == status["StatusCode"]
    assert attrs["Config"]["Labels"][docker_backend.LABEL_FLEET] == FLEET
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    engine.remove_container(name, force=True)
    with pytest.raises(docker.errors.NotFound):
        engine.inspect_container(name)
    # The SDK, which shares nothing with the lean client, agrees it is gone.
    assert not client.containers.list(all=True, filters={"name": name})


def test_engine_errors_arrive_as_the_sdk_raises_them(
    client: docker.DockerClient, image_id: str, name: str
) -> None:
    engine = engine_http.for_client(client)
    with pytest.raises(docker.errors.ImageNotFound):
        engine.inspect_image("sandbox-runner-absent:never")
    assert engine.inspect_image(image_id)["Id"] == image_id
    with pytest.raises(docker.errors.ImageNotFound):
        engine.create_container(name, _config("sandbox-runner-absent:never"))
    engine.create_container(name, _config(image_id))
    with pytest.raises(docker.errors.APIError) as conflict:
        engine.create_container(name, _config(image_id))
    # docker_backend.start returns the existing container on exactly this error.
    assert conflict.value.status_code == 409
    assert "already in use" in str(conflict.value)
    with pytest.raises(docker.errors.NotFound):
        engine.remove_container(f"{name}-never-created", force=True)
    with pytest.raises(docker.errors.NotFound):
        engine.stream("GET", f"/containers/{name}-never-created/logs", {"stdout": 1})


def test_a_wait_that_times_out_leaves_the_client_usable(
    client: docker.DockerClient, image_id: str
) -> None:
    spec = docker_backend.ContainerSpec(
        run_id=str(uuid.uuid4()),
        attempt=1,
        method_id="test.run",
        image_id=image_id,
        input_json=json.dumps({"action": "sleep", "seconds": 30}).encode(),
        resources=Resources(0.5, 64, 30),
        fleet=FLEET,
    )
    started = docker_backend.start(client, spec, first_attempt=True)
    container = started.container
    started.output.close()
    try:
        engine = engine_http.for_client(client)
        with pytest.raises(requests.exceptions.ReadTimeout):
            engine.wait(container.id, timeout=0.3)
        assert engine.inspect_container(container.id)["State"]["Running"] is True
    finally:
        docker_backend.remove(client, spec.run_id, spec.attempt, egress=False)
    with pytest.raises(docker.errors.NotFound):
        engine.inspect_container(container.id)


def test_an_unreachable_engine_is_reported_as_unavailable(tmp_path: Path) -> None:
    dead = docker.DockerClient(base_url=f"unix://{tmp_path}/no-engine.sock", version="1.45")
    spec = docker_backend.ContainerSpec(
        run_id=str(uuid.uuid4()),
        attempt=1,
        method_id="test.run",
        image_id="sha256:" + "0" * 64,
        input_json=b"{}",
        resources=Resources(0.5, 64, 5),
        fleet=FLEET,
    )
    with pytest.raises(BackendUnavailable):
        docker_backend.start(dead, spec, first_attempt=True)


def test_a_kept_alive_connection_the_engine_closed_is_replaced_once(tmp_path: Path) -> None:
    path = str(tmp_path / "closing.sock")
    requests_seen: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    server.settimeout(10)

    def answer_once_then_close() -> None:
        # Answers as HTTP/1.1 keep-alive, then closes: the client's next call on that
        # connection finds it gone before any byte of a response.
        for _ in range(2):
            conn, _ = server.accept()
            with conn:
                requests_seen.append(conn.recv(65536).split(b"\r\n", 1)[0])
                body = b'{"Id": "x"}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )

    thread = threading.Thread(target=answer_once_then_close, daemon=True)
    thread.start()
    engine = engine_http.for_client(docker.DockerClient(base_url=f"unix://{path}", version="1.45"))
    try:
        assert engine.inspect_container("x") == {"Id": "x"}
        assert engine.inspect_container("x") == {"Id": "x"}
    finally:
        thread.join(timeout=10)
        server.close()
    assert requests_seen == [b"GET /v1.45/containers/x/json HTTP/1.1"] * 2


def test_a_tls_engine_is_reached_with_the_clients_own_ca(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    seen: list[str] = []

    class Engine(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append(self.path)
            body = b'{"Id": "over-tls"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Engine)
    server.socket = tls.server_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        trusting = docker.DockerClient(
            base_url=url, tls=docker.tls.TLSConfig(ca_cert=str(tls.ca), verify=True), version="1.45"
        )
        assert engine_http.for_client(trusting).inspect_container("x") == {"Id": "over-tls"}
        assert seen == ["/v1.45/containers/x/json"]
        # A client that does not trust the engine's certificate never gets an answer.
        default_trust = docker.DockerClient(base_url=url, tls=True, version="1.45")
        with pytest.raises(requests.exceptions.ConnectionError):
            engine_http.for_client(default_trust).inspect_container("x")
        assert len(seen) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_an_engine_over_ssh_is_refused_when_the_client_is_made() -> None:
    # Refused by the SDK without paramiko (not a dependency), else by engine_http: either way
    # at start-up, with a message naming ssh, and not in the middle of a run.
    with pytest.raises(BackendUnavailable, match="ssh"):
        docker_backend.connect("ssh://sandbox@127.0.0.1:9")
