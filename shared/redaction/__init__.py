"""Mask PII and secrets in text, JSON-like values, chunked streams and log records.

Extend by adding a ``Detector`` to ``DEFAULT_DETECTORS`` (or passing ``detectors=`` to
``Redactor``); lower ``priority`` runs first and wins overlapping findings.
"""

from __future__ import annotations

from collections.abc import Iterable

from .config import PatternSpec, RedactionConfig, load_redaction_config
from .core import Redactor
from .detectors import DEFAULT_DETECTORS, IP_DETECTORS, Detector, mask, regex_finder
from .stream import RedactingFilter, StreamRedactor

__all__ = [
    "DEFAULT_DETECTORS",
    "IP_DETECTORS",
    "Detector",
    "PatternSpec",
    "RedactingFilter",
    "RedactionConfig",
    "Redactor",
    "StreamRedactor",
    "load_redaction_config",
    "mask",
    "redact_text",
    "regex_finder",
]

_default_redactor: Redactor | None = None


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` redacted with the default detectors plus the given secret values."""
    global _default_redactor
    secrets = tuple(secrets)
    if secrets:
        return Redactor(secrets).redact_text(text)
    if _default_redactor is None:
        _default_redactor = Redactor()
    return _default_redactor.redact_text(text)
