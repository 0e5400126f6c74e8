"""Detector table: how each kind of PII or secret is found in text."""

from __future__ import annotations

import base64
import json
import re
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

from .finders import (
    anchored_finder,
    behind_finder,
    entropy_finder,
    find_cookies,
    find_emails,
    keyword_finder,
)
from .validators import (
    basic_credential_ok,
    card_ok,
    e164_ok,
    has_digit,
    iban_ok,
    ipv4_ok,
    ipv6_ok,
    national_phone_ok,
    ssn_ok,
    us_phone_ok,
)

Span = tuple[int, int]
Finder = Callable[["TextView"], Iterable[Span]]

MASK_RE = re.compile(r"\[REDACTED:[a-z0-9_]+\]")


def mask(kind: str) -> str:
    """Return the placeholder that replaces a finding of ``kind``."""
    return f"[REDACTED:{kind}]"


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_SHAPE_FROM, _SHAPE_TO = string.digits + string.ascii_uppercase, "0" * 10 + "A" * 26
_SHAPE = str.maketrans(_SHAPE_FROM, _SHAPE_TO)
_SHAPE_BYTES = bytes.maketrans(_SHAPE_FROM.encode(), _SHAPE_TO.encode())
# The digits view is the shape view without the separators of phone and card numbers, so a
# number written "415 555-0134" reads as one run of zeros that a literal search can find.
# Dots stay: dropping them would make every IPv4 address and decimal look like a long number.
_DIGIT_SEPARATORS = " ()-"
_DIGITS = {**_SHAPE, **dict.fromkeys(map(ord, _DIGIT_SEPARATORS))}


class _Views(dict[str, str]):
    """Views of a ``TextView``, each computed the first time a detector asks for it."""

    __slots__ = ("owner",)

    def __init__(self, owner: TextView) -> None:
        super().__init__(text=owner.text)
        self.owner = owner

    def __missing__(self, name: str) -> str:
        value: str = getattr(self.owner, name)
        self[name] = value
        return value


class TextView:
    """Hold a text and index-aligned views of it for detectors to search.

    ``lower`` lets keyword patterns skip ``re.I``. ``shape`` has digits as '0' and A-Z as 'A',
    so digit patterns can start with a literal prefix (e.g. ``000-00-0000``) that the regex
    engine searches for quickly; patterns starting with a digit class crawl on log text.
    Views are computed on first use; ``digits`` is not index-aligned (see
    ``_DIGIT_SEPARATORS``).
    """

    __slots__ = ("_digits", "_lower", "_shape", "text", "views")

    views: dict[str, str]

    def __init__(self, text: str, *, eager: bool = False) -> None:
        """Hold ``text``; its views are computed when first used, or now if ``eager``.

        Eager views sit in a plain dict, which is faster to index: that pays on short texts,
        where nearly every view is used anyway.
        """
        self.text = text
        self._lower: str | None = None
        self._shape: str | None = None
        self._digits: bytes | None = None
        if eager:
            self.views = {"text": text, "lower": self.lower, "shape": self.shape}
        else:
            self.views = _Views(self)

    @property
    def lower(self) -> str:
        """Return the text with A-Z lower-cased (offsets unchanged)."""
        if self._lower is None:
            text = self.text
            lower = text.lower()
            if len(lower) != len(text):
                # A few non-ASCII characters change length when lower-cased; keep offsets.
                lower = text.translate(_ASCII_LOWER)
            self._lower = lower
        return self._lower

    @property
    def shape(self) -> str:
        """Return the text with digits as '0' and A-Z as 'A'."""
        if self._shape is None:
            text = self.text
            if text.isascii():  # bytes.translate is several times faster than str.translate
                self._shape = text.encode("ascii").translate(_SHAPE_BYTES).decode("ascii")
            else:
                self._shape = text.translate(_SHAPE)
        return self._shape

    @property
    def digits(self) -> bytes:
        """Return the shape view without number separators, UTF-8 encoded.

        Not index-aligned with ``text``; only its lines correspond to the lines of the text.
        """
        if self._digits is None:
            text = self.text
            if text.isascii():
                raw = text.encode("ascii").translate(_SHAPE_BYTES, _DIGIT_SEPARATORS.encode())
            else:
                raw = text.translate(_DIGITS).encode("utf-8", "surrogatepass")
            self._digits = raw
        return self._digits

    def source(self, name: str) -> str:
        """Return the view called ``name`` ("text", "lower" or "shape")."""
        try:
            return self.views[name]
        except KeyError:
            return getattr(self, name)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Gate:
    """A cheap search that finds the lines where a group of detectors can match.

    ``pattern`` runs over the whole text's ``view``; its detectors then run only on the
    lines holding a match, so one scan replaces a scan per detector. Every finding of a gated
    detector must lie on a line where the gate matches. Gate patterns start with a literal
    (so the regex engine searches for it quickly) and check the rest with lookarounds; a
    single rare character is searched with ``str.find`` instead, which is faster still.
    """

    view: str
    pattern: re.Pattern[str] | re.Pattern[bytes] | str


def _gate(view: str, pattern: str) -> Gate:
    if len(pattern) == 1:
        return Gate(view, pattern)
    if view == "digits":
        return Gate(view, re.compile(pattern.encode("ascii")))
    return Gate(view, re.compile(pattern))


# Keys are the names in ``Detector.gate``; the comments say which detectors each one serves.
GATES: dict[str, Gate] = {
    # key, token, cookie, *key assignments, private keys, k_live_ (Stripe), hooks.slack.com
    "k": _gate("lower", r"k(?:e[yn]|ie|_(?:live|test|prod)_|s\.slack\.com)"),
    # secret, credentials, and masks already in the text
    "c": _gate("lower", r"c(?:re[dt]|ted:(?<=\[redacted:))"),
    "s": _gate("lower", r"s(?:ession|ig=|s(?<=pass))"),  # session, sig=, pass*
    "w": _gate("lower", r"w(?:d(?<=pwd)|hsec_)"),  # pwd, whsec_ (Stripe)
    "g": _gate("lower", r"g(?:h[pousr]_|ithub_pat_|lpat-)"),  # GitHub and GitLab tokens
    "x": _gate("lower", r"x(?:ox[abposre]-|app-|-(?<=gocspx-))"),  # Slack, GOCSPX-
    "y": _gate("lower", r"y(?:a29\.|j(?<=eyj))"),  # ya29. (Google OAuth), eyJ (JWT)
    "a": _gate("lower", r"a(?:uth|sic(?<=basic)|rer(?<=bearer))"),  # auth*, basic, bearer
    "A": _gate("text", r"A(?:KIA|SIA|BIA|CCA|Iza)"),  # AWS key ids, Google API keys
    "@": _gate("text", "@"),  # emails, user:password@ in URLs
    "~": _gate("text", "~"),  # Azure client secrets
    "+": _gate("text", "+"),  # E.164 phone numbers
    # Cards, SSNs and phone numbers have at least 9 digits once separators are dropped, except
    # 000.000.0000 and (000) 000.0000; an IBAN has two letters, two digits and 11 more.
    "digits": _gate("digits", r"000000000"),
    "dots": _gate("digits", r"\.0000(?:(?<=000\.000\.0000)|(?<=000000\.0000))"),
    "iban": _gate("digits", r"AA00[A0]{11}"),
}


@dataclass(frozen=True)
class Detector:
    """Describe one way of finding one kind of sensitive data.

    ``priority`` orders the table (lower runs first and wins overlaps). ``any_of`` is a cheap
    precheck: the detector runs only if one of these substrings occurs in the view named by
    ``check_view`` ("text", "lower" or "shape"). An ``absorbs`` detector may replace earlier
    findings lying strictly inside its own span, so ``password=<secret value>123`` becomes one
    mask instead of a partial one. ``gate`` names an entry of ``GATES``: the detector then
    runs only on the lines where that gate matches (its findings must stay inside one line),
    or, if ``multiline``, on the whole text when the gate matches and ``any_of`` is found on
    the gate's lines.
    """

    kind: str
    find: Finder
    priority: int
    any_of: tuple[str, ...] = ()
    check_view: str = "text"
    absorbs: bool = False
    gate: str | None = None
    multiline: bool = False

    def may_match(self, view: TextView) -> bool:
        """Return False when the precheck proves the detector cannot match."""
        if not self.any_of:
            return True
        hay = view.source(self.check_view)
        return any(needle in hay for needle in self.any_of)


def regex_finder(
    pattern: str | re.Pattern[str],
    group: int | str | tuple[int | str, ...] = 0,
    validate: Callable[[str], bool] | None = None,
    source: str = "text",
) -> Finder:
    """Build a finder running ``pattern`` over a view; spans are validated on the real text."""
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    groups = group if isinstance(group, tuple) else (group,)

    def find(view: TextView) -> Iterator[Span]:
        text = view.text
        for m in rx.finditer(view.source(source)):
            for g in groups:
                start, end = m.span(g)
                if start != -1:
                    break
            if end > start and (validate is None or validate(text[start:end])):
                yield start, end

    return find


def _secret_variants(secret: str) -> set[str]:
    raw = secret.encode()
    found = {
        secret,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        quote(secret),
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    # Base64 of the secret embedded in a longer value (e.g. Basic "user:secret") starts at any
    # of three byte offsets; keep only the characters that depend on the secret alone.
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw).decode()
        core = enc[-(-pad * 8 // 6) : (pad + len(raw)) * 8 // 6]
        if len(core) >= 6:
            found.add(core)
            found.add(core.replace("+", "-").replace("/", "_"))
    return {v for v in found if len(v) >= 4}


def secret_value_detector(secrets: Iterable[str], priority: int = 10) -> Detector | None:
    """Build a detector for exact secret values and their encoded forms, or None if none apply."""
    variants: set[str] = set()
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= 4:
            variants |= _secret_variants(secret)
    if not variants:
        return None
    ordered = sorted(variants, key=len, reverse=True)  # longest alternative wins at a position
    finder = regex_finder("|".join(map(re.escape, ordered)))
    # With many variants the substring precheck costs more than it saves.
    return Detector("secret_value", finder, priority, tuple(ordered) if len(ordered) <= 64 else ())


# --- the table --------------------------------------------------------------------------------
# Keyword patterns run on the lower-cased view and digit patterns on the shape view; boundary
# lookbehinds come after the literal so the engine can still search for the literal prefix
# (a pattern starting with a character class or an alternation is 40x slower on log text).
# No pattern may cross a newline except the PEM block: StreamRedactor redacts many lines at
# once and relies on the result being the same as line by line, and on long texts each gated
# detector runs only on the lines its gate picked (see GATES). A detector added without a gate
# runs on the whole text, as before; when adding one to a gate, the gate's pattern must match
# on every line where the detector can find something (tests/unit/test_redaction_gates.py).

_IPV4_TAIL = re.compile(r"\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?!\w|\.[0-9])")
_IPV6_TAIL = re.compile(
    r":[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,7}(?:\.[0-9]{1,3}){0,3}(?![\w:]|\.[0-9])"
)
_HEX = frozenset(string.hexdigits)
_ASSIGN = r"[\"'\\]{0,3}[ \t]*[:=]>?[ \t]*"
_SCHEMES = r"(?:bearer|basic|token|bot|negotiate|ntlm|digest|apikey)"
# (literal every match starts with, keyword pattern, gate) for secret_assignment
_SECRET_KEYS = (
    ("pass", r"pass(?:w(?:or)?d|phrase|(?<![a-z]pass))", "s"),  # bare "pass" but not "bypass"
    ("pwd", r"pwd", "w"),
    ("secret", r"secret(?:[_-]?key)?", "c"),
    ("token", r"token", "k"),
    ("api", r"api[_-]?key", "k"),
    ("access", r"access[_-]?key", "k"),
    ("private", r"private[_-]?key", "k"),
    ("credential", r"credentials?", "c"),
)
_ENTROPY_KEYS = (("key", "k"), ("auth", "a"), ("token", "k"), ("secret", "c"), ("session", "s"))
_AWS_SECRET = _ASSIGN + r"[\"'\\]*([a-z0-9/+=]{40})(?![a-z0-9/+=])"


def _d(
    kind: str,
    priority: int,
    pattern: str,
    group: int | str | tuple[int | str, ...] = 0,
    validate: Callable[[str], bool] | None = None,
    any_of: tuple[str, ...] = (),
    source: str = "text",
    absorbs: bool = False,
    gate: str | None = None,
) -> Detector:
    finder = regex_finder(pattern, group, validate, source)
    return Detector(kind, finder, priority, any_of, source, absorbs, gate)


def _on(source: str, find: Callable[[str], Iterable[Span]]) -> Finder:
    """Adapt a finder over one view of the text to the ``Finder`` signature."""
    return lambda view: find(view.views[source])


def _keyword_detector(literal: str, keyword: str, gate: str) -> Detector:
    find = keyword_finder(keyword)
    return Detector("secret_assignment", _on("lower", find), 40, (literal,), "lower", True, gate)


def _entropy_detector(keyword: str, gate: str) -> Detector:
    find = entropy_finder(keyword)
    return Detector(
        "high_entropy",
        lambda view: find(view.lower, view.text),
        45,
        (keyword,),
        "lower",
        True,
        gate,
    )


_PRIVATE_KEY = (
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*\Z)"
)

DEFAULT_DETECTORS: tuple[Detector, ...] = (
    # Unterminated blocks (truncated output) are masked to the end of the text.
    Detector(
        "private_key",
        regex_finder(_PRIVATE_KEY),
        0,
        ("PRIVATE KEY",),
        gate="k",
        multiline=True,
    ),
    _d(
        "jwt",
        20,
        r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
        any_of=("eyJ",),
        gate="y",
    ),
    _d(
        "aws_access_key_id",
        20,
        r"A(?:KIA|SIA|BIA|CCA)(?<![A-Z0-9]A[A-Z]{3})[A-Z0-9]{16}(?![A-Z0-9])",
        any_of=("AKIA", "ASIA", "ABIA", "ACCA"),
        gate="A",
    ),
    _d("github_token", 20, r"gh[pousr]_[A-Za-z0-9]{36,255}", any_of=("gh",), gate="g"),
    _d(
        "github_token",
        20,
        r"github_pat_[A-Za-z0-9_]{22,255}",
        any_of=("github_pat_",),
        gate="g",
    ),
    _d("gitlab_token", 20, r"glpat-[A-Za-z0-9_-]{20,}", any_of=("glpat-",), gate="g"),
    _d("slack_token", 20, r"xox[abposre]-[A-Za-z0-9-]{10,}", any_of=("xox",), gate="x"),
    _d("slack_token", 20, r"xapp-\d-[A-Za-z0-9-]{10,}", any_of=("xapp-",), gate="x"),
    _d(
        "slack_token",
        20,
        r"hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/_-]{20,}",
        any_of=("hooks.slack.com",),
        gate="k",
    ),
    Detector(
        "stripe_key",
        _on("text", behind_finder(r"k_(?:live|test|prod)_[A-Za-z0-9]{10,}", "[sr]", 1)),
        20,
        ("k_live_", "k_test_", "k_prod_"),
        gate="k",
    ),
    _d("stripe_key", 20, r"whsec_[A-Za-z0-9]{24,}", any_of=("whsec_",), gate="w"),
    _d(
        "google_api_key",
        20,
        r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])",
        any_of=("AIza",),
        gate="A",
    ),
    _d("google_oauth_token", 20, r"ya29\.[0-9A-Za-z_-]{20,}", any_of=("ya29.",), gate="y"),
    _d("google_oauth_token", 20, r"GOCSPX-[0-9A-Za-z_-]{20,}", any_of=("GOCSPX-",), gate="x"),
    Detector(
        "azure_client_secret",
        _on("text", behind_finder(r"Q~[A-Za-z0-9_~.-]{31,34}(?![\w~.-])", r"[\w~.]{3}\d", 4)),
        20,
        ("Q~",),
        gate="~",
    ),
    _d(
        "bearer",
        30,
        r"authorization(?<![a-z0-9_]authorization)"
        + _ASSIGN
        + r"[\"'\\]*(?:"
        + _SCHEMES
        + r"[ \t]+)?([^\s\"',;\\]+)",
        1,
        any_of=("authorization",),
        source="lower",
        absorbs=True,
        gate="a",
    ),
    _d(
        "bearer",
        30,
        r"bearer(?<![a-z0-9_]bearer)[ \t]+([a-z0-9._~+/-]{16,}=*)",
        1,
        has_digit,
        any_of=("bearer",),
        source="lower",
        absorbs=True,
        gate="a",
    ),
    _d(
        "bearer",
        30,
        r"basic(?<![a-z0-9_]basic)[ \t]+([a-z0-9+/]{8,}={0,2})(?![\w+/=])",
        1,
        basic_credential_ok,
        any_of=("basic",),
        source="lower",
        absorbs=True,
        gate="a",
    ),
    _d(
        "url_password",
        30,
        r"://[^\s:/@]*:([^\s/?#@]+(?:@[^\s/?#@]+)*)@",
        1,
        any_of=("://",),
        absorbs=True,
        gate="@",
    ),
    *(
        _d(
            "azure_storage_key",
            30,
            key + r"=([a-z0-9+/=]{16,})",
            1,
            any_of=(key,),
            source="lower",
            absorbs=True,
            gate="k",
        )
        for key in ("accountkey", "sharedaccesskey")
    ),
    _d(
        "azure_storage_key",
        30,
        r"sig=(?<![a-z0-9_]sig=)([a-z0-9%+/=_-]{8,})",
        1,
        any_of=("sig=",),
        source="lower",
        absorbs=True,
        gate="s",
    ),
    _d(
        "aws_secret_access_key",
        30,
        r"secret_?access_?key" + _AWS_SECRET,
        1,
        any_of=("secret_access", "secretaccess"),
        source="lower",
        absorbs=True,
        gate="k",
    ),
    _d(
        "aws_secret_access_key",
        30,
        r"aws_?secret(?:_?key)?" + _AWS_SECRET,
        1,
        any_of=("aws_secret", "awssecret"),
        source="lower",
        absorbs=True,
        gate="c",
    ),
    *(_keyword_detector(literal, key, gate) for literal, key, gate in _SECRET_KEYS),
    Detector("cookie", _on("lower", find_cookies), 40, ("cookie",), "lower", True, "k"),
    *(_entropy_detector(key, gate) for key, gate in _ENTROPY_KEYS),
    _d(
        "iban",
        50,
        r"AA00(?<![A-Za-z0-9]AA00)(?: ?[A0]{4}){2,7}(?: ?[A0]{1,3})?(?![A-Za-z0-9])",
        validate=iban_ok,
        any_of=("AA00",),
        source="shape",
        gate="iban",
    ),
    # Word characters around a card mean it is part of a hex id or token, not a card; the
    # AA00 lookbehinds stop the tail of an IBAN with a bad checksum reading as a card.
    _d(
        "card",
        50,
        r"0000(?<![\w+-]0000)(?<!AA00 0000)(?<!AA00 [A0]{4} 0000)(?:0{9,15}"
        r"|[ -]0000[ -]0000[ -]0{1,4}(?:[ -]0{1,3})?|[ -]000000[ -]0{4,5})(?![\w-])",
        validate=card_ok,
        source="shape",
        any_of=(
            "0" * 13,
            "0000 0000 0000 0",
            "0000-0000-0000-0",
            "0000 000000 0000",
            "0000-000000-0000",
        ),
        gate="digits",
    ),
    _d(
        "ssn",
        50,
        r"000-00-0000(?<![\w-]000-00-0000)(?![\w-])",
        validate=ssn_ok,
        any_of=("000-00-0000",),
        source="shape",
        gate="digits",
    ),
    Detector("email", _on("text", find_emails), 50, ("@",), gate="@"),
    _d(
        "phone",
        50,
        r"\+(?<![\w+]\+)[1-9](?:[ .()-]{0,2}[0-9]){7,14}(?!\w|[.-][0-9])",
        validate=e164_ok,
        any_of=("+",),
        gate="+",
    ),
    *(
        _d(
            "phone",
            50,
            r"\(000\)(?<![\w(+.-]\(000\)) ?000[-.]0000(?!\w|[.-]0)",
            validate=us_phone_ok,
            any_of=("(000)",),
            source="shape",
            gate=gate,
        )
        # The same detector twice: "(415) 555-0134" passes one gate, "(415) 555.0134" the other;
        # where both pass, the second finds nothing new (same spans are ignored).
        for gate in ("digits", "dots")
    ),
    *(
        _d(
            "phone",
            50,
            f"000{sep}000(?<![\\w(+.-]000{sep}000){sep}0000(?!\\w|[.-]0)",
            validate=us_phone_ok,
            any_of=(f"000{lit}000{lit}0000",),
            source="shape",
            gate=gate,
        )
        for sep, lit, gate in (("-", "-", "digits"), (r"\.", ".", "dots"))
    ),
    # National formats with a trunk '0': French "01 23 45 67 89", UK "020 7946 0958" and
    # "07700 900123". Only these exact groupings: other digit groups are timestamps or ids.
    *(
        _d(
            "phone",
            50,
            f"{shape}(?<![\\w(+.:/-]{shape})(?![\\w:/-]|[ .]0)",
            validate=national_phone_ok,
            any_of=(shape,),
            source="shape",
            gate="digits",
        )
        for shape in ("00 00 00 00 00", "000 0000 0000", "00000 000000", "00000 000 000")
    ),
)

IP_DETECTORS: tuple[Detector, ...] = (
    Detector(
        "ipv4",
        _on(
            "text",
            anchored_finder(_IPV4_TAIL, frozenset(string.digits), 3, "._", ipv4_ok),
        ),
        60,
        any_of=("0.0",),
        check_view="shape",
    ),
    Detector(
        "ipv6",
        _on("text", anchored_finder(_IPV6_TAIL, _HEX, 4, ":._", ipv6_ok)),
        60,
        any_of=(":",),
    ),
)
