"""Run one adapter container as an Azure Container Instances container group.

One group per attempt (``sandbox-<run>-<attempt>``), restart policy Never, Linux, requests equal
to limits, the input in a secret volume, a user-assigned managed identity that also pulls from
ACR, no public IP. Creating never waits for the group: the caller polls ``get`` from a retrying
task. Azure SDK exceptions stop here: callers see BackendUnavailable (throttled, quota, 5xx,
unreachable: retry later), ImageNotFound or BackendError.
"""

from __future__ import annotations

import base64
import importlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.containerinstance import models as m

from shared.backends.docker import INPUT_DIR, INPUT_PATH
from shared.errors import BackendError, BackendUnavailable, ImageNotFound
from shared.policy import Resources

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient

    from shared.config import Settings

logger = logging.getLogger(__name__)

CONTAINER = "adapter"
INPUT_VOLUME = "sandbox-input"
TAG_RUN = "sandbox-runner.run-id"
TAG_ATTEMPT = "sandbox-runner.attempt"
TAG_FLEET = "sandbox-runner.fleet"
# ARM error codes that mean "not now": retry later (or, under `auto`, run on Docker instead).
_CAPACITY_CODES = frozenset(
    {
        "ContainerGroupQuotaReached",
        "QuotaExceeded",
        "StandardCoresQuotaReached",
        "ServiceUnavailable",
        "SkuNotAvailable",
        "ResourceRequestsThrottled",
        "MaxContainerGroupsPerSubscriptionReached",
    }
)
# What the logs API returns (the tail of the container's log): 4 MB while the container runs,
# the last 16 KB or 1,000 lines once it has stopped (ACI's documented limits).
LOG_BYTES_RUNNING = 4 * 1024 * 1024
LOG_BYTES_STOPPED = 16 * 1024
LOG_LINES_STOPPED = 1000
_PULL_ERRORS = ("InaccessibleImage", "RegistryErrorResponse", "ErrImagePull", "Failed to pull")


class AciCapacity(BackendUnavailable):
    """ACI refused for capacity: throttled (429), out of quota, or the service is unavailable."""


@dataclass(frozen=True, slots=True)
class AciConfig:
    """Where container groups go and what they run as."""

    subscription_id: str
    resource_group: str
    location: str
    fleet: str
    identity_id: str | None = None
    registry_server: str | None = None
    subnet_id: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AciConfig | None:
        """Return the ACI target the settings name, or None when ACI is not configured."""
        if not settings.aci_subscription_id or not settings.aci_resource_group:
            return None
        return cls(
            subscription_id=settings.aci_subscription_id,
            resource_group=settings.aci_resource_group,
            location=settings.aci_location,
            fleet=settings.fleet_name,
            identity_id=settings.aci_identity_id,
            # Default: the registry the image policy allows (SANDBOX_ACR_LOGIN_SERVER).
            registry_server=settings.aci_registry_server
            or getattr(settings, "acr_login_server", None)
            or None,
            subnet_id=settings.aci_subnet_id,
        )


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """Everything needed to create one attempt's container group."""

    run_id: str
    attempt: int
    method_id: str
    image: str
    input_json: bytes
    resources: Resources
    secure_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GroupState:
    """What ARM says about a group: provisioning, the container's state, exit code, events."""

    provisioning_state: str | None
    group_state: str | None
    container_state: str | None
    exit_code: int | None
    detail_status: str | None
    started_at: datetime | None
    finished_at: datetime | None
    events: tuple[str, ...] = ()

    @property
    def terminated(self) -> bool:
        """Tell whether the adapter ran and stopped (the one-shot job's done signal)."""
        return self.container_state == "Terminated" and self.exit_code is not None

    @property
    def oom_killed(self) -> bool:
        """Tell whether ACI reports an OOM kill (its nearest equivalent of Docker's OOMKilled)."""
        text = " ".join((self.detail_status or "", *self.events)).lower()
        return self.exit_code == 137 and ("oom" in text or "memory" in text)

    def failure(self) -> BackendError | None:
        """Return why the group cannot run (provisioning failed, image pull error), or None."""
        pull = [e for e in self.events if any(code in e for code in _PULL_ERRORS)]
        if pull:
            return ImageNotFound(f"ACI could not pull the image: {pull[-1]}")
        if self.provisioning_state == "Failed" and not self.terminated:
            detail = self.events[-1] if self.events else (self.detail_status or "no detail")
            return BackendError(f"ACI provisioning failed: {detail}")
        return None


def group_name(run_id: str, attempt: int) -> str:
    """Return the one name an attempt's group can have (lowercase, <= 63 characters)."""
    return f"sandbox-{run_id}-{attempt}".lower()


def credential(settings: Settings) -> TokenCredential:
    """Return the credential the settings name: DefaultAzureCredential, or a factory's.

    ``SANDBOX_AZURE_CREDENTIAL=module:callable`` names a factory (the tests' simulator
    credential); the default picks the managed identity ``SANDBOX_AZURE_CLIENT_ID`` in Azure.
    """
    if settings.azure_credential in ("", "default"):
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
    module, _, attr = settings.azure_credential.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    return factory()  # type: ignore[no-any-return]


def connect(
    settings: Settings, cred: TokenCredential | None = None
) -> ContainerInstanceManagementClient:
    """Return an ARM client for container groups (nothing is sent until the first call)."""
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient

    if not settings.aci_subscription_id:
        raise BackendError("ACI is not configured (SANDBOX_ACI_SUBSCRIPTION_ID)")
    kwargs: dict[str, Any] = {"retry_total": settings.aci_retry_total}
    if settings.azure_ca_bundle is not None:
        kwargs["connection_verify"] = str(settings.azure_ca_bundle)
    return ContainerInstanceManagementClient(
        cred or credential(settings),
        settings.aci_subscription_id,
        base_url=settings.aci_base_url,
        **kwargs,
    )


def _translate(exc: Exception, what: str) -> BackendError:
    """Turn an Azure SDK exception into the project's tree; the message names the ARM code."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return BackendUnavailable(f"ACI unreachable while {what}")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        code = (exc.error.code if exc.error else None) or getattr(exc, "reason", "") or ""
        message = (exc.error.message if exc.error else None) or ""
        text = f"ACI answered {status} {code} while {what}: {message}".rstrip(": ")
        if status in (429, 503) or code in _CAPACITY_CODES:
            return AciCapacity(text)
        if status >= 500:
            return BackendUnavailable(text)
        if code in _PULL_ERRORS:
            return ImageNotFound(text)
        return BackendError(text)
    if isinstance(exc, AzureError):
        return BackendUnavailable(f"ACI error while {what}: {type(exc).__name__}")
    return BackendError(f"ACI failed while {what}: {exc}")


def build_group(cfg: AciConfig, spec: GroupSpec) -> m.ContainerGroup:
    """Return the container group of one attempt (see the module docstring for the shape)."""
    res = spec.resources
    memory_gb = round(res.memory_mb / 1024, 2)
    env = [
        m.EnvironmentVariable(name="SANDBOX_RUN_ID", value=spec.run_id),
        m.EnvironmentVariable(name="SANDBOX_METHOD_ID", value=spec.method_id),
        m.EnvironmentVariable(name="SANDBOX_ATTEMPT", value=str(spec.attempt)),
        m.EnvironmentVariable(name="SANDBOX_INPUT_PATH", value=INPUT_PATH),
    ]
    # Secure values are write-only in ARM: never shown in the group's properties.
    env += [m.EnvironmentVariable(name=k, secure_value=v) for k, v in spec.secure_env.items()]
    container = m.Container(
        name=CONTAINER,
        image=spec.image,
        resources=m.ResourceRequirements(
            requests=m.ResourceRequests(cpu=res.cpu, memory_in_gb=memory_gb),
            limits=m.ResourceLimits(cpu=res.cpu, memory_in_gb=memory_gb),
        ),
        environment_variables=env,
        volume_mounts=[m.VolumeMount(name=INPUT_VOLUME, mount_path=INPUT_DIR, read_only=True)],
    )
    identity = None
    registry = None
    if cfg.identity_id:
        identity = m.ContainerGroupIdentity(
            type="UserAssigned",
            user_assigned_identities={cfg.identity_id: m.UserAssignedIdentities()},
        )
        if cfg.registry_server:
            # ACR pulls with a managed identity need a user-assigned one (not system-assigned).
            registry = [
                m.ImageRegistryCredential(server=cfg.registry_server, identity=cfg.identity_id)
            ]
    return m.ContainerGroup(
        location=cfg.location,
        os_type="Linux",
        restart_policy="Never",
        containers=[container],
        # A secret volume is tmpfs-backed; ARM wants base64, the adapter sees plain JSON.
        volumes=[
            m.Volume(
                name=INPUT_VOLUME,
                secret={"input.json": base64.b64encode(spec.input_json).decode()},
            )
        ],
        identity=identity,
        image_registry_credentials=registry,
        # No ip_address: the group gets no public IP.
        subnet_ids=[m.ContainerGroupSubnetId(id=cfg.subnet_id)] if cfg.subnet_id else None,
        tags={TAG_RUN: spec.run_id, TAG_ATTEMPT: str(spec.attempt), TAG_FLEET: cfg.fleet},
    )


def create(client: ContainerInstanceManagementClient, cfg: AciConfig, spec: GroupSpec) -> None:
    """Send the PUT for an attempt's group and return at once (no waiting on the LRO)."""
    name = group_name(spec.run_id, spec.attempt)
    try:
        # polling=False: the PUT is accepted and we return; the caller polls with `get`.
        client.container_groups.begin_create_or_update(
            cfg.resource_group, name, build_group(cfg, spec), polling=False
        )
    except Exception as exc:
        raise _translate(exc, f"creating {name}") from exc


def get(client: ContainerInstanceManagementClient, cfg: AciConfig, name: str) -> GroupState | None:
    """Return the group's state, or None when it does not exist."""
    try:
        group = client.container_groups.get(cfg.resource_group, name)
    except ResourceNotFoundError:
        return None
    except Exception as exc:
        raise _translate(exc, f"reading {name}") from exc
    events: list[str] = []
    view = group.instance_view
    event: Any
    for event in (view.events if view and view.events else []) or []:
        events.append(f"{event.name}: {event.message}")
    current = None
    for container in group.containers or []:
        if container.instance_view is not None:
            current = container.instance_view.current_state
            for event in container.instance_view.events or []:
                if event.type == "Warning" or event.name in ("Failed", "Killing"):
                    events.append(f"{event.name}: {event.message}")
    return GroupState(
        provisioning_state=group.provisioning_state,
        group_state=view.state if view else None,
        container_state=current.state if current else None,
        exit_code=current.exit_code if current else None,
        detail_status=current.detail_status if current else None,
        started_at=current.start_time if current else None,
        finished_at=current.finish_time if current else None,
        events=tuple(events),
    )


def logs(client: ContainerInstanceManagementClient, cfg: AciConfig, name: str) -> str:
    """Return the tail of what the container printed (stdout and stderr interleaved; ACI keeps
    one log, and only its last LOG_BYTES_RUNNING / LOG_BYTES_STOPPED bytes)."""
    try:
        return client.containers.list_logs(cfg.resource_group, name, CONTAINER).content or ""
    except ResourceNotFoundError:
        return ""
    except Exception as exc:
        raise _translate(exc, f"reading the logs of {name}") from exc


def delete(client: ContainerInstanceManagementClient, cfg: AciConfig, name: str) -> None:
    """Delete a group (stopping its container); gone already is fine. Does not wait."""
    try:
        client.container_groups.begin_delete(cfg.resource_group, name, polling=False)
    except ResourceNotFoundError:
        pass
    except Exception as exc:
        raise _translate(exc, f"deleting {name}") from exc


def list_fleet_groups(
    client: ContainerInstanceManagementClient, cfg: AciConfig
) -> list[tuple[str, int, str]]:
    """Return (run id, attempt, group name) for every group tagged with this fleet."""
    found = []
    try:
        for group in client.container_groups.list_by_resource_group(cfg.resource_group):
            tags = group.tags or {}
            if tags.get(TAG_FLEET) != cfg.fleet or TAG_RUN not in tags:
                continue
            attempt = tags.get(TAG_ATTEMPT, "0")
            found.append((tags[TAG_RUN], int(attempt) if attempt.isdigit() else 0, str(group.name)))
    except Exception as exc:
        raise _translate(exc, "listing container groups") from exc
    return found


def check_capacity(
    client: ContainerInstanceManagementClient, cfg: AciConfig, cores: float
) -> str | None:
    """Return why ACI cannot take one more group now (unavailable, quota), or None if it can.

    Asks the region's usage API once, without retries: a fast answer beats a precise one here.
    """
    try:
        usages = list(client.location.list_usage(cfg.location, retry_total=0))
    except Exception as exc:
        error = _translate(exc, "reading ACI usage")
        if isinstance(error, BackendUnavailable):
            return str(error)
        raise error from exc
    for usage in usages:
        name = usage.name.value if usage.name else ""
        current, limit = usage.current_value or 0, usage.limit
        if limit is None:
            continue
        need = cores if "core" in (name or "").lower() else 1
        if current + need > limit:
            return f"ACI quota reached: {name} {current}/{limit}"
    return None
