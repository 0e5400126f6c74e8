"""Secret values by reference: ``env:NAME`` or ``file:/path`` (Key Vault would be a third provider).

A reference names where a secret lives; only the provider reads the value, at the moment it is
needed, so values never sit in Postgres, in task messages or in settings. Whoever puts a value
into a body, a header or a log must register it with the redactor it uses.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol


class SecretError(Exception):
    """A secret reference is malformed, not allowed or cannot be read (never carries the value)."""


class SecretProvider(Protocol):
    """Something that turns a secret reference into its value."""

    def get(self, ref: str) -> str:
        """Return the value of ``ref``; raise SecretError when it is missing or malformed."""
        ...


class EnvFileSecretProvider:
    """``env:NAME`` reads an environment variable; ``file:/path`` reads a file (trailing newline
    stripped, as Kubernetes and Docker secrets are mounted)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        # The environment is the secret store here, on purpose: settings never read it.
        self._environ = os.environ if environ is None else environ

    def get(self, ref: str) -> str:
        scheme, sep, name = ref.partition(":")
        if not sep or not name:
            raise SecretError("a secret reference looks like env:NAME or file:/path")
        if scheme == "env":
            value = self._environ.get(name)
            if not value:
                raise SecretError(f"secret {ref} is not set")
            return value
        if scheme == "file":
            try:
                value = Path(name).read_text().rstrip("\r\n")
            except OSError:
                raise SecretError(f"secret {ref} cannot be read") from None
            if not value:
                raise SecretError(f"secret {ref} is empty")
            return value
        raise SecretError(f"unknown secret provider {scheme!r} (env or file)")


def ref_allowed(ref: str, patterns: Iterable[str]) -> bool:
    """Tell whether a caller-supplied reference matches one of the operator's glob patterns.

    Callers may only name secrets the operator set aside for them: ``file:/etc/shadow`` or
    ``env:SANDBOX_DATABASE_URL`` must not become an HMAC key an outsider can probe.
    """
    return any(fnmatch.fnmatchcase(ref, p.strip()) for p in patterns if p.strip())


def provider_for(settings: object) -> SecretProvider:
    """Return the secret provider the settings call for (env/file; Key Vault would go here)."""
    return EnvFileSecretProvider()
