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


class TextView:
    """Hold a text and index-aligned views of it for detectors to search.

    ``lower`` lets keyword patterns skip ``re.I``. ``shape`` has digits as '0' and A-Z as 'A',
    so digit patterns can start with a literal prefix (e.g. ``000-00-0000``) that the regex
    engine searches for quickly; patterns starting with a digit class crawl on log text.
    """

    __slots__ = ("lower", "shape", "text", "views")

    def __init__(self, text: str) -> None:
        """Build the views of ``text``."""
        self.text = text
        lower = text.lower()
        if len(lower) != len(text):
            # A few non-ASCII characters change length when lower-cased; keep offsets valid.
            lower = text.translate(_ASCII_LOWER)
        self.lower = lower
        if text.isascii():  # bytes.translate is several times faster than str.translate
            self.shape = text.encode("ascii").translate(_SHAPE_BYTES).decode("ascii")
        else:
            self.shape = text.translate(_SHAPE)
        self.views = {"text": text, "lower": lower, "shape": self.shape}

    def source(self, name: str) -> str:
        """Return the view called ``name`` ("text", "lower" or "shape")."""
        return self.views[name]


@dataclass(frozen=True)
class Detector:
    """Describe one way of finding one kind of sensitive data.

    ``priority`` orders the table (lower runs first and wins overlaps). ``any_of`` is a cheap
    precheck: the detector runs only if one of these substrings occurs in the view named by
    ``check_view`` ("text", "lower" or "shape"). An ``absorbs`` detector may replace earlier
    findings lying strictly inside its own span, so ``password=<secret value>123`` becomes one
    mask instead of a partial one.
    """

    kind: str
    find: Finder
    priority: int
    any_of: tuple[str, ...] = ()
    check_view: str = "text"
    absorbs: bool = False

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
# once and relies on the result being the same as line by line.

_IPV4_TAIL = re.compile(r"\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?!\w|\.[0-9])")
_IPV6_TAIL = re.compile(
    r":[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,7}(?:\.[0-9]{1,3}){0,3}(?![\w:]|\.[0-9])"
)
_HEX = frozenset(string.hexdigits)
_ASSIGN = r"[\"'\\]{0,3}[ \t]*[:=]>?[ \t]*"
_SCHEMES = r"(?:bearer|basic|token|bot|negotiate|ntlm|digest|apikey)"
# (literal every match starts with, keyword pattern) for secret_assignment
_SECRET_KEYS = (
    ("pass", r"pass(?:w(?:or)?d|phrase|(?<![a-z]pass))"),  # bare "pass" but not "bypass"
    ("pwd", r"pwd"),
    ("secret", r"secret(?:[_-]?key)?"),
    ("token", r"token"),
    ("api", r"api[_-]?key"),
    ("access", r"access[_-]?key"),
    ("private", r"private[_-]?key"),
    ("credential", r"credentials?"),
)
_ENTROPY_KEYS = ("key", "auth", "token", "secret", "session")
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
) -> Detector:
    finder = regex_finder(pattern, group, validate, source)
    return Detector(kind, finder, priority, any_of, source, absorbs)


def _on(source: str, find: Callable[[str], Iterable[Span]]) -> Finder:
    """Adapt a finder over one view of the text to the ``Finder`` signature."""
    return lambda view: find(view.views[source])


def _keyword_detector(literal: str, keyword: str) -> Detector:
    find = keyword_finder(keyword)
    return Detector("secret_assignment", _on("lower", find), 40, (literal,), "lower", True)


def _entropy_detector(keyword: str) -> Detector:
    find = entropy_finder(keyword)
    return Detector(
        "high_entropy", lambda view: find(view.lower, view.text), 45, (keyword,), "lower", True
    )


_PRIVATE_KEY = (
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*\Z)"
)

DEFAULT_DETECTORS: tuple[Detector, ...] = (
    # Unterminated blocks (truncated output) are masked to the end of the text.
    _d("private_key", 0, _PRIVATE_KEY, any_of=("PRIVATE KEY",)),
    _d("jwt", 20, r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", any_of=("eyJ",)),
    _d(
        "aws_access_key_id",
        20,
        r"A(?:KIA|SIA|BIA|CCA)(?<![A-Z0-9]A[A-Z]{3})[A-Z0-9]{16}(?![A-Z0-9])",
        any_of=("AKIA", "ASIA", "ABIA", "ACCA"),
    ),
    _d("github_token", 20, r"gh[pousr]_[A-Za-z0-9]{36,255}", any_of=("gh",)),
    _d("github_token", 20, r"github_pat_[A-Za-z0-9_]{22,255}", any_of=("github_pat_",)),
    _d("gitlab_token", 20, r"glpat-[A-Za-z0-9_-]{20,}", any_of=("glpat-",)),
    _d("slack_token", 20, r"xox[abposre]-[A-Za-z0-9-]{10,}", any_of=("xox",)),
    _d("slack_token", 20, r"xapp-\d-[A-Za-z0-9-]{10,}", any_of=("xapp-",)),
    _d(
        "slack_token",
        20,
        r"hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/_-]{20,}",
        any_of=("hooks.slack.com",),
    ),
    Detector(
        "stripe_key",
        _on("text", behind_finder(r"k_(?:live|test|prod)_[A-Za-z0-9]{10,}", "[sr]", 1)),
        20,
        ("k_live_", "k_test_", "k_prod_"),
    ),
    _d("stripe_key", 20, r"whsec_[A-Za-z0-9]{24,}", any_of=("whsec_",)),
    _d("google_api_key", 20, r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", any_of=("AIza",)),
    _d("google_oauth_token", 20, r"ya29\.[0-9A-Za-z_-]{20,}", any_of=("ya29.",)),
    _d("google_oauth_token", 20, r"GOCSPX-[0-9A-Za-z_-]{20,}", any_of=("GOCSPX-",)),
    Detector(
        "azure_client_secret",
        _on("text", behind_finder(r"Q~[A-Za-z0-9_~.-]{31,34}(?![\w~.-])", r"[\w~.]{3}\d", 4)),
        20,
        ("Q~",),
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
    ),
    _d(
        "url_password",
        30,
        r"://[^\s:/@]*:([^\s/?#@]+(?:@[^\s/?#@]+)*)@",
        1,
        any_of=("://",),
        absorbs=True,
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
    ),
    _d(
        "aws_secret_access_key",
        30,
        r"secret_?access_?key" + _AWS_SECRET,
        1,
        any_of=("secret_access", "secretaccess"),
        source="lower",
        absorbs=True,
    ),
    _d(
        "aws_secret_access_key",
        30,
        r"aws_?secret(?:_?key)?" + _AWS_SECRET,
        1,
        any_of=("aws_secret", "awssecret"),
        source="lower",
        absorbs=True,
    ),
    *(_keyword_detector(literal, key) for literal, key in _SECRET_KEYS),
    Detector("cookie", _on("lower", find_cookies), 40, ("cookie",), "lower", True),
    *(_entropy_detector(key) for key in _ENTROPY_KEYS),
    _d(
        "iban",
        50,
        r"AA00(?<![A-Za-z0-9]AA00)(?: ?[A0]{4}){2,7}(?: ?[A0]{1,3})?(?![A-Za-z0-9])",
        validate=iban_ok,
        any_of=("AA00",),
        source="shape",
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
    ),
    _d(
        "ssn",
        50,
        r"000-00-0000(?<![\w-]000-00-0000)(?![\w-])",
        validate=ssn_ok,
        any_of=("000-00-0000",),
        source="shape",
    ),
    Detector("email", _on("text", find_emails), 50, ("@",)),
    _d(
        "phone",
        50,
        r"\+(?<![\w+]\+)[1-9](?:[ .()-]{0,2}[0-9]){7,14}(?!\w|[.-][0-9])",
        validate=e164_ok,
        any_of=("+",),
    ),
    _d(
        "phone",
        50,
        r"\(000\)(?<![\w(+.-]\(000\)) ?000[-.]0000(?!\w|[.-]0)",
        validate=us_phone_ok,
        any_of=("(000)",),
        source="shape",
    ),
    *(
        _d(
            "phone",
            50,
            f"000{sep}000(?<![\\w(+.-]000{sep}000){sep}0000(?!\\w|[.-]0)",
            validate=us_phone_ok,
            any_of=(f"000{lit}000{lit}0000",),
            source="shape",
        )
        for sep, lit in (("-", "-"), (r"\.", "."))
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
