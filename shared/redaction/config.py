"""Redaction settings from a TOML file: extra patterns, allowed values, IP handling.

```toml
keep_ip_addresses = true
allow = ["AKIAIOSFODNN7EXAMPLE"]     # exact values that are never masked

[[patterns]]
kind = "employee_id"                  # masks read [REDACTED:employee_id]
regex = "EMP-[0-9]{6}"                # a group named "secret" limits the mask to that part
```
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .detectors import Detector, regex_finder

_KIND_RE = re.compile(r"[a-z0-9_]+")
_KEYS = frozenset({"patterns", "allow", "keep_ip_addresses"})
# Extra patterns run after the built-in secret detectors and before PII.
_PATTERN_PRIORITY = 48


@dataclass(frozen=True)
class PatternSpec:
    """One extra detector: masks of ``kind`` for every match of ``regex``."""

    kind: str
    regex: str

    def compiled(self) -> re.Pattern[str]:
        """Return the compiled pattern; ValueError names the pattern if it does not compile."""
        try:
            rx = re.compile(self.regex)
        except re.error as exc:
            raise ValueError(
                f"redaction pattern {self.kind!r} has an invalid regex {self.regex!r}: {exc}"
            ) from None
        if rx.match(""):
            raise ValueError(f"redaction pattern {self.kind!r} matches the empty string")
        return rx


@dataclass(frozen=True)
class RedactionConfig:
    """What a deployment adds to the built-in detectors."""

    patterns: tuple[PatternSpec, ...] = ()
    allow: tuple[str, ...] = ()
    keep_ip_addresses: bool = True

    def detectors(self) -> tuple[Detector, ...]:
        """Return a detector for each extra pattern."""
        found = []
        for spec in self.patterns:
            rx = spec.compiled()
            group: int | str = "secret" if "secret" in rx.groupindex else 0
            found.append(Detector(spec.kind, regex_finder(rx, group), _PATTERN_PRIORITY))
        return tuple(found)


def load_redaction_config(path: Path | None) -> RedactionConfig:
    """Read ``path`` (TOML); None gives the defaults. ValueError says what is wrong."""
    if path is None:
        return RedactionConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - _KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected {sorted(_KEYS)}")
    patterns = []
    for i, item in enumerate(data.get("patterns", [])):
        if not isinstance(item, dict) or set(item) != {"kind", "regex"}:
            raise ValueError(f"{path}: patterns[{i}] needs exactly 'kind' and 'regex'")
        kind, regex = item["kind"], item["regex"]
        if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
            raise ValueError(f"{path}: patterns[{i}] kind {kind!r} must match [a-z0-9_]+")
        if not isinstance(regex, str):
            raise ValueError(f"{path}: pattern {kind!r} regex must be a string")
        spec = PatternSpec(kind, regex)
        spec.compiled()  # fail at load time, naming the pattern
        patterns.append(spec)
    allow = data.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(v, str) for v in allow):
        raise ValueError(f"{path}: allow must be a list of strings")
    keep_ips = data.get("keep_ip_addresses", True)
    if not isinstance(keep_ips, bool):
        raise ValueError(f"{path}: keep_ip_addresses must be true or false")
    return RedactionConfig(tuple(patterns), tuple(allow), keep_ips)
