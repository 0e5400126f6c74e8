"""Settings for every service, read from the environment once at process start.

Every setting is a ``SANDBOX_*`` environment variable; the README has the table. Nothing else in
the code base reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


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
    visibility_timeout_s: int = 1260
    max_input_bytes: int = 1024 * 1024
    max_log_bytes: int = 1024 * 1024
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
    dev_issuer: str = "sandbox-runner-dev"
    audience: str = "api://sandbox-runner"
    token_ttl_s: int = 3600
    log_format: str = "json"
    log_level: str = "INFO"
    db_pool_max: int = 4

    @property
    def dev_key_path(self) -> Path:
        """Return where the local dev issuer keeps its private key."""
        return self.state_dir / "dev-issuer-key.pem"


_INT_FIELDS = {
    "max_input_bytes",
    "max_log_bytes",
    "max_line_bytes",
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
}
_PATH_FIELDS = {"state_dir", "blob_dir", "policy_file", "redaction_config", "fault_dir"}
_BOOL_FIELDS = {"keep_ip_addresses"}
_FLOAT_FIELDS = {"heartbeat_interval_s"}
_STR_FIELDS = {
    "database_url",
    "broker_url",
    "docker_url",
    "executor_node",
    "fleet_name",
    "dev_issuer",
    "audience",
    "log_format",
    "log_level",
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
    if values.get("log_format", "json") not in {"json", "text"}:
        raise ConfigError("SANDBOX_LOG_FORMAT must be json or text")
    return Settings(**values)  # type: ignore[arg-type]
