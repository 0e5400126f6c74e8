"""Resource policy: defaults, per persona/method overrides, and the guardrails nothing may pass.

Overrides live in a TOML file (``SANDBOX_POLICY_FILE``)::

    [defaults]                        # optional; replaces the built-in defaults
    cpu = 1.0
    memory_mb = 2048
    timeout_s = 120

    [methods."seo.evaluate_content"]  # a method id, or a glob such as "test.*"
    timeout_s = 60

    [personas."<persona uuid>".methods."seo.evaluate_content"]
    memory_mb = 1024
    egress = true                     # network through the allow-list proxy (default false)

Precedence: defaults < method < persona+method < the request's own ``resources``. A value beyond a
guardrail is refused (PolicyViolation naming the limit), never clamped. Rows of the database table
``resource_policy`` (admin API, ``sandbox-runner policy``) override the file (``CachedPolicy``).

``egress`` is a flag, not a limit: only the policy grants it (a request's ``resources`` cannot),
and what an egress run may reach is the global allow list (``SANDBOX_EGRESS_ALLOW_HOSTS``).
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from shared.errors import PolicyViolation

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resources:
    """Limits applied to one run's container."""

    cpu: float
    memory_mb: int
    timeout_s: int
    # Redacted output kept in blob storage per run; past it the overflow policy applies.
    log_cap_mb: int = 100
    # Network through the run's allow-list proxy (shared/backends/egress.py); else none at all.
    egress: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the camelCase form used by the API and stored on the run."""
        data: dict[str, Any] = {
            "cpu": self.cpu,
            "memoryMb": self.memory_mb,
            "timeoutS": self.timeout_s,
            "logCapMb": self.log_cap_mb,
        }
        # Only when granted: the stored and returned shape of every other run stays as it was.
        if self.egress:
            data["egress"] = True
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Resources:
        """Read the camelCase form back."""
        return cls(
            cpu=float(data["cpu"]),
            memory_mb=int(data["memoryMb"]),
            timeout_s=int(data["timeoutS"]),
            log_cap_mb=int(data.get("logCapMb", 100)),
            egress=bool(data.get("egress", False)),
        )


DEFAULTS = Resources(cpu=1.0, memory_mb=2048, timeout_s=120, log_cap_mb=100)
GUARDRAILS = Resources(cpu=2.0, memory_mb=4096, timeout_s=300, log_cap_mb=1024)
# Below these a container cannot even start a Python interpreter reliably.
MINIMUMS = Resources(cpu=0.05, memory_mb=16, timeout_s=1, log_cap_mb=1)

_KEYS = {"cpu": float, "memory_mb": int, "timeout_s": int, "log_cap_mb": int}
# Switches rather than limits: no guardrail or minimum applies, and a request cannot set them.
_FLAGS = frozenset({"egress"})


def check(resources: Resources, where: str) -> Resources:
    """Return ``resources`` if within guardrails and minimums; raise PolicyViolation if not."""
    for name, value in asdict(resources).items():
        if name in _FLAGS:
            continue
        top = getattr(GUARDRAILS, name)
        low = getattr(MINIMUMS, name)
        if value > top:
            raise PolicyViolation(f"{where}: {name} {value} exceeds the guardrail {top}", name)
        if value < low:
            raise PolicyViolation(f"{where}: {name} {value} is below the minimum {low}", name)
    return resources


def _apply(base: Resources, raw: Mapping[str, Any], where: str) -> Resources:
    unknown = set(raw) - set(_KEYS) - _FLAGS
    if unknown:
        raise PolicyViolation(f"{where}: unknown keys {sorted(unknown)}", sorted(unknown)[0])
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _FLAGS:
            if not isinstance(value, bool):
                raise PolicyViolation(f"{where}: {key} must be true or false", key)
            changes[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PolicyViolation(f"{where}: {key} must be a number", key)
        changes[key] = _KEYS[key](value)
    return check(replace(base, **changes), where)


@dataclass(frozen=True, slots=True)
class Policy:
    """Defaults plus overrides, validated against the guardrails when loaded."""

    defaults: Resources = DEFAULTS
    methods: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    personas: Mapping[str, tuple[tuple[str, Mapping[str, Any]], ...]] | None = None

    def resolve(
        self, persona_id: str, method_id: str, requested: Mapping[str, Any] | None = None
    ) -> Resources:
        """Return one run's limits; raise PolicyViolation if the request passes a guardrail."""
        resources = self.defaults
        method_raw = _match(self.methods, method_id)
        if method_raw is not None:
            resources = _apply(resources, method_raw, f"policy for {method_id}")
        persona_raw = _match((self.personas or {}).get(persona_id, ()), method_id)
        if persona_raw is not None:
            resources = _apply(resources, persona_raw, f"policy for persona {persona_id}")
        if requested:
            granted = _FLAGS & set(requested)
            if granted:
                name = sorted(granted)[0]
                raise PolicyViolation(
                    f"requested resources: {name} is set by the policy only", name
                )
            resources = _apply(resources, requested, "requested resources")
        return resources


def _match(
    entries: tuple[tuple[str, Mapping[str, Any]], ...], method_id: str
) -> Mapping[str, Any] | None:
    for pattern, raw in entries:
        if pattern == method_id:
            return raw
    for pattern, raw in entries:
        if fnmatch.fnmatchcase(method_id, pattern):
            return raw
    return None


def load_policy(path: Path | None) -> Policy:
    """Read and validate the policy file; no file means the built-in defaults."""
    if path is None:
        return Policy()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyViolation(f"cannot read policy file {path}: {exc}", "policy_file") from exc
    defaults = _apply(DEFAULTS, data.get("defaults", {}), "policy defaults")
    methods = tuple(data.get("methods", {}).items())
    personas = {
        persona: tuple(entry.get("methods", {}).items())
        for persona, entry in data.get("personas", {}).items()
    }
    policy = Policy(defaults=defaults, methods=methods, personas=personas)
    # Validate every override now, so a bad file stops the service at start, not a run later.
    for pattern, raw in methods:
        _apply(defaults, raw, f"policy for {pattern}")
    for persona, entries in personas.items():
        for pattern, raw in entries:
            _apply(defaults, raw, f"policy for persona {persona}, method {pattern}")
    return policy


# --- Database overrides (issue 6) -------------------------------------------------------------
# Rows of ``resource_policy`` lie over the file: a row replaces the file's values of the same
# scope key by key, a database method pattern is tried before a file one, and nothing may pass a
# guardrail (each row is checked when it is written, and again when it is merged).

Override = tuple[str | None, str | None, Mapping[str, Any]]  # (persona id, method, values)


def merge(base: Policy, overrides: list[Override]) -> Policy:
    """Return ``base`` (the file's policy) with database overrides laid over it."""
    defaults = base.defaults
    methods: dict[str, dict[str, Any]] = {}
    personas: dict[str, dict[str, dict[str, Any]]] = {}
    for persona, method, values in overrides:
        if method is None:
            defaults = _apply(defaults, values, "database policy defaults")
        elif persona is None:
            methods[method] = dict(values)
        else:
            personas.setdefault(persona, {})[method] = dict(values)
    file_methods = dict(base.methods)
    merged_methods: tuple[tuple[str, Mapping[str, Any]], ...] = tuple(
        (m, {**file_methods.get(m, {}), **v}) for m, v in methods.items()
    )
    merged_methods += tuple((m, v) for m, v in base.methods if m not in methods)
    merged_personas = dict(base.personas or {})
    for persona, entries in personas.items():
        file_entries = dict(merged_personas.get(persona, ()))
        merged: tuple[tuple[str, Mapping[str, Any]], ...] = tuple(
            (m, {**file_entries.get(m, {}), **v}) for m, v in entries.items()
        )
        merged += tuple((m, v) for m, v in file_entries.items() if m not in entries)
        merged_personas[persona] = merged
    return Policy(defaults=defaults, methods=merged_methods, personas=merged_personas)


def check_override(values: Mapping[str, Any], where: str) -> None:
    """Raise PolicyViolation (naming the limit) if an override passes a guardrail or minimum."""
    unknown = set(values) - set(_KEYS) - _FLAGS
    if unknown:
        raise PolicyViolation(f"{where}: unknown keys {sorted(unknown)}", sorted(unknown)[0])
    for key, value in values.items():
        if key in _FLAGS:
            if not isinstance(value, bool):
                raise PolicyViolation(f"{where}: {key} must be true or false", key)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PolicyViolation(f"{where}: {key} must be a number", key)
        top, low = getattr(GUARDRAILS, key), getattr(MINIMUMS, key)
        if value > top:
            raise PolicyViolation(f"{where}: {key} {value} exceeds the guardrail {top}", key)
        if value < low:
            raise PolicyViolation(f"{where}: {key} {value} is below the minimum {low}", key)


class CachedPolicy:
    """The policy in force: the file's, overridden by database rows re-read after ``ttl_s``.

    ``resolve`` has the signature of ``Policy.resolve``. If the rows cannot be read, the last
    rows read are used (and the error raised when there are none yet).
    """

    def __init__(
        self,
        base: Policy,
        load: Callable[[], list[Override]],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = base
        self._load = load
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._policy: Policy | None = None
        self._read_at = 0.0

    def current(self) -> Policy:
        """Return the merged policy, re-reading the overrides when the cached ones are stale."""
        with self._lock:
            now = self._clock()
            if self._policy is None or now - self._read_at >= self._ttl_s:
                try:
                    self._policy = merge(self.base, self._load())
                except Exception:
                    if self._policy is None:
                        raise
                    logger.warning("resource policy: keeping the cached overrides", exc_info=True)
                self._read_at = now
            return self._policy

    def invalidate(self) -> None:
        """Forget the cached overrides (this process changed them)."""
        with self._lock:
            self._policy = None

    def resolve(
        self, persona_id: str, method_id: str, requested: Mapping[str, Any] | None = None
    ) -> Resources:
        """Return one run's limits; raise PolicyViolation if the request passes a guardrail."""
        return self.current().resolve(persona_id, method_id, requested)
