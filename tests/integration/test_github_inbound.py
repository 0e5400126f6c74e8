"""GitHub calling us: signed webhooks that start runs, and Actions OIDC tokens (keyless auth)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from psycopg_pool import ConnectionPool

from services.api.app import create_app
from shared.config import load_settings
from shared.webhooks.signing import github_signature
from tests.builders import run_request
from tests.httpfakes import FakeServer, Request

HOOK_SECRET = "gh-hook-secret-for-tests-7Yq"
ISSUER = "https://token.actions.githubusercontent.com"
AUDIENCE = "api://sandbox-runner-ci"


class Keys:
    """An RSA key set the fake GitHub publishes as its JWKS; ``rotate`` swaps in a new key."""

    def __init__(self) -> None:
        self.current: tuple[str, Any] = ("", None)
        self.rotate()

    def rotate(self) -> None:
        kid = uuid.uuid4().hex
        self.current = (kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwks(self) -> dict[str, Any]:
        kid, key = self.current
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        return {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "RS256"}]}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "repo:octo/app:ref:refs/heads/main",
            "repository": "octo/app",
            "repository_owner": "octo",
            "ref": "refs/heads/main",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            **claims,
        }
        kid, key = self.current
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[FakeServer]:
    server = FakeServer(lambda req: (200, keys.jwks()))
    yield server
    server.close()


@pytest.fixture
def app(
    settings_env: dict[str, str],
    pool: ConnectionPool,
    jwks_server: FakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Flask]:
    monkeypatch.setenv("SANDBOX_TEST_GITHUB_HOOK_SECRET", HOOK_SECRET)
    rules = tmp_path / "oidc-rules.toml"
    rules.write_text(
        '[[rule]]\nrepository = "octo/app"\nref = "refs/heads/main"\n'
        'roles = ["Runs.Submit", "Runs.Read"]\n'
        '[[rule]]\nrepository = "octo/deploy"\nenvironment = "production"\n'
    )
    settings = load_settings(
        {
            **settings_env,
            "SANDBOX_GITHUB_WEBHOOK_SECRET_REF": "env:SANDBOX_TEST_GITHUB_HOOK_SECRET",
            "SANDBOX_GITHUB_OIDC_AUDIENCE": AUDIENCE,
            "SANDBOX_GITHUB_OIDC_JWKS_URL": f"{jwks_server.url}/.well-known/jwks",
            "SANDBOX_GITHUB_OIDC_RULES_FILE": str(rules),
            "SANDBOX_GITHUB_OIDC_JWKS_COOLDOWN_S": "0",
        }
    )
    app = create_app(settings)
    yield app
    app.extensions["sandbox_runtime"].close()


def deliver(app: Flask, event: str, payload: Any, delivery: str, secret: str = HOOK_SECRET):  # type: ignore[no-untyped-def]
    raw = json.dumps(payload).encode()
    return app.test_client().post(
        "/api/sandbox/webhooks/github",
        data=raw,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": github_signature(secret, raw),
        },
    )


def count_runs(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        return int(conn.execute("SELECT count(*) AS n FROM sandbox_run").fetchone()["n"])  # type: ignore[index]


def test_a_redelivered_dispatch_starts_one_run(app: Flask, pool: ConnectionPool) -> None:
    payload = {
        "action": "sandbox-evaluate",
        "client_payload": run_request(),
        "repository": {"full_name": "octo/app"},
    }
    delivery = str(uuid.uuid4())
    first = deliver(app, "repository_dispatch", payload, delivery)
    assert first.status_code == 202, first.get_json()
    run_id = first.get_json()["id"]
    again = deliver(app, "repository_dispatch", payload, delivery)  # GitHub's "Redeliver"
    assert again.status_code == 202
    assert again.get_json()["id"] == run_id
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count_runs(pool) == 1
    other = deliver(app, "repository_dispatch", payload, str(uuid.uuid4()))
    assert other.get_json()["id"] != run_id and count_runs(pool) == 2


def test_signature_ping_unknown_events_and_bad_payloads(app: Flask, pool: ConnectionPool) -> None:
    bad = deliver(app, "repository_dispatch", {"client_payload": run_request()}, "d1", "wrong")
    assert bad.status_code == 401
    assert bad.get_json()["code"] == 401 and "X-Hub-Signature-256" in bad.get_json()["message"]
    unsigned = app.test_client().post(
        "/api/sandbox/webhooks/github", data=b"{}", headers={"X-GitHub-Event": "ping"}
    )
    assert unsigned.status_code == 401
    assert deliver(app, "ping", {"zen": "Keep it logically awesome."}, "d2").status_code == 200
    ignored = deliver(app, "push", {"ref": "refs/heads/main"}, "d3")
    assert ignored.status_code == 202 and ignored.get_json()["status"] == "ignored"
    invalid = deliver(app, "repository_dispatch", {"client_payload": {"methodId": "x"}}, "d4")
    assert invalid.status_code == 422 and "errors" in invalid.get_json()
    assert count_runs(pool) == 0


def test_actions_oidc_tokens_are_authorized_by_rules(
    app: Flask, keys: Keys, jwks_server: FakeServer
) -> None:
    client = app.test_client()
    unknown = f"/api/sandbox/runs/{uuid.uuid4()}"

    def get(token: str) -> Any:
        return client.get(unknown, headers={"Authorization": f"Bearer {token}"})

    assert get(keys.token()).status_code == 404  # authenticated; the run just does not exist
    submitted = client.post(
        "/api/sandbox/runs",
        json=run_request(),
        headers={"Authorization": f"Bearer {keys.token()}"},
    )
    assert submitted.status_code == 202
    denied = get(keys.token(repository="evil/app", sub="repo:evil/app:ref:refs/heads/main"))
    assert denied.status_code == 403
    assert denied.get_json()["code"] == 403 and "evil/app" in denied.get_json()["message"]
    assert get(keys.token(ref="refs/heads/feature")).status_code == 403
    assert get(keys.token(repository="octo/deploy", environment="production")).status_code == 404
    assert get(keys.token(repository="octo/deploy")).status_code == 403
    assert get(keys.token(aud="api://someone-else")).status_code == 401
    assert get(keys.token(exp=int(time.time()) - 600)).status_code == 401
    forged = Keys()  # right kid, wrong key
    forged.current = (keys.current[0], forged.current[1])
    assert get(forged.token()).status_code == 401
    # GitHub rotates its key: a token with a new kid makes us fetch the JWKS again.
    fetches = len(jwks_server.requests)
    keys.rotate()
    assert get(keys.token()).status_code == 404
    assert len(jwks_server.requests) == fetches + 1
    assert all(
        isinstance(r, Request) and r.path == "/.well-known/jwks" for r in jwks_server.requests
    )
