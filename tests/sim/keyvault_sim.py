"""A local simulator of the Key Vault secrets REST API (GET /secrets/{name}[/{version}]).

HTTPS on 127.0.0.1 with the test CA, and Key Vault's challenge-based auth: a request without a
token gets 401 and a ``WWW-Authenticate`` challenge naming the resource, exactly what the real
``SecretClient`` expects before it asks its credential for a token. Tests reach it as
``https://<vault>.vault.sim.test:<port>`` (resolved to 127.0.0.1 by the test), because the SDK
checks that the vault's host lies under the challenge's resource domain.
``reject_tokens`` makes the next N authenticated requests fail with 401 (a revoked token).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.sim import serving
from tests.sim.credential import TOKEN
from tests.sim.tls import Tls

# The SDK checks the vault's host:port lies under the resource's: the port is part of it here.
RESOURCE = "https://vault.sim.test"


@dataclass
class KeyVaultSimulator:
    tls: Tls
    secrets: dict[str, str] = field(default_factory=dict)
    reject_tokens: int = 0
    reads: list[str] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def url(self, vault: str = "myvault") -> str:
        return f"https://{vault}.vault.sim.test:{self.port}"

    def start(self) -> KeyVaultSimulator:
        sim = self

        class Handler(_Handler):
            simulator = sim

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = self.tls.server_context().wrap_socket(
            self._server.socket, server_side=True
        )
        self.port = serving.serve_in_background(self._server, "kv-sim")
        return self

    def stop(self) -> None:
        serving.stop(self._server)


class _Handler(BaseHTTPRequestHandler):
    simulator: KeyVaultSimulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        sim = self.simulator
        challenge = {
            "WWW-Authenticate": f'Bearer authorization="https://login.sim.test/tenant", '
            f'resource="{RESOURCE}:{sim.port}"'
        }
        auth = self.headers.get("Authorization")
        if auth != f"Bearer {TOKEN}" or sim.reject_tokens > 0:
            if auth is not None and sim.reject_tokens > 0:
                sim.reject_tokens -= 1
            return self._send(401, {"error": {"code": "Unauthorized", "message": "no"}}, challenge)
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) < 2 or parts[0] != "secrets" or parts[1] not in sim.secrets:
            return self._send(404, {"error": {"code": "SecretNotFound", "message": "not found"}})
        name = parts[1]
        sim.reads.append(name)
        host = self.headers.get("Host", "")
        self._send(
            200,
            {
                "value": sim.secrets[name],
                "id": f"https://{host}/secrets/{name}/{uuid.uuid4().hex}",
                "attributes": {"enabled": True},
            },
        )
