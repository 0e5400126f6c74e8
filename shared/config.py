"""Settings for every service, read from the environment once at process start.

Every setting is a ``SANDBOX_*`` environment variable; the README has the table. Nothing else in
the code base reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.egress_proxy import AllowList


class ConfigError(ValueError):
    """A setting is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed settings shared by the api, the workers and the CLI."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/sandbox_runner"
    broker_url: str = "redis://127.0.0.1:6379/0"
    state_dir: Path = Path(".run")
    blob_dir: Path = Path(".run/blobs")
    policy_file: Path | None = None
    redaction_config: Path | None = None
    fault_dir: Path | None = None
    fleet_name: str = "sandbox-runner"
    # Docker hosts' pull cache: bytes of adapter images kept, images pre-pulled, pass period.
    image_cache_max_mb: int = 20480
    image_cache_prepull: int = 5
    image_cache_interval_s: int = 300
    visibility_timeout_s: int = 1260
    max_input_bytes: int = 1024 * 1024
    max_log_bytes: int = 1024 * 1024
    # Past a run's blob log cap (resource policy, log_cap_mb) the overflow policy applies:
    # "truncate" stops keeping output but goes on counting it; "kill" ends the run.
    log_overflow: str = "truncate"
    pubsub_url: str | None = None
    blob_backend: str = "local"
    azure_storage_connection_string: str | None = None
    azure_storage_account_url: str | None = None
    download_ttl_s: int = 300
    retention_days: int = 30
    retention_interval_s: int = 3600
    vacuum_interval_s: int = 60
    max_line_bytes: int = 16 * 1024
    preview_lines: int = 20
    docker_url: str | None = None
    executor_node: str = field(default_factory=lambda: os.uname().nodename)
    pull_timeout_s: int = 120
    pids_limit: int = 256
    tmpfs_size_mb: int = 64
    resend_after_s: int = 30
    sweep_interval_s: int = 15
    heartbeat_interval_s: float = 2.0
    lease_timeout_s: int = 30
    max_attempts: int = 3
    queue_deadline_s: int = 3600
    step_deadline_s: int = 300
    run_grace_s: int = 60
    idempotency_ttl_s: int = 86400
    keep_ip_addresses: bool = True
    dev_issuer: str = "http://127.0.0.1:8000"
    audience: str = "api://sandbox-runner"
    token_ttl_s: int = 3600
    log_format: str = "json"
    log_level: str = "INFO"
    db_pool_max: int = 4
    # Observability (issue 8): where each worker service serves /metrics (the api serves it on
    # its own port); 0 turns a worker's endpoint off.
    metrics_addr: str = "127.0.0.1"
    provisioner_metrics_port: int = 9101
    executor_metrics_port: int = 9102
    finalizer_metrics_port: int = 9103
    # Webhooks and GitHub Actions (issue 9). Secret values are never settings: only references
    # (env:NAME or file:/path) that shared/secrets.py resolves when a value is needed.
    public_url: str = "http://127.0.0.1:8000"
    webhook_endpoints_file: Path | None = None
    webhook_secret_refs: str = "env:SANDBOX_WEBHOOK_SECRET_*"
    webhook_allow_http: bool = False
    webhook_allowed_networks: str = ""
    webhook_timeout_s: float = 5.0
    webhook_horizon_s: int = 86400
    webhook_backoff_base_s: float = 10.0
    webhook_backoff_max_s: float = 3600.0
    webhook_poll_interval_s: float = 1.0
    github_api_url: str = "https://api.github.com"
    github_token_ref: str | None = None
    github_webhook_secret_ref: str | None = None
    github_webhook_events: str = "repository_dispatch"
    github_oidc_issuer: str = "https://token.actions.githubusercontent.com"
    github_oidc_audience: str | None = None
    github_oidc_jwks_url: str | None = None
    github_oidc_rules_file: Path | None = None
    github_oidc_jwks_cooldown_s: float = 30.0
    # Azure production path (issue 7). Backend per run: docker | aci | auto (ACI, falling back
    # to Docker when ACI is unavailable or out of quota); rules "method-glob=backend" or
    # "persona-uuid/method-glob=backend", comma-separated, override the global choice.
    backend: str = "docker"
    backend_rules: str = ""
    azure_credential: str = "default"  # or "module:callable" returning a TokenCredential
    azure_client_id: str | None = None  # the user-assigned managed identity's client id
    azure_ca_bundle: Path | None = None  # a CA file for Azure endpoints (a local simulator)
    aci_base_url: str = "https://management.azure.com"
    aci_subscription_id: str | None = None
    aci_resource_group: str | None = None
    aci_location: str = "westeurope"
    aci_identity_id: str | None = None  # resource id of the UAMI the groups run as
    aci_registry_server: str | None = None  # ACR login server pulled with that identity
    aci_subnet_id: str | None = None  # optional VNet subnet; never a public IP either way
    aci_poll_interval_s: float = 5.0
    aci_poll_max_interval_s: float = 15.0
    aci_start_timeout_s: int = 900
    aci_retry_total: int = 3
    aci_log_key_ref: str | None = None  # secret reference: the key of the encrypted log copies
    event_sink: str = "log"  # log | eventhub | servicebus
    eventhub_namespace: str | None = None
    eventhub_name: str | None = None
    servicebus_namespace: str | None = None
    servicebus_topic: str | None = None
    # Secret references (env:/file:/kv:) to connection strings, used instead of the identity.
    eventhub_connection_ref: str | None = None
    servicebus_connection_ref: str | None = None
    keyvault_url: str | None = None
    keyvault_cache_ttl_s: int = 900
    # Identity, roles and API hardening (issue 6). The dev issuer is this api itself: it serves
    # its discovery document and JWKS under this URL's path; turn it off where Entra ID is used.
    dev_issuer_enabled: bool = True
    entra_tenant_id: str | None = None
    entra_authority: str | None = None
    entra_client_id: str | None = None
    entra_app_id_uri: str | None = None
    jwks_cache_s: int = 3600
    jwks_cooldown_s: float = 30.0
    # How long a verified bearer token is remembered (0: verify every request); see shared/auth.py.
    token_cache_s: float = 60.0
    token_leeway_s: int = 60
    role_map: str = "Runs.Submit=submit,Runs.Read=read,Runs.Cancel=cancel,Runs.Admin=admin"
    policy_cache_ttl_s: float = 10.0
    rate_limit_per_minute: int = 600
    rate_limit_url: str | None = None
    # Images, containers and egress (issue 6): see shared/image_policy.py and the README.
    # image_registries None means the default allow-list: acr_login_server (if set), localhost:5000.
    acr_login_server: str = ""
    image_registries: str | None = None
    image_require_digest: bool = False
    image_require_signature: bool = False
    image_signing_keys: str = ""
    nofile_limit: int = 1024
    # Egress (issue 6): runs whose resource policy sets ``egress`` reach only these hosts
    # (comma-separated ``host`` or ``host:port``) through a per-run proxy; empty denies all.
    egress_allow_hosts: str = ""
    egress_proxy_image: str = "sandbox-runner/egress-proxy:dev"
    # The ordinary (not internal) Docker network the proxies go out through.
    egress_network: str = "bridge"

    @property
    def blob_signing_key_path(self) -> Path:
        """Return where the key that signs local download links is kept."""
        return self.state_dir / "blob-signing.key"

    @property
    def dev_key_path(self) -> Path:
        """Return where the local dev issuer keeps its private key."""
        return self.state_dir / "dev-issuer-key.pem"


_INT_FIELDS = {
    "max_input_bytes",
    "max_log_bytes",
    "max_line_bytes",
    "download_ttl_s",
    "retention_days",
    "retention_interval_s",
    "vacuum_interval_s",
    "preview_lines",
    "pull_timeout_s",
    "pids_limit",
    "tmpfs_size_mb",
    "resend_after_s",
    "sweep_interval_s",
    "lease_timeout_s",
    "max_attempts",
    "queue_deadline_s",
    "step_deadline_s",
    "run_grace_s",
    "idempotency_ttl_s",
    "token_ttl_s",
    "db_pool_max",
    "provisioner_metrics_port",
    "executor_metrics_port",
    "finalizer_metrics_port",
}
_PATH_FIELDS = {"state_dir", "blob_dir", "policy_file", "redaction_config", "fault_dir"}
_BOOL_FIELDS = {"keep_ip_addresses"}
_FLOAT_FIELDS = {"heartbeat_interval_s"}
_STR_FIELDS = {
    "database_url",
    "broker_url",
    "docker_url",
    "executor_node",
    "log_overflow",
    "pubsub_url",
    "blob_backend",
    "azure_storage_connection_string",
    "azure_storage_account_url",
    "fleet_name",
    "dev_issuer",
    "audience",
    "log_format",
    "log_level",
    "metrics_addr",
}
# Webhooks and GitHub Actions (issue 9).
_INT_FIELDS |= {"webhook_horizon_s"}
_FLOAT_FIELDS |= {
    "webhook_timeout_s",
    "webhook_backoff_base_s",
    "webhook_backoff_max_s",
    "webhook_poll_interval_s",
    "github_oidc_jwks_cooldown_s",
}
_PATH_FIELDS |= {"webhook_endpoints_file", "github_oidc_rules_file"}
_BOOL_FIELDS |= {"webhook_allow_http"}
_STR_FIELDS |= {
    "public_url",
    "webhook_secret_refs",
    "webhook_allowed_networks",
    "github_api_url",
    "github_token_ref",
    "github_webhook_secret_ref",
    "github_webhook_events",
    "github_oidc_issuer",
    "github_oidc_audience",
    "github_oidc_jwks_url",
}

# Images, containers and egress (issue 6).
_INT_FIELDS |= {"nofile_limit"}
_BOOL_FIELDS |= {"image_require_digest", "image_require_signature"}
_STR_FIELDS |= {"acr_login_server", "image_registries", "image_signing_keys"}
_STR_FIELDS |= {"egress_allow_hosts", "egress_proxy_image", "egress_network"}

# Identity, roles and API hardening (issue 6).
_INT_FIELDS |= {"jwks_cache_s", "token_leeway_s", "rate_limit_per_minute"}
_FLOAT_FIELDS |= {"jwks_cooldown_s", "policy_cache_ttl_s", "token_cache_s"}
_BOOL_FIELDS |= {"dev_issuer_enabled"}
_STR_FIELDS |= {
    "entra_tenant_id",
    "entra_authority",
    "entra_client_id",
    "entra_app_id_uri",
    "role_map",
    "rate_limit_url",
}


# Azure production path (issue 7).
_INT_FIELDS |= {"aci_start_timeout_s", "aci_retry_total", "keyvault_cache_ttl_s"}
_FLOAT_FIELDS |= {"aci_poll_interval_s", "aci_poll_max_interval_s"}
_PATH_FIELDS |= {"azure_ca_bundle"}
_STR_FIELDS |= {
    "backend",
    "backend_rules",
    "azure_credential",
    "azure_client_id",
    "aci_base_url",
    "aci_subscription_id",
    "aci_resource_group",
    "aci_location",
    "aci_identity_id",
    "aci_registry_server",
    "aci_subnet_id",
    "aci_log_key_ref",
    "event_sink",
    "eventhub_namespace",
    "eventhub_name",
    "servicebus_namespace",
    "servicebus_topic",
    "eventhub_connection_ref",
    "servicebus_connection_ref",
    "keyvault_url",
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``SANDBOX_*`` variables; raise ConfigError on a malformed value."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name in _INT_FIELDS | _FLOAT_FIELDS | _PATH_FIELDS | _BOOL_FIELDS | _STR_FIELDS:
        raw = env.get(f"SANDBOX_{name.upper()}")
        if raw is None or raw == "":
            continue
        if name in _INT_FIELDS:
            try:
                values[name] = int(raw)
            except ValueError:
                raise ConfigError(
                    f"SANDBOX_{name.upper()} must be an integer, got {raw!r}"
                ) from None
        elif name in _FLOAT_FIELDS:
            try:
                values[name] = float(raw)
            except ValueError:
                raise ConfigError(f"SANDBOX_{name.upper()} must be a number, got {raw!r}") from None
        elif name in _PATH_FIELDS:
            values[name] = Path(raw)
        elif name in _BOOL_FIELDS:
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ConfigError(f"SANDBOX_{name.upper()} must be true or false, got {raw!r}")
            values[name] = raw.lower() in {"1", "true", "yes"}
        else:
            values[name] = raw
    if "state_dir" in values and "blob_dir" not in values:
        values["blob_dir"] = Path(str(values["state_dir"])) / "blobs"
    if values.get("log_overflow", "truncate") not in {"truncate", "kill"}:
        raise ConfigError("SANDBOX_LOG_OVERFLOW must be truncate or kill")
    if values.get("blob_backend", "local") not in {"local", "azure"}:
        raise ConfigError("SANDBOX_BLOB_BACKEND must be local or azure")
    if values.get("log_format", "json") not in {"json", "text"}:
        raise ConfigError("SANDBOX_LOG_FORMAT must be json or text")
    if values.get("backend", "docker") not in {"docker", "aci", "auto"}:
        raise ConfigError("SANDBOX_BACKEND must be docker, aci or auto")
    if values.get("event_sink", "log") not in {"log", "eventhub", "servicebus"}:
        raise ConfigError("SANDBOX_EVENT_SINK must be log, eventhub or servicebus")
    try:
        # Checked here so a typo stops the service at start, not every egress run later.
        AllowList.parse(str(values.get("egress_allow_hosts", "")))
    except ValueError as exc:
        raise ConfigError(f"SANDBOX_EGRESS_ALLOW_HOSTS: {exc}") from None
    return Settings(**values)  # type: ignore[arg-type]
