"""GitHub Actions OIDC tokens as a second identity provider: keyless auth for workflows.

A job with ``permissions: id-token: write`` asks GitHub for a JWT with our audience; we check it
against GitHub's JWKS (fetched from a configurable URL, cached, refetched when an unknown ``kid``
shows up, which is how key rotation reaches us) and then authorize it with rules on its claims.

Rules file (``SANDBOX_GITHUB_OIDC_RULES_FILE``, TOML or JSON with the same shape); the first
rule whose patterns (globs) all match wins; a rule may name ``repository`` (required), ``ref``,
``environment``, ``event_name`` and ``repository_owner``::

    [[rule]]
    repository = "octo-org/seo-adapter"
    ref = "refs/heads/main"
    roles = ["Runs.Submit", "Runs.Read"]

A token that verifies but matches no rule is a 403, not a 401.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from shared.auth import ROLES, AuthError, KeySetClient, PermissionDenied
from shared.config import ConfigError, Settings

_LEEWAY_S = 30
MATCHABLE = ("repository", "ref", "environment", "event_name", "repository_owner")


@dataclass(frozen=True)
class Rule:
    """Claim patterns and the roles a matching token gets."""

    patterns: dict[str, str]
    roles: tuple[str, ...]

    def matches(self, claims: dict[str, Any]) -> bool:
        return all(
            isinstance(claims.get(name), str) and fnmatch.fnmatchcase(claims[name], pattern)
            for name, pattern in self.patterns.items()
        )


def load_rules(path: Path) -> list[Rule]:
    """Read the rules file; raise ConfigError when it is unreadable or malformed."""
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"GitHub OIDC rules file is unreadable: {type(exc).__name__}") from None
    rules = []
    for i, raw in enumerate(data.get("rule") or []):
        patterns = {k: str(v) for k, v in raw.items() if k in MATCHABLE}
        unknown = set(raw) - set(MATCHABLE) - {"roles"}
        if unknown or "repository" not in patterns:
            raise ConfigError(f"GitHub OIDC rule {i} needs repository and knows only {MATCHABLE}")
        roles = tuple(raw.get("roles") or ROLES)
        if set(roles) - set(ROLES):
            raise ConfigError(f"GitHub OIDC rule {i}: roles must be among {ROLES}")
        rules.append(Rule(patterns, roles))
    return rules


class GitHubOIDCVerifier:
    """Verify GitHub Actions OIDC tokens and map their claims to roles."""

    def __init__(self, settings: Settings) -> None:
        assert settings.github_oidc_rules_file is not None
        self.issuer = settings.github_oidc_issuer
        self.audience = settings.github_oidc_audience or settings.audience
        self.rules = load_rules(settings.github_oidc_rules_file)
        url = settings.github_oidc_jwks_url or f"{self.issuer.rstrip('/')}/.well-known/jwks"
        # An unknown kid (GitHub rotated its key) refetches the set, at most once per cooldown,
        # so a flood of made-up kids cannot turn us into a JWKS fetching loop.
        self.jwks = KeySetClient(
            url,
            cache_keys=True,
            lifespan=3600,
            timeout=5,
            cooldown_duration=settings.github_oidc_jwks_cooldown_s,
        )

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims, with ``roles`` from the first matching rule.

        Raises AuthError for a bad token and PermissionDenied when no rule matches.
        """
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError:
            raise AuthError("cannot fetch the GitHub OIDC signing keys") from None
        except jwt.PyJWTError:
            raise AuthError("token signing key is unknown") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=_LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub", "repository"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience is not this API") from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature is invalid") from None
        except jwt.PyJWTError:
            raise AuthError("token is malformed") from None
        for rule in self.rules:
            if rule.matches(claims):
                return {**claims, "roles": list(rule.roles), "idp": "github-actions"}
        raise PermissionDenied(
            f"no rule allows repository {claims.get('repository')} "
            f"(ref {claims.get('ref')}, environment {claims.get('environment')})"
        )
