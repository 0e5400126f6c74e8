"""A local registry of the test's own (Debian's docker-registry) and cosign-style signing."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import docker
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.image_policy import SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, signature_tag
from tests.fleet import ROOT, free_port

REGISTRY_BIN = "/usr/bin/docker-registry"
LABEL = "sandbox-runner.test"
LABEL_VALUE = "security"


class LocalRegistry:
    """``docker-registry serve`` on a free 127.0.0.1 port with a temporary storage directory."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}/v2"

    def start(self) -> None:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
        )
        log = (self.workdir / "registry.log").open("ab")
        self.proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "registry.log").read_text()[-2000:])
            try:
                if requests.get(f"{self.url}/", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("the local registry did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def manifest_digest(self, repository: str, tag: str) -> str:
        response = requests.get(
            f"{self.url}/{repository}/manifests/{tag}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            timeout=10,
        )
        response.raise_for_status()
        return "sha256:" + hashlib.sha256(response.content).hexdigest()

    def upload_blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = requests.post(f"{self.url}/{repository}/blobs/uploads/", timeout=10)
        assert start.status_code == 202, start.text
        location = start.headers["Location"]
        if location.startswith("/"):
            location = f"http://{self.host}{location}"
        sep = "&" if "?" in location else "?"
        done = requests.put(
            f"{location}{sep}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        assert done.status_code == 201, done.text
        return digest

    def sign(
        self,
        repository: str,
        digest: str,
        key: ec.EllipticCurvePrivateKey,
        payload_digest: str | None = None,
    ) -> None:
        """Store a cosign-style signature of ``digest`` (payload naming ``payload_digest``)."""
        payload = json.dumps(
            {
                "critical": {
                    "identity": {"docker-reference": f"{self.host}/{repository}"},
                    "image": {"docker-manifest-digest": payload_digest or digest},
                    "type": "cosign container image signature",
                },
                "optional": None,
            },
            separators=(",", ":"),
        ).encode()
        signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
        layer_digest = self.upload_blob(repository, payload)
        config = b"{}"
        config_digest = self.upload_blob(repository, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": [
                {
                    "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
                    "size": len(payload),
                    "digest": layer_digest,
                    "annotations": {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()},
                }
            ],
        }
        response = requests.put(
            f"{self.url}/{repository}/manifests/{signature_tag(digest)}",
            data=json.dumps(manifest).encode(),
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            timeout=10,
        )
        assert response.status_code == 201, response.text


def new_key(directory: Path, name: str) -> ec.EllipticCurvePrivateKey:
    """Generate a P-256 key; write its public half to ``directory/<name>.pub.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    (directory / f"{name}.pub.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key


def build_adapter(client: docker.DockerClient, tag: str, variant: str | None = None) -> str:
    """Build the test adapter from this tree (small context), optionally with a variant marker."""
    context = io.BytesIO()
    dockerfile = (ROOT / "infra/adapters/testkit/Dockerfile").read_text()
    if variant is not None:
        dockerfile += f"\nENV SANDBOX_TEST_VARIANT={variant}\n"
    with tarfile.open(fileobj=context, mode="w") as tar:
        for rel in ("shared/adapter_sdk.py", "infra/adapters/testkit/test_adapter.py"):
            tar.add(str(ROOT / rel), arcname=rel)
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    image, _ = client.images.build(
        fileobj=context,
        custom_context=True,
        tag=tag,
        labels={LABEL: LABEL_VALUE},
        rm=True,
        forcerm=True,
    )
    return str(image.id)


def push(client: docker.DockerClient, ref: str) -> None:
    repository, tag = ref.rsplit(":", 1)
    for event in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in event:
            raise RuntimeError(f"push of {ref} failed: {event['error']}")
