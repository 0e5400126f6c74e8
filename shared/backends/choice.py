"""Choose the container backend of a run: docker, aci, or auto (ACI, else local Docker).

The global choice is ``SANDBOX_BACKEND``; ``SANDBOX_BACKEND_RULES`` overrides it per method
(``seo.*=aci``) or per persona and method (``<persona-uuid>/test.*=docker``), the most specific
rule winning. Under ``auto`` the provisioner asks ACI's usage API once: unavailable (503, 429,
unreachable) or out of quota means the run goes to Docker, and the plan says why. ACI may still
refuse the group when the executor creates it; ``services/executor/aci_execute.py`` then moves
that attempt to Docker and records it in the same ``backendChoice`` fields.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.errors import BackendError

if TYPE_CHECKING:
    from shared.db.runs import Run
    from shared.runtime import Runtime

logger = logging.getLogger(__name__)

BACKENDS = ("docker", "aci", "auto")


@dataclass(frozen=True, slots=True)
class Rule:
    """One override: a persona (or any) and a method glob, and the backend they get."""

    persona: str | None
    method_glob: str
    backend: str


def parse_rules(text: str) -> list[Rule]:
    """Parse ``[persona/]method-glob=backend`` items, comma-separated; raise ValueError if bad."""
    rules = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        target, sep, backend = item.partition("=")
        backend = backend.strip()
        if not sep or backend not in BACKENDS:
            raise ValueError(f"backend rule {item!r}: want [persona/]method-glob=docker|aci|auto")
        persona, slash, glob = target.strip().rpartition("/")
        rules.append(Rule(persona if slash else None, glob, backend))
    return rules


def wanted(default: str, rules: list[Rule], persona_id: str, method_id: str) -> str:
    """Return the backend the settings ask for this persona and method (before availability)."""
    best: tuple[int, str] | None = None
    for rule in rules:
        if rule.persona not in (None, persona_id):
            continue
        if not fnmatch.fnmatchcase(method_id, rule.method_glob):
            continue
        rank = 2 if rule.persona else 1
        if best is None or rank > best[0]:
            best = (rank, rule.backend)
    return best[1] if best else default


def decide(rt: Runtime, run: Run, plan: dict[str, Any]) -> dict[str, Any]:
    """Return the run's ``backend`` and its ``plan`` completed with the choice (and fallback).

    The result is meant for the provisioner's transition values. ``aci`` asked for explicitly
    without ACI configured is a platform error the executor reports; ``auto`` never fails here.
    """
    asked = wanted(
        rt.settings.backend,
        parse_rules(rt.settings.backend_rules),
        str(run.persona_id),
        run.method_id,
    )
    backend, fallback = asked, None
    if asked == "auto":
        fallback = _aci_unavailable(rt, float(plan.get("resources", {}).get("cpu", 1)))
        backend = "docker" if fallback else "aci"
    if fallback:
        logger.info(
            "ACI not usable; the run goes to Docker: %s", fallback, extra={"runId": str(run.id)}
        )
    choice: dict[str, Any] = {"asked": asked, "chosen": backend}
    if fallback:
        choice["fallbackReason"] = rt.redactor().redact_text(fallback)
    return {"backend": backend, "plan": {**plan, "backend": backend, "backendChoice": choice}}


def _aci_unavailable(rt: Runtime, cores: float) -> str | None:
    """Return why ACI cannot take this run now, or None when it can."""
    from shared.backends import aci

    cfg = rt.aci_config
    if cfg is None:
        return "ACI is not configured"
    try:
        return aci.check_capacity(rt.aci(), cfg, cores)
    except BackendError as exc:
        return str(exc)
