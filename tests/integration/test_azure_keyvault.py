"""The Key Vault secret provider: the real SecretClient against the Key Vault simulator."""

from __future__ import annotations

import dataclasses

import pytest

from shared.config import Settings
from shared.secrets import KeyVaultSecretProvider, SecretError, provider_for
from tests.sim.credential import SimulatorCredential
from tests.sim.fixtures import keyvault_sim, sim_tls  # noqa: F401
from tests.sim.keyvault_sim import KeyVaultSimulator
from tests.sim.tls import Tls


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _provider(
    sim: KeyVaultSimulator, tls: Tls, clock: Clock, made: list[SimulatorCredential]
) -> KeyVaultSecretProvider:
    def factory() -> SimulatorCredential:
        made.append(SimulatorCredential())
        return made[-1]

    return KeyVaultSecretProvider(
        sim.url(), factory, ttl_s=60, connection_verify=str(tls.ca), clock=clock
    )


def test_reads_through_the_challenge_and_caches_for_the_ttl(
    keyvault_sim: KeyVaultSimulator,  # noqa: F811
    sim_tls: Tls,  # noqa: F811
) -> None:
    keyvault_sim.secrets["hook-key"] = "v1-secret"
    clock, made = Clock(), []
    provider = _provider(keyvault_sim, sim_tls, clock, made)
    assert provider.get("kv:hook-key") == "v1-secret"
    assert made[0].requests, "the SDK asked the credential for a token after the challenge"
    keyvault_sim.secrets["hook-key"] = "v2-secret"
    assert provider.get("kv:hook-key") == "v1-secret"  # cached
    assert keyvault_sim.reads == ["hook-key"]
    clock.now += 61
    assert provider.get("kv:hook-key") == "v2-secret"  # TTL over: read again
    keyvault_sim.secrets["hook-key"] = "v3-secret"
    provider.invalidate("kv:hook-key")  # its use failed: rotated
    assert provider.get("kv:hook-key") == "v3-secret"


def test_a_refused_credential_is_replaced_once(
    keyvault_sim: KeyVaultSimulator,  # noqa: F811
    sim_tls: Tls,  # noqa: F811
) -> None:
    keyvault_sim.secrets["k"] = "value"
    made: list[SimulatorCredential] = []
    provider = _provider(keyvault_sim, sim_tls, Clock(), made)
    keyvault_sim.reject_tokens = 1
    assert provider.get("kv:k") == "value"
    assert len(made) == 2  # the client was rebuilt with a fresh credential


def test_errors_never_carry_values(
    keyvault_sim: KeyVaultSimulator,  # noqa: F811
    sim_tls: Tls,  # noqa: F811
) -> None:
    provider = _provider(keyvault_sim, sim_tls, Clock(), [])
    with pytest.raises(SecretError, match="not in the vault"):
        provider.get("kv:missing")
    with pytest.raises(SecretError):
        provider.get("env:NOPE")
    keyvault_sim.secrets["k"] = "value"
    keyvault_sim.reject_tokens = 10
    with pytest.raises(SecretError, match="refused") as info:
        provider.get("kv:k")
    assert "value" not in str(info.value)


def test_provider_for_routes_kv_refs_to_the_vault(
    settings: Settings,
    keyvault_sim: KeyVaultSimulator,  # noqa: F811
    sim_tls: Tls,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keyvault_sim.secrets["gh"] = "vault-value"
    monkeypatch.setenv("SANDBOX_TEST_ONLY_SECRET", "env-value")
    configured = dataclasses.replace(
        settings,
        keyvault_url=keyvault_sim.url(),
        azure_ca_bundle=sim_tls.ca,
        azure_credential="tests.sim.credential:SimulatorCredential",
    )
    provider = provider_for(configured)
    assert provider.get("kv:gh") == "vault-value"
    assert provider.get("env:SANDBOX_TEST_ONLY_SECRET") == "env-value"
    assert type(provider_for(settings)).__name__ == "EnvFileSecretProvider"
