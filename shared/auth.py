"""Bearer tokens: Entra ID (Azure AD), the local dev issuer and GitHub Actions OIDC.

Every issuer is checked the same way: its signing keys come from a JWKS (PyJWKClient, cached,
refetched when an unknown ``kid`` appears, which is how key rotation arrives), then PyJWT checks
signature, issuer, audience and expiry. The dev issuer is this api itself: it signs with a local
RS256 key and serves the JWKS and a discovery document like Entra's; its key set is handed to the
same client without an HTTP round trip to ourselves. A token is routed by its ``iss``.

App roles (the ``roles`` claim) become permissions (``submit``, ``read``, ``cancel``, ``admin``;
``admin`` implies all) through ``SANDBOX_ROLE_MAP``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.config import ConfigError, Settings
from shared.errors import Unavailable

logger = logging.getLogger(__name__)

# Roles a GitHub OIDC rule may grant (admin is not among them: workflows never administer).
ROLES = ("Runs.Submit", "Runs.Read", "Runs.Cancel")
ADMIN_ROLE = "Runs.Admin"
ALL_ROLES = (*ROLES, ADMIN_ROLE)
PERMISSIONS = ("submit", "read", "cancel", "admin")


class AuthError(Exception):
    """The request carries no valid bearer token; the message says why (never the token)."""


class PermissionDenied(AuthError):
    """The token is valid but no rule lets its holder in (403, not 401)."""


def ensure_dev_key(path: Path) -> bytes:
    """Return the dev issuer's private key, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(tmp, 0o600)
    try:
        # link() fails if another process created the key meanwhile: then both use theirs.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes()


def public_key_pem(settings: Settings) -> bytes:
    """Return the dev issuer's public key in PEM form."""
    private = serialization.load_pem_private_key(ensure_dev_key(settings.dev_key_path), None)
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def issue_token(
    settings: Settings,
    subject: str = "local-developer",
    roles: tuple[str, ...] = ALL_ROLES,
    ttl_s: int | None = None,
) -> str:
    """Sign a token the local API accepts."""
    now = int(time.time())
    claims = {
        "iss": settings.dev_issuer,
        "aud": settings.audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + (ttl_s or settings.token_ttl_s),
        "jti": str(uuid.uuid4()),
        "roles": list(roles),
    }
    key = ensure_dev_key(settings.dev_key_path)
    kid = dev_jwks(settings)["keys"][0]["kid"]
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def _thumbprint(jwk: dict[str, Any]) -> str:
    """Return the RFC 7638 thumbprint of an RSA JWK (a new key gets a new ``kid``)."""
    members = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    digest = hashlib.sha256(members.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def dev_jwks(settings: Settings) -> dict[str, Any]:
    """Return the dev issuer's public keys as a JWK set (what ``jwks.json`` serves)."""
    private = serialization.load_pem_private_key(ensure_dev_key(settings.dev_key_path), None)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))  # type: ignore[arg-type]
    jwk.update(kid=_thumbprint(jwk), use="sig", alg="RS256")
    return {"keys": [jwk]}


def dev_wellknown_prefix(settings: Settings) -> str:
    """Return the path under which the api serves the dev issuer's ``/.well-known`` documents."""
    parsed = urlparse(settings.dev_issuer)
    if not parsed.scheme:
        return ""  # an issuer that is a plain name, not a URL: serve at the root
    path = parsed.path.rstrip("/")
    return path if not path or path.startswith("/") else "/" + path


def dev_discovery(settings: Settings) -> dict[str, Any]:
    """Return the dev issuer's OpenID discovery document, shaped like Entra's."""
    issuer = settings.dev_issuer.rstrip("/")
    return {
        "issuer": settings.dev_issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "aud", "sub", "exp", "iat", "nbf", "jti", "roles"],
    }


def parse_role_map(text: str) -> dict[str, frozenset[str]]:
    """Read ``Role=perm[+perm],...`` into role -> permissions; raise ConfigError when malformed."""
    mapping: dict[str, set[str]] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        role, sep, perms = item.partition("=")
        wanted = {p.strip() for p in perms.split("+") if p.strip()}
        if not sep or not role.strip() or not wanted or wanted - set(PERMISSIONS):
            raise ConfigError(
                f"SANDBOX_ROLE_MAP entry {item.strip()!r} must be Role=permission[+permission] "
                f"with permissions among {PERMISSIONS}"
            )
        mapping.setdefault(role.strip(), set()).update(wanted)
    return {role: frozenset(perms) for role, perms in mapping.items()}


def permissions_of(claims: dict[str, Any], role_map: dict[str, frozenset[str]]) -> frozenset[str]:
    """Return what the token's app roles allow; ``admin`` implies every permission."""
    roles = claims.get("roles")
    if isinstance(roles, str):
        roles = [roles]
    if not isinstance(roles, list):
        return frozenset()
    granted: set[str] = set()
    for role in roles:
        if isinstance(role, str):
            granted |= role_map.get(role, frozenset())
    return frozenset(PERMISSIONS) if "admin" in granted else frozenset(granted)


_key_sets_fetched = 0


def key_set_generation() -> int:
    """Return how many times this process fetched a signing key set (any issuer)."""
    return _key_sets_fetched


class KeySetClient(jwt.PyJWKClient):
    """A JWK client that counts its fetches.

    A fetched set may have dropped a key, so tokens verified before it are verified again
    (see _VerifiedTokens).
    """

    def fetch_data(self) -> Any:
        global _key_sets_fetched
        data = super().fetch_data()
        _key_sets_fetched += 1
        return data


class _LocalJWKClient(KeySetClient):
    """A JWK client for the dev issuer: the same key lookup, but our own key set, no HTTP."""

    def __init__(self, settings: Settings) -> None:
        uri = dev_discovery(settings)["jwks_uri"]
        if urlparse(uri).scheme not in ("http", "https"):
            uri = "http://localhost/.well-known/jwks.json"  # nominal: never fetched
        super().__init__(uri, cache_keys=False, lifespan=300, cooldown_duration=0)
        self._settings = settings

    def fetch_data(self) -> Any:
        global _key_sets_fetched
        _key_sets_fetched += 1
        return dev_jwks(self._settings)


class _DiscoveryJWKClient(KeySetClient):
    """Entra's keys: ``jwks_uri`` is read from the discovery document on first use."""

    def __init__(self, discovery_url: str, expected_issuer: str, settings: Settings) -> None:
        super().__init__(
            discovery_url,
            cache_keys=False,
            lifespan=settings.jwks_cache_s,
            timeout=5,
            cooldown_duration=settings.jwks_cooldown_s,
        )
        self.discovery_url = discovery_url
        self.expected_issuer = expected_issuer
        self.tenant = settings.entra_tenant_id or ""
        self.located = False

    def fetch_data(self) -> Any:
        if not self.located:
            try:
                answer = requests.get(self.discovery_url, timeout=5, allow_redirects=False)
                answer.raise_for_status()
                doc = answer.json()
            except (requests.RequestException, ValueError) as exc:
                raise jwt.PyJWKClientConnectionError(
                    f"discovery document unavailable: {type(exc).__name__}"
                ) from None
            issuer = str(doc.get("issuer", "")).replace("{tenantid}", self.tenant)
            jwks_uri = str(doc.get("jwks_uri", ""))
            if issuer != self.expected_issuer or urlparse(jwks_uri).scheme not in (
                "http",
                "https",
            ):
                logger.error("Entra discovery document names issuer %s, not ours", issuer)
                raise jwt.PyJWKClientConnectionError("discovery document does not match")
            self.uri = jwks_uri
            self.located = True
        return super().fetch_data()


class _Issuer:
    """One trusted issuer: the ``iss`` values it signs with, our audiences and its keys."""

    def __init__(
        self,
        name: str,
        issuers: tuple[str, ...],
        audiences: tuple[str, ...],
        jwks: jwt.PyJWKClient,
        leeway_s: int,
    ) -> None:
        self.name = name
        self.issuers = issuers
        self.audiences = audiences
        self.jwks = jwks
        self.leeway_s = leeway_s

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims; raise AuthError (401) or Unavailable (keys cannot be fetched)."""
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError:
            raise Unavailable("the identity provider's signing keys") from None
        except jwt.PyJWKClientError:
            # No key of this issuer has the token's kid (after one refetch): not signed by it.
            raise AuthError("token signature is invalid") from None
        except jwt.PyJWTError:
            raise AuthError("token is malformed") from None
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=list(self.audiences),
                issuer=list(self.issuers),
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience is not this API") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token issuer is not trusted") from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature is invalid") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token is not valid yet") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise AuthError("token is malformed") from None


def entra_issuer(settings: Settings) -> _Issuer:
    """Return the Entra ID issuer of ``SANDBOX_ENTRA_*``: v1 and v2 tokens of one tenant."""
    tenant = settings.entra_tenant_id
    assert tenant
    authority = (settings.entra_authority or f"https://login.microsoftonline.com/{tenant}").rstrip(
        "/"
    )
    audiences = tuple(
        a
        for a in (
            settings.entra_client_id,
            settings.entra_app_id_uri
            or (f"api://{settings.entra_client_id}" if settings.entra_client_id else None),
        )
        if a
    )
    if not audiences:
        raise ConfigError("SANDBOX_ENTRA_TENANT_ID needs SANDBOX_ENTRA_CLIENT_ID or _APP_ID_URI")
    v2 = f"{authority}/v2.0"
    v1 = f"https://sts.windows.net/{tenant}/"
    jwks = _DiscoveryJWKClient(f"{v2}/.well-known/openid-configuration", v2, settings)
    return _Issuer("entra", (v2, v1), audiences, jwks, settings.token_leeway_s)


class _VerifiedTokens:
    """Tokens that passed verification, kept until ``ttl_s`` passes or they expire.

    A caller sends the same token with every request until it expires; checking its RS256
    signature and claims again each time was the largest CPU cost of a submission in a profile.
    Keyed by a hash of the token; bounded, oldest entries dropped first. Every entry is forgotten
    once any key set is fetched again (a rotation may have removed the key that signed it).
    """

    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._lock = threading.Lock()
        self._entries: dict[bytes, tuple[float, int, dict[str, Any]]] = {}

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str) -> dict[str, Any] | None:
        if self.ttl_s <= 0:
            return None
        key = self._key(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.time() or entry[1] != key_set_generation():
                del self._entries[key]
                return None
            return entry[2]

    def put(self, token: str, claims: dict[str, Any], generation: int) -> None:
        """Remember ``claims``, verified against the key sets of ``generation``."""
        if self.ttl_s <= 0:
            return
        # Never past the token's own expiry (no leeway here: the cache only ever shortens).
        until = min(time.time() + self.ttl_s, float(claims.get("exp", 0)))
        key = self._key(token)
        with self._lock:
            while len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (until, generation, claims)


class TokenVerifier:
    """Check bearer tokens: route by ``iss`` to the dev issuer, Entra ID or GitHub Actions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.role_map = parse_role_map(settings.role_map)
        self.issuers: dict[str, _Issuer] = {}
        self._lock = threading.Lock()
        self._verified = _VerifiedTokens(settings.token_cache_s)
        if settings.dev_issuer_enabled:
            dev = _Issuer(
                "dev",
                (settings.dev_issuer,),
                (settings.audience,),
                _LocalJWKClient(settings),
                settings.token_leeway_s,
            )
            self.issuers[settings.dev_issuer] = dev
        if settings.entra_tenant_id:
            entra = entra_issuer(settings)
            for name in entra.issuers:
                self.issuers[name] = entra
        # GitHub Actions OIDC (issue 9): a second issuer, on when a rules file is configured.
        self.github: Any = None
        if settings.github_oidc_rules_file is not None:
            from shared.github_oidc import GitHubOIDCVerifier

            self.github = GitHubOIDCVerifier(settings)

    def verify(self, header: str | None) -> dict[str, Any]:
        """Return the claims of a valid ``Authorization`` header, with ``permissions``.

        Raises AuthError (401), PermissionDenied (403, a GitHub token no rule allows) or
        Unavailable (503, an issuer's keys cannot be fetched).
        """
        if not header:
            raise AuthError("missing Authorization header (expected: Bearer <token>)")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("Authorization header must use the Bearer scheme")
        known = self._verified.get(token)
        if known is not None:
            return dict(known)
        generation = key_set_generation()  # read first: a fetch meanwhile makes the entry stale
        claims = self._verify(token)
        self._verified.put(token, claims, generation)
        return dict(claims)

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            raise AuthError("token is malformed") from None
        if self.github is not None and issuer == self.github.issuer:
            claims = dict(self.github.verify(token))
        else:
            trusted = self.issuers.get(issuer) if isinstance(issuer, str) else None
            if trusted is None:
                raise AuthError("token issuer is not trusted")
            claims = {**trusted.verify(token), "idp": trusted.name}
        claims["permissions"] = sorted(permissions_of(claims, self.role_map))
        return claims
