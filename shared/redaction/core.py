"""Redactor: run the detector table over text and JSON-like values."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from .detectors import (
    DEFAULT_DETECTORS,
    GATES,
    IP_DETECTORS,
    MASK_RE,
    Detector,
    Gate,
    TextView,
    mask,
    secret_value_detector,
)

if TYPE_CHECKING:
    from .config import RedactionConfig

# Keys whose whole value is a secret in structured data (compared after dropping separators).
_SECRET_KEY_SUFFIXES = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
    "credential",
    "credentials",
)
_AUTH_KEYS = frozenset({"authorization", "proxyauthorization"})
_AUTH_VALUE = re.compile(
    r"(?i)([ \t]*(?:bearer|basic|token|bot|negotiate|ntlm|digest|apikey)[ \t]+)?(.+)", re.S
)
_KEY_NORMALISE = re.compile(r"[^a-z0-9]")

# Shorter texts (single lines) skip the gates: each detector's substring precheck is cheaper
# than a gate's search and bookkeeping there. The findings are the same either way.
_GATED_MIN_CHARS = 2048

# What a gate leaves for its detectors: nothing (None), the whole text (its view), or some of
# its lines joined by newlines: (view, where each line starts in that view, and in the text).
_Subset = tuple[TextView, list[int], list[int]]


def _gate_lines(view: TextView, gate: Gate) -> list[tuple[int, int]]:
    """Return the ``(start, end)`` of every line of ``view.text`` where ``gate`` matches."""
    text = view.text
    pattern = gate.pattern
    lines: list[tuple[int, int]] = []
    if isinstance(pattern, str):  # one rare character: str.find is a memchr
        hay = view.views[gate.view]
        pos = hay.find(pattern)
        while pos != -1:
            start = text.rfind("\n", 0, pos) + 1
            end = text.find("\n", pos)
            if end == -1:
                lines.append((start, len(text)))
                break
            lines.append((start, end))
            pos = hay.find(pattern, end)
        return lines
    if gate.view == "digits":
        return _digit_lines(view, pattern)  # type: ignore[arg-type]
    search = pattern.search
    hay = view.views[gate.view]
    pos = 0
    while (m := search(hay, pos)) is not None:  # type: ignore[arg-type,call-overload]
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.end())
        if end == -1:
            lines.append((start, len(text)))
            break
        lines.append((start, end))
        pos = end + 1
    return lines


def _digit_lines(view: TextView, pattern: re.Pattern[bytes]) -> list[tuple[int, int]]:
    """Like ``_gate_lines`` for the digits view, whose lines are shorter than the text's."""
    hay = view.digits
    search = pattern.search
    numbers: list[int] = []
    line_no = counted = pos = 0  # line_no is the line number of hay[counted]
    while (m := search(hay, pos)) is not None:
        line_no += hay.count(b"\n", counted, m.start())
        counted = m.start()
        numbers.append(line_no)
        pos = hay.find(b"\n", m.end()) + 1
        if pos == 0:
            break
    if not numbers:
        return []
    text = view.text
    if numbers == [0] and "\n" not in text:
        return [(0, len(text))]
    starts = [0]
    starts.extend(accumulate(map((1).__add__, map(len, text.split("\n")))))
    return [(starts[n], starts[n + 1] - 1) for n in numbers]


def _subset(view: TextView, gate: Gate) -> _Subset | TextView | None:
    """Return what the detectors behind ``gate`` must search (see ``_Subset``)."""
    lines = _gate_lines(view, gate)
    if not lines:
        return None
    text = view.text
    if len(lines) == 1:
        start, end = lines[0]
        if start == 0 and end == len(text):
            return view
        return TextView(text[start:end]), [0], [start]
    parts = [text[start:end] for start, end in lines]
    sub_starts = [0]
    sub_starts.extend(accumulate(map((1).__add__, map(len, parts[:-1]))))
    return TextView("\n".join(parts)), sub_starts, [start for start, _ in lines]


def _run(
    find: Callable[[TextView], Iterable[tuple[int, int]]], target: _Subset | TextView | None
) -> Iterator[tuple[int, int]]:
    """Yield the spans ``find`` reports on ``target``, as offsets into the whole text."""
    if target is None:
        return
    found = find(target if isinstance(target, TextView) else target[0])
    if isinstance(target, TextView):
        yield from found
        return
    _, sub_starts, starts = target
    for start, end in found:
        i = bisect_right(sub_starts, start) - 1
        delta = starts[i] - sub_starts[i]
        yield start + delta, end + delta


def _find_masks(view: TextView) -> Iterator[tuple[int, int]]:
    return (m.span() for m in MASK_RE.finditer(view.text))


class _SpanSet:
    """Keep non-overlapping findings sorted by position; first come wins unless absorbing."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.kinds: list[str | None] = []  # None marks a mask already present in the input

    def offer(self, start: int, end: int, kind: str | None, absorbs: bool = False) -> None:
        """Add a finding unless it overlaps one kept earlier (see ``Detector.absorbs``)."""
        lo = bisect_right(self.ends, start)
        hi = bisect_left(self.starts, end, lo)
        if lo < hi:
            if not absorbs or self.starts[lo] < start or self.ends[hi - 1] > end:
                return  # partial overlap: keeping both would nest or split masks
            if None in self.kinds[lo:hi]:
                return  # never re-mask an existing mask (idempotence)
            if hi - lo == 1 and self.starts[lo] == start and self.ends[lo] == end:
                return  # same span: the earlier, more specific kind wins
        self.starts[lo:hi] = [start]
        self.ends[lo:hi] = [end]
        self.kinds[lo:hi] = [kind]


class Redactor:
    """Mask PII and secrets in text and JSON-like values, counting findings in ``stats``."""

    def __init__(
        self,
        secrets: Iterable[str] = (),
        keep_ip_addresses: bool = True,
        *,
        detectors: Sequence[Detector] | None = None,
        allow: Iterable[str] = (),
    ) -> None:
        """Build the detector table; ``detectors`` replaces the default table if given.

        ``allow`` lists exact values that are never masked (e.g. a public test key).
        """
        table = list(DEFAULT_DETECTORS if detectors is None else detectors)
        if not keep_ip_addresses:
            table.extend(IP_DETECTORS)
        self._base: tuple[Detector, ...] = tuple(table)
        self._secrets: list[str] = []
        self.allow: frozenset[str] = frozenset(allow)
        self.stats: Counter[str] = Counter()
        self.detectors: tuple[Detector, ...] = ()
        self._set_secrets(secrets)

    @classmethod
    def from_config(
        cls,
        config: RedactionConfig,
        secrets: Iterable[str] = (),
        *,
        keep_ip_addresses: bool | None = None,
    ) -> Redactor:
        """Build a redactor from a loaded ``RedactionConfig`` plus run-specific secret values.

        ``keep_ip_addresses`` overrides the config's setting when not None.
        """
        keep_ips = config.keep_ip_addresses if keep_ip_addresses is None else keep_ip_addresses
        return cls(
            secrets,
            keep_ips,
            detectors=(*DEFAULT_DETECTORS, *config.detectors()),
            allow=config.allow,
        )

    def add_secret(self, value: str) -> None:
        """Mask ``value`` (and its encoded forms) from now on; values under 4 chars are ignored."""
        if value not in self._secrets:
            self._set_secrets([*self._secrets, value])

    def _set_secrets(self, secrets: Iterable[str]) -> None:
        self._secrets = [s for s in dict.fromkeys(secrets) if isinstance(s, str)]
        table = list(self._base)
        secret_detector = secret_value_detector(self._secrets)
        if secret_detector is not None:
            table.append(secret_detector)
        self.detectors = tuple(sorted(table, key=lambda d: d.priority))

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Return the ``(start, end, kind)`` findings that ``redact_text`` would mask."""
        spans = _SpanSet()
        if len(text) < _GATED_MIN_CHARS:
            self._find_ungated(text, spans)
        else:
            self._find_gated(text, spans)
        allow = self.allow
        return [
            (start, end, kind)
            for start, end, kind in zip(spans.starts, spans.ends, spans.kinds, strict=True)
            if kind is not None and not (allow and text[start:end] in allow)
        ]

    def _find_ungated(self, text: str, spans: _SpanSet) -> None:
        offer = spans.offer
        if "[REDACTED:" in text:
            for m in MASK_RE.finditer(text):
                offer(m.start(), m.end(), None)
        view = TextView(text, eager=True)
        views = view.views
        # Prechecks are inlined (not Detector.may_match): per-call overhead matters when
        # redacting line by line.
        for detector in self.detectors:
            if detector.any_of:
                hay = views[detector.check_view]
                for needle in detector.any_of:
                    if needle in hay:
                        break
                else:
                    continue
            kind, absorbs = detector.kind, detector.absorbs
            for start, end in detector.find(view):
                offer(start, end, kind, absorbs)

    def _find_gated(self, text: str, spans: _SpanSet) -> None:
        offer = spans.offer
        view = TextView(text)
        # Masks already in the text are on lines where gate "c" matches ("[redacted:").
        subsets: dict[str, _Subset | TextView | None] = {"c": _subset(view, GATES["c"])}
        for start, end in _run(_find_masks, subsets["c"]):
            offer(start, end, None)
        for detector in self.detectors:
            target: _Subset | TextView | None = view
            gate = detector.gate
            if gate is not None:
                if gate in subsets:
                    target = subsets[gate]
                else:
                    target = subsets[gate] = _subset(view, GATES[gate])
                if target is None:
                    continue
            if detector.any_of:
                # On the gate's lines only: a missing needle there skips the detector.
                assert target is not None
                hay = (target if isinstance(target, TextView) else target[0]).views[
                    detector.check_view
                ]
                for needle in detector.any_of:
                    if needle in hay:
                        break
                else:
                    continue
            if detector.multiline:
                target = view
            kind, absorbs = detector.kind, detector.absorbs
            for start, end in _run(detector.find, target):
                offer(start, end, kind, absorbs)

    def redact_text(self, text: str) -> str:
        """Return ``text`` with every finding replaced by ``[REDACTED:<kind>]``."""
        findings = self.find(text)
        if not findings:
            return text
        parts: list[str] = []
        pos = 0
        for start, end, kind in findings:
            parts.append(text[pos:start])
            parts.append(mask(kind))
            pos = end
            self.stats[kind] += 1
        parts.append(text[pos:])
        return "".join(parts)

    def redact_window(self, text: str, start: int, end: int) -> str:
        """Return ``text[start:end]`` redacted, with ``text`` around it as context.

        A finding crossing ``start`` or ``end`` masks the part inside; it is counted in
        ``stats`` only by the window where it starts (so cut pieces of a long line count once).
        """
        parts: list[str] = []
        pos = start
        for f_start, f_end, kind in self.find(text):
            if f_end <= start or f_start >= end:
                continue
            parts.append(text[pos : max(f_start, start)])
            parts.append(mask(kind))
            pos = min(f_end, end)
            if f_start >= start or start == 0:
                self.stats[kind] += 1
        parts.append(text[pos:end])
        return "".join(parts)

    def redact_value(self, value: Any) -> Any:
        """Return a redacted copy of JSON-like data; values under secret-like keys are masked."""
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {key: self._redact_item(key, item) for key, item in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return type(value)(self.redact_value(item) for item in value)
        return value

    def _redact_item(self, key: Any, value: Any) -> Any:
        if not isinstance(key, str) or value is None or isinstance(value, bool):
            return self.redact_value(value)
        norm = _KEY_NORMALISE.sub("", key.lower())
        if norm in _AUTH_KEYS and isinstance(value, str):
            return self._redact_auth_value(value)
        secret_key = (
            norm.endswith(_SECRET_KEY_SUFFIXES)
            or norm == "pass"
            or key.lower().endswith(("_pass", "-pass", ".pass"))
        )
        if not secret_key or not isinstance(value, (str, int, float)):
            return self.redact_value(value)
        if value == "" or (
            isinstance(value, str) and (MASK_RE.fullmatch(value) or value in self.allow)
        ):
            return value
        self.stats["secret_assignment"] += 1
        return mask("secret_assignment")

    def _redact_auth_value(self, value: str) -> str:
        m = _AUTH_VALUE.fullmatch(value)
        if m is None or not m.group(2).strip() or MASK_RE.fullmatch(m.group(2)):
            return value
        self.stats["bearer"] += 1
        return (m.group(1) or "") + mask("bearer")
