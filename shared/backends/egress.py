"""Egress for runs the resource policy allows it: a per-run internal network and a proxy.

A run without ``egress`` keeps ``network_mode=none``. A run with it gets, per attempt:

* ``sandbox-<run>-<attempt>-net``: an ``internal`` bridge network, so nothing on it is routed
  anywhere, created with ``com.docker.network.bridge.inhibit_ipv4``. Without that option Docker
  (20.10 at least) gives the host an address on every bridge, and an internal network's
  container can then open connections to any host service listening on all addresses through
  that gateway address (the FORWARD-chain isolation never sees traffic addressed to the host);
  ``tests/security/test_egress.py`` proves the hole is closed. One network per run also keeps
  concurrent runs apart.
* ``sandbox-<run>-<attempt>-egress``: the proxy (``shared/egress_proxy.py``), hardened like a run
  container, on that network and on ``SANDBOX_EGRESS_NETWORK`` (an ordinary bridge), allowing
  only the plan's ``egressAllowHosts``.
* The run container on the internal network only, with ``HTTP(S)_PROXY`` naming the proxy by
  address and the proxy's address as its only DNS server (nothing answers there): the container
  resolves no names, so DNS cannot carry data out; the proxy resolves the allowed ones.

All three carry the run, attempt and fleet labels, so the reconciler finds what a dead executor
left (``remove_orphan_networks``; the proxy goes with the fleet's containers). Docker SDK errors
become BackendError / BackendUnavailable, as in ``shared.backends.docker``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig, Ulimit

from shared.backends import docker as docker_backend
from shared.backends.docker import LABEL_ATTEMPT, LABEL_FLEET, LABEL_RUN, SANDBOX_USER
from shared.config import Settings
from shared.egress_proxy import DEFAULT_PORT, AllowList
from shared.errors import BackendError
from shared.policy import Resources

logger = logging.getLogger(__name__)

# Which part of a run's egress a container or network is (the run container has no role).
LABEL_ROLE = "sandbox-runner.role"
ROLE_PROXY = "egress-proxy"
ROLE_NETWORK = "egress-network"
# Without a bridge address on the host the internal network cannot reach the host at all.
INHIBIT_IPV4 = "com.docker.network.bridge.inhibit_ipv4"
# A run records at most this many refused attempts (the totals count them all).
MAX_RECORDED = 100
PROXY_MEMORY_MB = 64
PROXY_PIDS_LIMIT = 64  # threads count: asyncio's resolver threads need some
PROXY_NANO_CPUS = 500_000_000
PROXY_READY_TIMEOUT_S = 15.0

_ERRORS = (requests.exceptions.RequestException, docker.errors.DockerException)


def plan_network(resources: Resources, allow_hosts: str) -> dict[str, Any]:
    """Return the plan's network entries: ``none``, or ``egress`` with the allow list in force."""
    if not resources.egress:
        return {"network": "none"}
    return {"network": "egress", "egressAllowHosts": AllowList.parse(allow_hosts).entries()}


def network_name(run_id: str, attempt: int) -> str:
    """Return the name of an attempt's internal network."""
    return f"sandbox-{run_id}-{attempt}-net"


def proxy_name(run_id: str, attempt: int) -> str:
    """Return the name of an attempt's proxy container."""
    return f"sandbox-{run_id}-{attempt}-egress"


@dataclass(frozen=True, slots=True)
class EgressAttachment:
    """How a run container joins its network and finds its proxy."""

    network: str
    proxy_ip: str
    port: int = DEFAULT_PORT

    @property
    def proxy_url(self) -> str:
        """Return the proxy's URL, by address: the container cannot resolve names."""
        return f"http://{self.proxy_ip}:{self.port}"

    @property
    def environment(self) -> dict[str, str]:
        """Return the proxy variables, in both spellings clients read."""
        url = self.proxy_url
        return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url}

    def container_options(self) -> dict[str, Any]:
        """Return the engine options that replace ``network_mode="none"``."""
        # The embedded resolver forwards unknown names to these servers only; nothing listens
        # on port 53 of the proxy, so no query leaves, and one quick try keeps failures fast.
        return {
            "network": self.network,
            "dns": [self.proxy_ip],
            "dns_opt": ["timeout:1", "attempts:1"],
        }


def prepare(
    client: docker.DockerClient,
    settings: Settings,
    plan: dict[str, Any] | None,
    spec: docker_backend.ContainerSpec,
) -> docker_backend.ContainerSpec:
    """Return ``spec`` ready to start: unchanged without egress, else with its network and proxy.

    Creates (or, for an attempt taken over, finds) the attempt's network and running proxy, and
    removes what earlier attempts of the run left. Raises BackendError if the proxy cannot run.
    """
    if not plan or plan.get("network") != "egress":
        return spec
    labels = {LABEL_RUN: spec.run_id, LABEL_ATTEMPT: str(spec.attempt), LABEL_FLEET: spec.fleet}
    try:
        _remove_other_attempts(client, spec.run_id, spec.attempt)
        network = _ensure_network(client, network_name(spec.run_id, spec.attempt), labels)
        proxy = _ensure_proxy(client, settings, spec, labels, plan.get("egressAllowHosts") or [])
        if network.name not in (proxy.attrs["NetworkSettings"].get("Networks") or {}):
            network.connect(proxy)
        proxy.reload()
        if proxy.status != "running":
            proxy.start()
        _wait_listening(proxy)
        proxy.reload()
        address = proxy.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
    except docker.errors.ImageNotFound as exc:
        raise BackendError(
            f"the egress proxy image {settings.egress_proxy_image} is not on the Docker engine; "
            "build it (make images)"
        ) from exc
    except _ERRORS as exc:
        raise docker_backend._translate(exc, f"preparing egress for {spec.run_id}") from exc
    return dataclasses.replace(spec, egress=EgressAttachment(network.name, address))


def collect(
    client: docker.DockerClient,
    plan: dict[str, Any] | None,
    run_id: str,
    attempt: int,
    redact: Callable[[Any], Any],
) -> dict[str, Any] | None:
    """Stop the attempt's proxy and return what it refused, redacted (None: a run without egress).

    Call it once the run container has ended. It never raises: a proxy that cannot be read is
    recorded as ``proxyLogMissing`` rather than failing a finished run.
    """
    if not plan or plan.get("network") != "egress":
        return None
    record: dict[str, Any] = {"denied": [], "deniedTotal": 0, "allowedTotal": 0}
    try:
        proxy = _get_container(client, proxy_name(run_id, attempt))
        if proxy is None:
            record["proxyLogMissing"] = True
            return record
        # The engine copies a stopped container's output to its log before it reports the stop,
        # so after this every decision the proxy printed can be read.
        proxy.stop(timeout=1)
        totals: dict[str, Any] = {}
        for entry in _decisions(proxy.logs(stdout=True, stderr=False, stream=True)):
            totals = entry
            if entry.get("decision") == "deny":
                record["denied"].append(_denied(entry))
                if len(record["denied"]) >= MAX_RECORDED:
                    break
        if len(record["denied"]) >= MAX_RECORDED:
            for entry in _decisions(iter([proxy.logs(stdout=True, stderr=False, tail=5)])):
                totals = entry
        record["deniedTotal"] = int(totals.get("denied") or 0)
        record["allowedTotal"] = int(totals.get("allowed") or 0)
    except (*_ERRORS, ValueError) as exc:
        logger.warning(
            "egress proxy log unreadable: %s", type(exc).__name__, extra={"runId": run_id}
        )
        record["proxyLogMissing"] = True
    # Host names are what a run chose to send out: a secret may be spelt into one.
    redacted: dict[str, Any] = redact(record)
    return redacted


def remove(client: docker.DockerClient, run_id: str, attempt: int) -> None:
    """Remove an attempt's proxy and network (gone already is fine; failures are logged)."""
    proxy = _get_container(client, proxy_name(run_id, attempt), quiet=True)
    if proxy is not None:
        docker_backend.remove_labelled(proxy)
    _remove_networks(
        client, {"label": [f"{LABEL_RUN}={run_id}", f"{LABEL_ATTEMPT}={attempt}"]}, lambda _n: True
    )


def remove_orphan_networks(
    client: docker.DockerClient,
    fleet: str,
    live_attempts: Callable[[list[str]], dict[str, int]],
) -> int:
    """Remove this fleet's egress networks whose run is over, unknown or on another attempt.

    ``live_attempts`` maps run ids to the current attempt of those still going. Call it after
    the orphan containers went: a network with a container still attached stays for next time.
    """
    try:
        networks = client.networks.list(
            filters={"label": [f"{LABEL_FLEET}={fleet}", f"{LABEL_ROLE}={ROLE_NETWORK}"]}
        )
    except _ERRORS as exc:
        raise docker_backend._translate(exc, "listing egress networks") from exc
    if not networks:
        return 0
    live = live_attempts(sorted({_labels(n).get(LABEL_RUN, "") for n in networks}))

    def orphaned(network: Any) -> bool:
        labels = _labels(network)
        return live.get(labels.get(LABEL_RUN, "")) != _int(labels.get(LABEL_ATTEMPT))

    return sum(_remove_network(n) for n in networks if orphaned(n))


def _ensure_network(client: docker.DockerClient, name: str, labels: dict[str, str]) -> Any:
    found = _find_network(client, name, labels)
    if found is not None:
        return found
    try:
        return client.networks.create(
            name,
            driver="bridge",
            internal=True,
            check_duplicate=True,
            options={INHIBIT_IPV4: "true"},
            labels={**labels, LABEL_ROLE: ROLE_NETWORK},
        )
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
    found = _find_network(client, name, labels)  # created meanwhile by a redelivered task
    if found is None:
        raise BackendError(f"network {name} exists but cannot be found")
    return found


def _find_network(client: docker.DockerClient, name: str, labels: dict[str, str]) -> Any | None:
    for network in client.networks.list(
        filters={"label": [f"{key}={value}" for key, value in labels.items()]}
    ):
        if network.name == name:
            network.reload()
            return network
    return None


def _ensure_proxy(
    client: docker.DockerClient,
    settings: Settings,
    spec: docker_backend.ContainerSpec,
    labels: dict[str, str],
    allow_hosts: list[str],
) -> Any:
    name = proxy_name(spec.run_id, spec.attempt)
    found = _get_container(client, name)
    if found is not None:
        return found
    try:
        return client.containers.create(
            settings.egress_proxy_image,
            command=["--allow", ",".join(allow_hosts), "--port", str(DEFAULT_PORT)],
            name=name,
            labels={**labels, LABEL_ROLE: ROLE_PROXY},
            network=settings.egress_network,
            # The same hardening as a run container (shared/backends/docker.py _create).
            user=SANDBOX_USER,
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            privileged=False,
            ipc_mode="private",
            nano_cpus=PROXY_NANO_CPUS,
            mem_limit=f"{PROXY_MEMORY_MB}m",
            memswap_limit=f"{PROXY_MEMORY_MB}m",
            pids_limit=PROXY_PIDS_LIMIT,
            ulimits=[Ulimit(name="nofile", soft=spec.nofile_limit, hard=spec.nofile_limit)],
            detach=True,
            # Bounded: a run hammering the proxy cannot fill the disk with decision lines (the
            # running totals on every line survive rotation).
            log_config=LogConfig(type="json-file", config={"max-size": "8m", "max-file": "2"}),
        )
    except docker.errors.APIError as exc:
        if exc.status_code == 409 and "already in use" in str(exc):
            again = _get_container(client, name)
            if again is not None:
                return again
        raise


def _wait_listening(proxy: Any) -> None:
    """Wait for the proxy's ``listening`` line, so the run's first request finds it ready."""
    deadline = time.monotonic() + PROXY_READY_TIMEOUT_S
    while True:
        out = proxy.logs(stdout=True, stderr=True)
        if b'"event":"listening"' in out:
            return
        proxy.reload()
        if proxy.status in ("exited", "dead") or time.monotonic() > deadline:
            tail = out.decode(errors="replace")[-300:]
            raise BackendError(f"the egress proxy did not start ({proxy.status}): {tail}")
        time.sleep(0.05)


def _decisions(chunks: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """Yield the proxy's decision lines (its other lines and any garbage are skipped)."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            entry = _parse(line)
            if entry is not None:
                yield entry
    entry = _parse(buffer)
    if entry is not None:
        yield entry


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "decision" in entry else None


def _denied(entry: dict[str, Any]) -> dict[str, Any]:
    kept = {key: entry.get(key) for key in ("host", "port", "method", "time")}
    if entry.get("reason"):
        kept["reason"] = entry["reason"]
    return kept


def _get_container(client: docker.DockerClient, name: str, quiet: bool = False) -> Any | None:
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None
    except _ERRORS as exc:
        if quiet:
            logger.warning("cannot look up container %s: %s", name, type(exc).__name__)
            return None
        raise


def _remove_other_attempts(client: docker.DockerClient, run_id: str, attempt: int) -> None:
    """Remove earlier attempts' containers (run and proxy), then their networks."""
    for old in docker_backend.list_labelled(client, {"label": f"{LABEL_RUN}={run_id}"}):
        if docker_backend.labels_of(old).get(LABEL_ATTEMPT) != str(attempt):
            docker_backend.remove_labelled(old)
    _remove_networks(
        client,
        {"label": f"{LABEL_RUN}={run_id}"},
        lambda n: _labels(n).get(LABEL_ATTEMPT) != str(attempt),
    )


def _remove_networks(
    client: docker.DockerClient, filters: dict[str, Any], which: Callable[[Any], bool]
) -> None:
    try:
        networks = client.networks.list(filters=filters)
    except _ERRORS:
        logger.warning("cannot list egress networks; the reconciler will remove them")
        return
    for network in networks:
        if which(network):
            _remove_network(network)


def _remove_network(network: Any) -> bool:
    try:
        network.remove()
        return True
    except docker.errors.NotFound:
        return False
    except _ERRORS:
        logger.warning("could not remove network %s", network.name, exc_info=True)
        return False


def _labels(network: Any) -> dict[str, str]:
    return network.attrs.get("Labels") or {}


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
