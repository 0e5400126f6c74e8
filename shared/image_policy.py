"""Image policy at provisioning: which registries, which digest, whose signature.

``check`` runs before the provisioner resolves the image on the engine. It

1. refuses a reference whose registry is not on the allow-list (``SANDBOX_IMAGE_REGISTRIES``;
   default: the ACR login server, when set, and ``localhost:5000``);
2. refuses a tag-only reference when ``SANDBOX_IMAGE_REQUIRE_DIGEST`` is on;
3. resolves a tag to the registry's manifest digest (what the registry serves *now*) and
   returns ``repo@sha256:...``: the provisioner pulls and records that, and the executor runs the
   pulled image's id, so a tag moved after this check cannot change what runs;
4. verifies a cosign-style key-based signature (``SANDBOX_IMAGE_REQUIRE_SIGNATURE``): the
   artefact tagged ``sha256-<hex>.sig`` beside the image holds simple-signing payload layers,
   each with its ECDSA P-256 signature in the ``dev.cosignproject.cosign/signature``
   annotation; one layer must verify with a configured public key
   (``SANDBOX_IMAGE_SIGNING_KEYS``: secret references, ``file:/key.pem`` or ``env:NAME``; Key
   Vault later through ``shared/secrets.py``) and its payload must name this digest.

A refusal raises ImagePolicyError; the run ends ``error`` with ``image_policy: <why>``.
When the registry cannot be reached and nothing is required (no digest, no signature), the
reference is used as before (an image built into the engine runs without a registry).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.config import Settings
from shared.errors import RunnerError
from shared.secrets import EnvFileSecretProvider, SecretError, SecretProvider

DEFAULT_REGISTRY = "docker.io"
LOCAL_REGISTRY = "localhost:5000"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TIMEOUT_S = 10.0
# A registry that could not be reached is not asked again for this long by runs that do not need
# it: a local image named for a registry nobody runs (``make images``) or a registry that is down
# would otherwise cost every run a refused connection, or a timeout, on its way to the engine.
REGISTRY_RETRY_S = 10.0
_unreachable_until: dict[str, float] = {}
_unreachable_lock = threading.Lock()
_session: tuple[int, requests.Session] | None = None


def _shared_session() -> requests.Session:
    """Return this process's registry session, whose connections stay open between checks.

    A session per check paid a TCP handshake (and a fresh connection pool) for every run.
    """
    global _session
    if _session is None or _session[0] != os.getpid():  # never share a socket across a fork
        _session = (os.getpid(), requests.Session())
    return _session[1]


_MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_MAX_PAYLOAD_BYTES = 1024 * 1024


class ImagePolicyError(RunnerError):
    """The image may not run: registry not allowed, no digest, unsigned or badly signed."""


class RegistryUnreachable(ImagePolicyError):
    """The registry could not be asked (down, refused, not a registry)."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The reference without tag or digest, as Docker names it."""
        return f"{self.registry}/{self.repository}"

    def pinned(self, digest: str) -> str:
        """The reference by digest: what is pulled, recorded and run."""
        return f"{self.name}@{digest}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy allows: the reference to resolve on the engine and how it was checked."""

    ref: str
    digest: str | None
    signed: bool
    registry: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "digest": self.digest,
            "signed": self.signed,
            "registry": self.registry,
        }


def parse_reference(ref: str) -> ImageRef:
    """Split a reference as Docker does (the first part is a registry if it looks like one)."""
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise ImagePolicyError(f"{ref} has a malformed digest (sha256:<64 hex> expected)")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DEFAULT_REGISTRY, rest
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if not path:
        raise ImagePolicyError(f"{ref} names no repository")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry=registry.lower(), repository=path, tag=tag, digest=digest)


def allowed_registries(settings: Settings) -> list[str]:
    """The registries images may come from (lower case, with port when given)."""
    if settings.image_registries is not None:
        listed = settings.image_registries.split(",")
    else:
        listed = [settings.acr_login_server, LOCAL_REGISTRY]
    return [r.strip().lower() for r in listed if r and r.strip()]


def load_public_keys(
    settings: Settings, provider: SecretProvider | None = None
) -> list[ec.EllipticCurvePublicKey]:
    """Read the signing public keys (PEM) named by ``SANDBOX_IMAGE_SIGNING_KEYS``."""
    provider = provider or EnvFileSecretProvider()
    keys = []
    for raw in settings.image_signing_keys.split(","):
        ref = raw.strip()
        if not ref:
            continue
        if ":" not in ref or ref.startswith("/"):
            ref = f"file:{ref}"
        try:
            pem = provider.get(ref)
        except SecretError as exc:
            raise ImagePolicyError(f"signing key unavailable: {exc}") from None
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except ValueError:
            raise ImagePolicyError(f"signing key {ref} is not a PEM public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ImagePolicyError(f"signing key {ref} is not an ECDSA key")
        keys.append(key)
    return keys


class RegistryClient:
    """The few Registry HTTP API v2 calls the policy needs (anonymous; plain HTTP on loopback)."""

    def __init__(self, registry: str, session: requests.Session | None = None) -> None:
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
        insecure = host in {"localhost", "127.0.0.1", "::1"} or host.startswith("127.")
        endpoint = "registry-1.docker.io" if registry == DEFAULT_REGISTRY else registry
        self.base = f"{'http' if insecure else 'https'}://{endpoint}/v2"
        self.registry = registry
        self.session = session or _shared_session()

    def _unreachable(self, exc: Exception) -> RegistryUnreachable:
        return RegistryUnreachable(
            f"registry {self.registry} unreachable ({exc.__class__.__name__})"
        )

    def manifest(self, repository: str, reference: str) -> tuple[str, dict[str, Any]] | None:
        """Return (digest, manifest) of a tag or digest, or None when the registry has none."""
        url = f"{self.base}/{repository}/manifests/{reference}"
        try:
            response = self.session.get(
                url, headers={"Accept": MANIFEST_TYPES}, timeout=_TIMEOUT_S, stream=True
            )
            body = response.raw.read(_MAX_MANIFEST_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None
        if response.status_code == 404:
            return None
        if response.status_code == 401:
            raise RegistryUnreachable(f"registry {self.registry} requires authentication")
        if response.status_code != 200:
            raise RegistryUnreachable(
                f"registry {self.registry} answered {response.status_code} for {repository}"
            )
        if len(body) > _MAX_MANIFEST_BYTES:
            raise ImagePolicyError(f"manifest of {repository}:{reference} is too large")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        try:
            manifest = json.loads(body)
        except ValueError:
            raise ImagePolicyError(f"manifest of {repository}:{reference} is not JSON") from None
        return digest, manifest

    def blob(self, repository: str, digest: str, limit: int = _MAX_PAYLOAD_BYTES) -> bytes:
        """Return a blob, checked against its digest."""
        if not _DIGEST.match(digest):
            raise ImagePolicyError(f"malformed blob digest {digest!r}")
        try:
            response = self.session.get(
                f"{self.base}/{repository}/blobs/{digest}", timeout=_TIMEOUT_S, stream=True
            )
            body = response.raw.read(limit + 1, decode_content=True)
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None
        if response.status_code != 200 or len(body) > limit:
            raise ImagePolicyError(f"signature payload {digest} unreadable")
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise ImagePolicyError(f"signature payload {digest} does not match its digest")
        return body


def signature_tag(digest: str) -> str:
    """The tag cosign stores a digest's signatures under."""
    return digest.replace(":", "-") + ".sig"


def verify_signature(
    client: RegistryClient,
    image: ImageRef,
    digest: str,
    keys: list[ec.EllipticCurvePublicKey],
) -> None:
    """Raise ImagePolicyError unless a configured key signed ``digest`` (cosign key-based)."""
    if not keys:
        raise ImagePolicyError("signatures are required but no signing key is configured")
    found = client.manifest(image.repository, signature_tag(digest))
    if found is None:
        raise ImagePolicyError(f"{image.name}@{digest} is not signed")
    _, manifest = found
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list) or not layers:
        raise ImagePolicyError(f"signature of {image.name}@{digest} has no payload")
    problems = []
    for layer in layers[:16]:
        if not isinstance(layer, dict):
            continue
        annotations = layer.get("annotations") or {}
        signature_b64 = annotations.get(SIGNATURE_ANNOTATION)
        if not isinstance(signature_b64, str) or not isinstance(layer.get("digest"), str):
            problems.append("a payload without a signature")
            continue
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except ValueError:
            problems.append("a signature that is not base64")
            continue
        payload = client.blob(image.repository, layer["digest"])
        if not any(_verifies(key, signature, payload) for key in keys):
            problems.append("a signature no configured key made")
            continue
        try:
            signed = json.loads(payload)["critical"]["image"]["docker-manifest-digest"]
        except (ValueError, KeyError, TypeError):
            problems.append("a signed payload that is not simple signing")
            continue
        if signed != digest:
            problems.append(f"a signature for another digest ({signed})")
            continue
        return
    raise ImagePolicyError(
        f"no valid signature for {image.name}@{digest}: found {', '.join(problems) or 'none'}"
    )


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, payload: bytes) -> bool:
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def check(
    settings: Settings,
    ref: str,
    provider: SecretProvider | None = None,
    session: requests.Session | None = None,
) -> Decision:
    """Apply the image policy to ``ref``; return what to resolve on the engine, or raise."""
    image = parse_reference(ref)
    allowed = allowed_registries(settings)
    if image.registry not in allowed:
        raise ImagePolicyError(
            f"registry {image.registry} is not allowed (allowed: {', '.join(allowed) or 'none'})"
        )
    if settings.image_require_digest and image.digest is None:
        raise ImagePolicyError(f"{ref} is a tag; a digest reference (@sha256:...) is required")
    client = RegistryClient(image.registry, session)
    need_registry = settings.image_require_signature or settings.image_require_digest
    # Nothing demands the registry: an image built into the engine still runs.
    unpinned = Decision(ref=ref, digest=image.digest, signed=False, registry=image.registry)
    if not need_registry and _unreachable_until.get(image.registry, 0.0) > time.monotonic():
        return unpinned
    try:
        found = client.manifest(image.repository, image.digest or image.tag or "latest")
    except RegistryUnreachable:
        with _unreachable_lock:
            _unreachable_until[image.registry] = time.monotonic() + REGISTRY_RETRY_S
        if need_registry:
            raise
        return unpinned
    if found is None:
        if need_registry:
            raise ImagePolicyError(f"{ref} is not in registry {image.registry}")
        return unpinned
    digest, _ = found
    if image.digest is not None and digest != image.digest:
        raise ImagePolicyError(f"registry served {digest} for {ref}")
    signed = False
    if settings.image_require_signature:
        verify_signature(client, image, digest, load_public_keys(settings, provider))
        signed = True
    return Decision(ref=image.pinned(digest), digest=digest, signed=signed, registry=image.registry)
