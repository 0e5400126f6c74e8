"""Redactor: run the detector table over text and JSON-like values."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
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

# In texts this long each gate picks the lines its detectors search; in shorter ones (single
# lines, small chunks) a gate only says whether its detectors run at all, which costs less than
# collecting lines. The findings are the same either way.
_LINE_GATING_MIN_CHARS = 2048
# Longer texts are searched in blocks of whole lines of about this size: the views of a block
# stay in the CPU caches, where views of a 64 MB text would not. Findings do not change, since
# none crosses a newline except those of multiline detectors, which see the whole text.
_BLOCK_CHARS = 1 << 20

# What a gate leaves for its detectors: nothing (None), the whole text (its view), or some of
# its lines joined by newlines: (view, where each line starts in that view, and in the text).
_Subset = tuple[TextView, list[int], list[int]]


def _hay(view: TextView, gate: Gate) -> str | bytearray:
    """Return the view ``gate`` searches (all views are index-aligned with the text)."""
    return view.num if gate.view == "num" else view.views[gate.view]


def _next_hit(view: TextView, gate: Gate, hay: str | bytearray, pos: int) -> int:
    """Return where ``gate`` next matches in ``hay`` (its view) at or after ``pos``, or -1."""
    pattern, check = gate.pattern, gate.check
    if isinstance(pattern, (str, bytes)):  # a literal: find (a memchr for one character)
        pos = hay.find(pattern, pos)  # type: ignore[arg-type]
        while check is not None and pos != -1 and not check(view.text, pos):
            pos = hay.find(pattern, pos + len(pattern))  # type: ignore[arg-type]
        return pos
    search = pattern.search
    while (m := search(hay, pos)) is not None:  # type: ignore[arg-type]
        if check is None or check(view.text, m.start()):
            return m.start()
        pos = m.end()
    return -1


def _gate_lines(view: TextView, gate: Gate) -> list[tuple[int, int]]:
    """Return the ``(start, end)`` of every line of ``view.text`` where ``gate`` matches."""
    text = view.text
    hay = _hay(view, gate)
    if gate.split and hay.find(gate.run) != -1:  # type: ignore[arg-type]
        return sorted({line for part in gate.split for line in _gate_lines(view, part)})
    lines: list[tuple[int, int]] = []
    pos = _next_hit(view, gate, hay, 0)
    while pos != -1:
        start = text.rfind("\n", 0, pos) + 1
        end = text.find("\n", pos)
        if end == -1:
            lines.append((start, len(text)))
            break
        lines.append((start, end))
        pos = _next_hit(view, gate, hay, end + 1)
    return lines


def _probe(gate: Gate) -> Callable[[TextView], bool]:
    """Return a test of whether ``gate`` matches anywhere in a view, specialised to its kind.

    Short texts (single lines fed to a stream) ask every gate once, so the per-call cost of
    this test is most of their redaction time.
    """
    pattern, name = gate.pattern, gate.view
    if gate.split:
        whole = _probe(replace(gate, split=()))
        parts = [_probe(part) for part in gate.split]
        run = gate.run
        return lambda view: (
            any(probe(view) for probe in parts)
            if _hay(view, gate).find(run) != -1  # type: ignore[arg-type]
            else whole(view)
        )
    if gate.check is None and isinstance(pattern, re.Pattern):
        search = pattern.search
        if name == "num":
            return lambda view: search(view.num) is not None  # type: ignore[call-overload]
        return lambda view: search(view.views[name]) is not None  # type: ignore[call-overload]
    if gate.check is None and name != "num" and isinstance(pattern, str):
        return lambda view: pattern in view.views[name]
    return lambda view: _next_hit(view, gate, _hay(view, gate), 0) != -1


_PROBES = {name: _probe(gate) for name, gate in GATES.items()}


def _always(view: TextView) -> bool:
    return True


def _whole(view: TextView, name: str) -> TextView | None:
    """Return the whole view if gate ``name`` matches anywhere in it, else None."""
    return view if _PROBES[name](view) else None


def _subset(view: TextView, name: str) -> _Subset | TextView | None:
    """Return what the detectors behind gate ``name`` must search (see ``_Subset``)."""
    lines = _gate_lines(view, GATES[name])
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


# One detector's findings: (its place in the table, the detector, its spans).
_Found = tuple[int, Detector, list[tuple[int, int]]]


def _offer_all(spans: _SpanSet, masks: list[tuple[int, int]], found: list[_Found]) -> None:
    """Offer existing masks, then findings in table order: that order decides overlaps."""
    for start, end in masks:
        spans.offer(start, end, None)
    for _, detector, hits in sorted(found, key=lambda item: item[0]):
        kind, absorbs = detector.kind, detector.absorbs
        for start, end in hits:
            spans.offer(start, end, kind, absorbs)


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
        # Detectors grouped by gate (None: no gate), each with its place in the table, so a
        # gate that does not match skips all of its detectors at once.
        groups: dict[str | None, list[tuple[int, Detector]]] = {}
        for i, detector in enumerate(self.detectors):
            groups.setdefault(detector.gate, []).append((i, detector))
        self._groups = [
            (gate, _PROBES[gate] if gate is not None else _always, tuple(members))
            for gate, members in groups.items()
        ]

    def find(self, text: str, *, gated: bool = True) -> list[tuple[int, int, str]]:
        """Return the ``(start, end, kind)`` findings that ``redact_text`` would mask.

        ``gated=False`` runs every detector over the whole text instead of only where its
        gate matches: slower, with the same findings (the tests compare the two).
        """
        spans = _SpanSet()
        if not gated:
            self._find_ungated(text, spans)
        elif len(text) <= _BLOCK_CHARS:
            masks, found, _ = self._gated_findings(TextView(text), 0, whole=True)
            _offer_all(spans, masks, found)
        else:
            self._find_in_blocks(text, spans)
        allow = self.allow
        return [
            (start, end, kind)
            for start, end, kind in zip(spans.starts, spans.ends, spans.kinds, strict=True)
            if kind is not None and not (allow and text[start:end] in allow)
        ]

    def _find_ungated(self, text: str, spans: _SpanSet) -> None:
        offer = spans.offer
        for m in MASK_RE.finditer(text):
            offer(m.start(), m.end(), None)
        view = TextView(text, eager=True)
        for detector in self.detectors:
            if detector.may_match(view):
                kind, absorbs = detector.kind, detector.absorbs
                for start, end in detector.find(view):
                    offer(start, end, kind, absorbs)

    def _find_in_blocks(self, text: str, spans: _SpanSet) -> None:
        masks: list[tuple[int, int]] = []
        found: list[_Found] = []
        multiline: set[int] = set()
        start = 0
        while start < len(text):
            end = (
                text.rfind("\n", start, start + _BLOCK_CHARS)
                if start + _BLOCK_CHARS < len(text)
                else -1
            )
            end = len(text) if end <= start else end
            block_masks, block_found, wanted = self._gated_findings(
                TextView(text[start:end]), start, whole=False
            )
            masks += block_masks
            found += block_found
            multiline |= wanted
            start = end + 1
        view = TextView(text)
        for i in sorted(multiline):
            detector = self.detectors[i]
            hits = list(detector.find(view))
            if hits:
                found.append((i, detector, hits))
        _offer_all(spans, masks, found)

    def _gated_findings(
        self, view: TextView, offset: int, *, whole: bool
    ) -> tuple[list[tuple[int, int]], list[_Found], set[int]]:
        """Run each gate over ``view`` and the detectors behind the gates that match.

        Returns the masks already present, each detector's findings (shifted by ``offset``)
        and, unless ``whole``, the multiline detectors left to run on the whole text.
        """
        short = len(view.text) < _LINE_GATING_MIN_CHARS
        # Masks already in the text are on lines where gate "c" matches ("[redacted:").
        subsets: dict[str, _Subset | TextView | None] = {
            "c": _whole(view, "c") if short else _subset(view, "c")
        }
        masks = [(s + offset, e + offset) for s, e in _run(_find_masks, subsets["c"])]
        found: list[_Found] = []
        multiline: set[int] = set()
        for gate, probe, members in self._groups:
            target: _Subset | TextView | None = view
            if gate is not None:
                if short:
                    if not probe(view):
                        continue
                else:
                    target = subsets[gate] if gate in subsets else _subset(view, gate)
                    if target is None:
                        continue
            # A needle missing from the gate's lines skips the detector (see Detector.any_of).
            assert target is not None
            views = (target if isinstance(target, TextView) else target[0]).views
            for i, detector in members:
                if detector.any_of:
                    hay = views[detector.check_view]
                    for needle in detector.any_of:
                        if needle in hay:
                            break
                    else:
                        continue
                if detector.multiline and not whole:
                    multiline.add(i)
                    continue
                hits = list(_run(detector.find, view if detector.multiline else target))
                if hits:
                    if offset:
                        hits = [(s + offset, e + offset) for s, e in hits]
                    found.append((i, detector, hits))
        return masks, found, multiline

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
