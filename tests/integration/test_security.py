"""Identity, roles, resource policy admin and API hardening (issue 6), against real Postgres.

"Entra ID" is a tiny threaded HTTP server on 127.0.0.1 serving a discovery document and a JWKS
with keys this test generates; tokens are signed here as Entra would sign them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from psycopg_pool import ConnectionPool

from services.api.app import create_app
from shared.auth import issue_token
from shared.config import Settings
from shared.policy import Resources
from tests.builders import PERSONA, run_request

TENANT = "8f0b5c1e-2d3a-4b6c-9e7f-0a1b2c3d4e5f"
CLIENT_ID = "3c9d7e21-5a4b-4c3d-8e2f-1a0b9c8d7e6f"
APP_ID_URI = "api://sandbox-runner-test"
ALL = ["Runs.Submit", "Runs.Read", "Runs.Cancel", "Runs.Admin"]


class FakeEntra:
    """Discovery + JWKS on 127.0.0.1; ``rotate()`` swaps the signing key."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, Any]] = []
        self.jwks_hits = 0
        self.rotate()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == f"/{TENANT}/v2.0/.well-known/openid-configuration":
                    body = {
                        "issuer": f"http://127.0.0.1:{outer.port}/{{tenantid}}/v2.0",
                        "jwks_uri": f"http://127.0.0.1:{outer.port}/{TENANT}/discovery/v2.0/keys",
                    }
                elif self.path == f"/{TENANT}/discovery/v2.0/keys":
                    outer.jwks_hits += 1
                    body = {"keys": [outer.jwk(kid, key) for kid, key in outer.keys]}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def jwk(kid: str, key: Any) -> dict[str, Any]:
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        return {**data, "kid": kid, "use": "sig"}

    def rotate(self) -> str:
        kid = f"k{len(self.keys) + 1}"
        self.keys = [(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))]
        return kid

    @property
    def authority(self) -> str:
        return f"http://127.0.0.1:{self.port}/{TENANT}"

    def token(
        self, *, version: int = 2, key: Any = None, kid: str | None = None, **claims: Any
    ) -> str:
        now = int(time.time())
        iss = f"{self.authority}/v2.0" if version == 2 else f"https://sts.windows.net/{TENANT}/"
        body = {
            "iss": iss,
            "aud": CLIENT_ID if version == 2 else APP_ID_URI,
            "sub": "entra-app",
            "tid": TENANT,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "roles": ALL,
            **claims,
        }
        current_kid, current_key = self.keys[-1]
        return jwt.encode(
            body, key or current_key, algorithm="RS256", headers={"kid": kid or current_kid}
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def entra() -> Iterator[FakeEntra]:
    server = FakeEntra()
    yield server
    server.close()


@pytest.fixture
def entra_settings(settings: Settings, entra: FakeEntra) -> Settings:
    return dataclasses.replace(
        settings,
        entra_tenant_id=TENANT,
        entra_authority=entra.authority,
        entra_client_id=CLIENT_ID,
        entra_app_id_uri=APP_ID_URI,
        jwks_cooldown_s=0.0,
    )


@pytest.fixture
def client(
    entra_settings: Settings, pool: ConnectionPool, database_url: str
) -> Iterator[FlaskClient]:
    app = create_app(entra_settings)
    yield app.test_client()
    app.extensions["sandbox_runtime"].close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE resource_policy")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_entra_v1_and_v2_tokens_are_accepted(client: FlaskClient, entra: FakeEntra) -> None:
    for version in (1, 2):
        response = client.get("/api/sandbox/runs", headers=bearer(entra.token(version=version)))
        assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": "api://someone-else"}, "token audience is not this API"),
        ({"exp": int(time.time()) - 3600}, "token expired"),
        (
            {"iss": "https://login.microsoftonline.com/other-tenant/v2.0"},
            "token issuer is not trusted",
        ),
        ({"iss": f"https://sts.windows.net/{uuid.uuid4()}/"}, "token issuer is not trusted"),
    ],
)
def test_bad_entra_tokens_are_401_and_say_why(
    client: FlaskClient, entra: FakeEntra, claims: dict[str, Any], message: str
) -> None:
    token = entra.token(**claims)
    response = client.get("/api/sandbox/runs", headers=bearer(token))
    assert response.status_code == 401
    assert response.get_json() == {"code": 401, "status": "Unauthorized", "message": message}
    assert response.headers["WWW-Authenticate"].startswith("Bearer error=")
    assert token not in response.get_data(as_text=True)


def test_a_token_signed_by_another_key_is_401(client: FlaskClient, entra: FakeEntra) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (entra.token(key=stranger), entra.token(key=stranger, kid="unknown")):
        response = client.get("/api/sandbox/runs", headers=bearer(token))
        assert (response.status_code, response.get_json()["message"]) == (
            401,
            "token signature is invalid",
        )


def test_key_rotation_is_picked_up_on_an_unknown_kid(client: FlaskClient, entra: FakeEntra) -> None:
    assert client.get("/api/sandbox/runs", headers=bearer(entra.token())).status_code == 200
    hits = entra.jwks_hits
    assert client.get("/api/sandbox/runs", headers=bearer(entra.token())).status_code == 200
    assert entra.jwks_hits == hits, "the key set is cached"
    old = entra.token()
    entra.rotate()
    assert client.get("/api/sandbox/runs", headers=bearer(entra.token())).status_code == 200
    assert entra.jwks_hits == hits + 1, "an unknown kid refetches the key set"
    assert client.get("/api/sandbox/runs", headers=bearer(old)).status_code == 401


def test_roles_are_enforced_per_endpoint(
    client: FlaskClient, entra: FakeEntra, settings: Settings
) -> None:
    reader = bearer(entra.token(roles=["Runs.Read"]))
    submitter = bearer(entra.token(roles=["Runs.Submit"]))
    created = client.post("/api/sandbox/runs", json=run_request(dryRun=True), headers=submitter)
    assert created.status_code == 202
    run = f"/api/sandbox/runs/{created.get_json()['id']}"
    assert client.get(run, headers=reader).status_code == 200
    response = client.post("/api/sandbox/runs", json=run_request(), headers=reader)
    assert response.status_code == 403
    assert "'submit'" in response.get_json()["message"]
    assert client.get(run, headers=submitter).status_code == 403
    assert client.post(f"{run}/cancel", headers=reader).status_code == 403
    assert (
        client.post(f"{run}/cancel", headers=bearer(entra.token(roles=["Runs.Cancel"]))).status_code
        == 200
    )
    assert client.get("/api/sandbox/runs", headers=bearer(entra.token(roles=[]))).status_code == 403
    # Admin endpoints need admin; admin implies every other permission.
    assert client.get("/api/sandbox/admin/policies", headers=reader).status_code == 403
    admin = bearer(entra.token(roles=["Runs.Admin"]))
    assert client.get("/api/sandbox/admin/policies", headers=admin).status_code == 200
    assert client.get(run, headers=admin).status_code == 200
    # Dev tokens get every role by default, and only the roles asked for otherwise.
    dev_reader = bearer(issue_token(settings, roles=("Runs.Read",)))
    assert client.get("/api/sandbox/admin/policies", headers=dev_reader).status_code == 403
    assert (
        client.get("/api/sandbox/admin/policies", headers=bearer(issue_token(settings))).status_code
        == 200
    )


def test_the_dev_issuer_serves_discovery_and_jwks(client: FlaskClient, settings: Settings) -> None:
    doc = client.get("/.well-known/openid-configuration").get_json()
    assert doc["issuer"] == settings.dev_issuer
    assert doc["jwks_uri"] == f"{settings.dev_issuer}/.well-known/jwks.json"
    keys = client.get("/.well-known/jwks.json").get_json()["keys"]
    token = issue_token(settings)
    assert [k["kid"] for k in keys] == [jwt.get_unverified_header(token)["kid"]]
    key = jwt.PyJWK(keys[0]).key
    assert jwt.decode(token, key, algorithms=["RS256"], audience=settings.audience)["roles"] == ALL


def test_policy_admin_round_trip(
    client: FlaskClient, entra: FakeEntra, entra_settings: Settings
) -> None:
    admin = bearer(entra.token(roles=["Runs.Admin"]))
    base = "/api/sandbox/admin/policies"
    url = f"{base}/personas/{PERSONA}/methods/test.run"
    created = client.put(url, json={"memoryMb": 512, "timeoutS": 45}, headers=admin)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["limits"] == {"memoryMb": 512, "timeoutS": 45}
    assert client.put(url, json={"memoryMb": 768}, headers=admin).status_code == 200
    assert (
        client.put(f"{base}/methods/test.*", json={"cpu": 0.25}, headers=admin).status_code == 201
    )
    listed = client.get(base, headers=admin).get_json()
    assert [(e["scope"], e["method"]) for e in listed["entries"]] == [
        ("method", "test.*"),
        ("persona", "test.run"),
    ]
    resolved = client.get(
        f"{base}/resolve",
        query_string={"personaId": PERSONA, "methodId": "test.run"},
        headers=admin,
    ).get_json()["resources"]
    # tests/policy.toml gives test.* 0.5 cpu, 256 MiB, 20 s; the rows lie over it.
    assert resolved == {"cpu": 0.25, "memoryMb": 768, "timeoutS": 20, "logCapMb": 100}
    # A run's provisioning resolves the same (the provisioner calls Runtime.policy.resolve).
    from shared.runtime import Runtime

    rt = Runtime(entra_settings)
    try:
        assert rt.policy.resolve(PERSONA, "test.run", None) == Resources(0.25, 768, 20, 100)
        assert rt.policy.resolve(str(uuid.uuid4()), "test.run", {"timeout_s": 30}) == Resources(
            0.25, 256, 30, 100
        )
    finally:
        rt.close()
    # Beyond a guardrail: 422 naming the limit; nothing stored.
    response = client.put(url, json={"memoryMb": 8192}, headers=admin)
    assert response.status_code == 422
    assert "memory_mb 8192 exceeds the guardrail 4096" in response.get_json()["message"]
    assert "memoryMb" in response.get_json()["errors"]["json"]
    assert client.get(url, headers=admin).get_json()["limits"] == {"memoryMb": 768}
    assert client.put(f"{base}/defaults", json={}, headers=admin).status_code == 422
    assert client.delete(url, headers=admin).status_code == 204
    assert client.delete(url, headers=admin).status_code == 404
    assert client.get(url, headers=admin).status_code == 404


def test_responses_carry_security_headers_and_no_cors(
    client: FlaskClient, settings: Settings
) -> None:
    for path, headers in [
        ("/api/sandbox/runs", bearer(issue_token(settings))),
        ("/api/sandbox/runs", {}),
        ("/api/openapi.json", {}),
        ("/healthz", {}),
    ]:
        response = client.get(path, headers={**headers, "Origin": "https://evil.example"})
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert response.headers["Cache-Control"] == "no-store"
        assert not [h for h in response.headers.keys() if h.lower().startswith("access-control-")]


def test_non_json_bodies_are_415(
    client: FlaskClient, settings: Settings, pool: ConnectionPool
) -> None:
    auth = bearer(issue_token(settings))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = client.post(
            "/api/sandbox/runs",
            data=json.dumps(run_request()),
            headers={**auth, "Content-Type": content_type},
        )
        assert response.status_code == 415
        assert response.get_json()["code"] == 415
    assert (
        client.post("/api/sandbox/runs", json=run_request(dryRun=True), headers=auth).status_code
        == 202
    )


def test_callers_over_the_rate_limit_get_429(
    entra_settings: Settings, pool: ConnectionPool, entra: FakeEntra
) -> None:
    limit = 3
    settings = dataclasses.replace(entra_settings, rate_limit_per_minute=limit)
    app: Flask = create_app(settings)
    client = app.test_client()
    try:
        # Fixed windows: 2 * limit + 1 requests cannot all fit under the limit, even across a
        # window boundary.
        for who in (bearer(entra.token(sub=f"caller-{uuid.uuid4()}")), {}):
            codes = [
                client.get(
                    "/api/sandbox/runs",
                    headers=who,
                    environ_base={"REMOTE_ADDR": f"127.0.0.{2 + len(who)}"},
                )
                for _ in range(2 * limit + 1)
            ]
            limited = [r for r in codes if r.status_code == 429]
            assert limited, [r.status_code for r in codes]
            assert int(limited[0].headers["Retry-After"]) >= 1
            assert "rate limit" in limited[0].get_json()["message"]
    finally:
        app.extensions["sandbox_runtime"].close()
