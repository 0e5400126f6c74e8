"""Server-configured callback endpoints (TOML, ``SANDBOX_WEBHOOK_ENDPOINTS_FILE``).

::

    [endpoints.ci]
    url = "https://hooks.example.com/sandbox"
    secretRef = "file:/run/secrets/ci-hook"

A run names one with ``callback: {"endpoint": "ci"}``; its caller never sees the URL or secret.
The file is read when needed (submit and every send), so an edit applies without a restart.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.secrets import SecretError, ref_allowed


class CallbackError(ValueError):
    """A run's ``callback`` cannot be used; the message is for the caller."""


@dataclass(frozen=True)
class Target:
    """Where a webhook goes and which secret signs it."""

    url: str
    secret_ref: str


def load_endpoints(path: Path | None) -> dict[str, Target]:
    """Return the configured endpoints (none without a file); raise CallbackError if malformed."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CallbackError(f"webhook endpoints file is unreadable: {type(exc).__name__}") from None
    endpoints: dict[str, Target] = {}
    for name, spec in (data.get("endpoints") or {}).items():
        if not isinstance(spec, dict) or not spec.get("url") or not spec.get("secretRef"):
            raise CallbackError(f"webhook endpoint {name!r} needs url and secretRef")
        endpoints[name] = Target(str(spec["url"]), str(spec["secretRef"]))
    return endpoints


def resolve(settings: Settings, callback: dict[str, Any]) -> Target:
    """Return the target a run's ``callback`` names; raise CallbackError when it may not be used."""
    if "endpoint" in callback:
        target = load_endpoints(settings.webhook_endpoints_file).get(callback["endpoint"])
        if target is None:
            raise CallbackError(f"no webhook endpoint named {callback['endpoint']!r}")
        return target
    ref = callback["secretRef"]
    if not ref_allowed(ref, settings.webhook_secret_refs.split(",")):
        raise CallbackError(
            "secretRef is not one the operator allows (SANDBOX_WEBHOOK_SECRET_REFS)"
        )
    return Target(callback["url"], ref)


__all__ = ["CallbackError", "SecretError", "Target", "load_endpoints", "resolve"]
