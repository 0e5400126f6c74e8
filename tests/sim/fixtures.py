"""Pytest fixtures for the Azure simulators (import the ones a test module needs)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sim.aci_sim import AciSimulator
from tests.sim.amqp_sim import AmqpSimulator
from tests.sim.keyvault_sim import KeyVaultSimulator
from tests.sim.tls import Tls, make_tls


@pytest.fixture(scope="session")
def sim_tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("sim-tls"))


@pytest.fixture(scope="session")
def aci_sim_session(sim_tls: Tls) -> Iterator[AciSimulator]:
    sim = AciSimulator(sim_tls).start()
    yield sim
    sim.stop()


@pytest.fixture
def aci_sim(aci_sim_session: AciSimulator) -> Iterator[AciSimulator]:
    """The session's ARM simulator, emptied and without faults for each test."""
    aci_sim_session.reset()
    yield aci_sim_session
    aci_sim_session.reset()


@pytest.fixture(scope="session")
def amqp_sim_session() -> Iterator[AmqpSimulator]:
    sim = AmqpSimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def amqp_sim(amqp_sim_session: AmqpSimulator) -> Iterator[AmqpSimulator]:
    """The session's AMQP simulator (Event Hubs, Service Bus), emptied and without faults."""
    amqp_sim_session.reset()
    yield amqp_sim_session
    assert not amqp_sim_session.errors, amqp_sim_session.errors  # the simulator's own bugs
    amqp_sim_session.reset()


def aci_env(sim: AciSimulator, tls: Tls) -> dict[str, str]:
    """Settings that point the real ARM client at the simulator."""
    return {
        "SANDBOX_ACI_BASE_URL": sim.base_url,
        "SANDBOX_ACI_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
        "SANDBOX_ACI_RESOURCE_GROUP": "sandbox-runs",
        "SANDBOX_ACI_IDENTITY_ID": (
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/sandbox/"
            "providers/Microsoft.ManagedIdentity/userAssignedIdentities/sandbox-runner"
        ),
        "SANDBOX_ACI_REGISTRY_SERVER": "sandboxrunner.azurecr.io",
        "SANDBOX_AZURE_CA_BUNDLE": str(tls.ca),
        "SANDBOX_AZURE_CREDENTIAL": "tests.sim.credential:SimulatorCredential",
        "SANDBOX_ACI_RETRY_TOTAL": "1",
        "SANDBOX_ACI_POLL_INTERVAL_S": "0.2",
        "SANDBOX_ACI_POLL_MAX_INTERVAL_S": "0.5",
    }


@pytest.fixture
def keyvault_sim(sim_tls: Tls, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyVaultSimulator]:
    """A Key Vault simulator; ``*.sim.test`` resolves to 127.0.0.1 in this process."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".sim.test"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    sim = KeyVaultSimulator(sim_tls).start()
    yield sim
    sim.stop()
