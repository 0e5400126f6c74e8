"""Bearer tokens from the local dev issuer (RS256), verified the way Entra ID tokens will be."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.config import Settings

ROLES = ("Runs.Submit", "Runs.Read", "Runs.Cancel")
_LEEWAY_S = 30


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
    roles: tuple[str, ...] = ROLES,
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
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "dev"})


class TokenVerifier:
    """Check bearer tokens against the dev issuer's key, audience and expiry."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.key = public_key_pem(settings)
        # GitHub Actions OIDC (issue 9): a second issuer, on when a rules file is configured.
        self.github: Any = None
        if settings.github_oidc_rules_file is not None:
            from shared.github_oidc import GitHubOIDCVerifier

            self.github = GitHubOIDCVerifier(settings)

    def verify(self, header: str | None) -> dict[str, Any]:
        """Return the claims of a valid ``Authorization`` header; raise AuthError otherwise."""
        if not header:
            raise AuthError("missing Authorization header (expected: Bearer <token>)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization header must use the Bearer scheme")
        if self.github is not None:
            try:
                issuer = jwt.decode(token.strip(), options={"verify_signature": False}).get("iss")
            except jwt.PyJWTError:
                raise AuthError("token is malformed") from None
            if issuer == self.github.issuer:
                return self.github.verify(token.strip())  # type: ignore[no-any-return]
        try:
            return jwt.decode(
                token.strip(),
                self.key,
                algorithms=["RS256"],
                audience=self.settings.audience,
                issuer=self.settings.dev_issuer,
                leeway=_LEEWAY_S,
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
        except jwt.PyJWTError:
            raise AuthError("token is malformed") from None
