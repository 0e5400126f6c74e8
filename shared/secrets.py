"""Secret values by reference: ``env:NAME``, ``file:/path`` or ``kv:NAME`` (Azure Key Vault).

A reference names where a secret lives; only the provider reads the value, at the moment it is
needed, so values never sit in Postgres, in task messages or in settings. Whoever puts a value
into a body, a header or a log must register it with the redactor it uses.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol


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


class KeyVaultSecretProvider:
    """``kv:NAME`` (or ``kv:NAME/VERSION``) reads an Azure Key Vault secret (issue 7).

    One SecretClient per process (its credential caches tokens); values are cached in process
    for ``ttl_s``, as Key Vault's guidance asks. When the vault refuses the credential the
    client is rebuilt with a fresh credential and asked once more; ``invalidate`` drops a
    cached value whose use failed (rotated), so the next ``get`` reads it again.
    """

    def __init__(
        self,
        vault_url: str,
        credential_factory: Callable[[], Any],
        *,
        ttl_s: float = 900.0,
        connection_verify: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.vault_url, self.ttl_s, self.clock = vault_url, ttl_s, clock
        self._credential_factory = credential_factory
        self._verify = connection_verify
        self._client: Any = None
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def _secret_client(self, fresh: bool = False) -> Any:
        from azure.keyvault.secrets import SecretClient

        if self._client is None or fresh:
            kwargs: dict[str, Any] = {}
            if self._verify:
                kwargs["connection_verify"] = self._verify
            self._client = SecretClient(self.vault_url, self._credential_factory(), **kwargs)
        return self._client

    def get(self, ref: str) -> str:
        scheme, sep, rest = ref.partition(":")
        if scheme != "kv" or not sep or not rest:
            raise SecretError("a Key Vault reference looks like kv:NAME or kv:NAME/VERSION")
        name, _, version = rest.partition("/")
        with self._lock:
            cached = self._cache.get(rest)
            if cached is not None and cached[0] > self.clock():
                return cached[1]
            value = self._read(ref, name, version or None)
            self._cache[rest] = (self.clock() + self.ttl_s, value)
            return value

    def invalidate(self, ref: str) -> None:
        """Forget a cached value (its use failed: rotated?); the next ``get`` reads the vault."""
        with self._lock:
            self._cache.pop(ref.partition(":")[2], None)

    def _read(self, ref: str, name: str, version: str | None) -> str:
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            ResourceNotFoundError,
        )

        for fresh in (False, True):
            try:
                value = self._secret_client(fresh).get_secret(name, version).value
            except ClientAuthenticationError:
                if fresh:
                    raise SecretError(f"Key Vault refused the credential for {ref}") from None
                continue  # a stale token or credential: rebuild once and ask again
            except ResourceNotFoundError:
                raise SecretError(f"secret {ref} is not in the vault") from None
            except AzureError as exc:
                raise SecretError(f"Key Vault failed for {ref}: {type(exc).__name__}") from None
            if not value:
                raise SecretError(f"secret {ref} is empty")
            return str(value)
        raise SecretError(f"secret {ref} cannot be read")  # pragma: no cover


class RoutingSecretProvider:
    """Send ``kv:`` references to Key Vault and everything else to env/file."""

    def __init__(self, keyvault: SecretProvider, fallback: SecretProvider) -> None:
        self.keyvault, self.fallback = keyvault, fallback

    def get(self, ref: str) -> str:
        if ref.startswith("kv:"):
            return self.keyvault.get(ref)
        return self.fallback.get(ref)


def provider_for(settings: object) -> SecretProvider:
    """Return the secret provider the settings call for: env/file, plus Key Vault if set."""
    vault_url = getattr(settings, "keyvault_url", None)
    if not vault_url:
        return EnvFileSecretProvider()
    from shared.backends.aci import credential

    ca = getattr(settings, "azure_ca_bundle", None)
    keyvault = KeyVaultSecretProvider(
        vault_url,
        lambda: credential(settings),  # type: ignore[arg-type]
        ttl_s=float(getattr(settings, "keyvault_cache_ttl_s", 900)),
        connection_verify=str(ca) if ca else None,
    )
    return RoutingSecretProvider(keyvault, EnvFileSecretProvider())
