"""A TokenCredential for the simulators: hands out a fixed token the simulators accept.

Named in ``SANDBOX_AZURE_CREDENTIAL=tests.sim.credential:SimulatorCredential`` for fleet
processes; production uses DefaultAzureCredential (managed identity) instead.
"""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo

TOKEN = "sim-token"


class SimulatorCredential:
    """Return ``sim-token`` for any scope; count the requests (tests check the auth path ran)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.requests.append(scopes)
        return AccessToken(TOKEN, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.requests.append(scopes)
        return AccessTokenInfo(TOKEN, int(time.time()) + 3600)

    def close(self) -> None:
        pass
