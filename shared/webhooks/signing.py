"""HMAC signatures: ours on outbound webhooks, GitHub's on inbound ones.

Outbound: ``X-Sandbox-Signature-256: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
The timestamp is inside the MAC, so a receiver can refuse replays older than a few minutes.
Inbound: GitHub's ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>``.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Sandbox-Signature-256"
DELIVERY_HEADER = "X-Sandbox-Delivery"
EVENT_HEADER = "X-Sandbox-Event"
DEFAULT_TOLERANCE_S = 300


def _mac(secret: str | bytes, message: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """Return the ``X-Sandbox-Signature-256`` value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_mac(secret, str(timestamp).encode() + b'.' + body)}"


def verify(
    secret: str | bytes,
    body: bytes,
    header: str | None,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Check a ``X-Sandbox-Signature-256`` header as a receiver should (constant-time, fresh)."""
    if not header:
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, str(timestamp).encode() + b"." + body)
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


def github_signature(secret: str | bytes, body: bytes) -> str:
    """Return GitHub's ``X-Hub-Signature-256`` value for ``body``."""
    return "sha256=" + _mac(secret, body)


def verify_github(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """Check GitHub's ``X-Hub-Signature-256`` over the raw request bytes (constant-time)."""
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(github_signature(secret, body), header)
