"""Detector table: how each kind of PII or secret is found in text."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

Span = tuple[int, int]
Finder = Callable[[str], Iterable[Span]]

MASK_RE = re.compile(r"\[REDACTED:[a-z0-9_]+\]")


def mask(kind: str) -> str:
    """Return the placeholder that replaces a finding of ``kind``."""
    return f"[REDACTED:{kind}]"


@dataclass(frozen=True)
class Detector:
    """Describe one way of finding one kind of sensitive data.

    ``priority`` orders the table (lower runs first and wins overlaps). ``any_of`` is a cheap
    substring precheck (against the lower-cased text when ``ignore_case``). An ``absorbs``
    detector may replace earlier findings that lie strictly inside its own span, so that e.g.
    ``password=<secret value>123`` becomes one mask instead of a partial one.
    """

    kind: str
    find: Finder
    priority: int
    any_of: tuple[str, ...] = ()
    ignore_case: bool = False
    absorbs: bool = False

    def may_match(self, text: str, lowered: str) -> bool:
        """Return False when the precheck proves the detector cannot match."""
        if not self.any_of:
            return True
        hay = lowered if self.ignore_case else text
        return any(needle in hay for needle in self.any_of)


def regex_finder(
    pattern: str | re.Pattern[str],
    group: int | str | tuple[int | str, ...] = 0,
    validate: Callable[[str], bool] | None = None,
) -> Finder:
    """Build a finder yielding the span of the first participating ``group`` of each match."""
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    groups = group if isinstance(group, tuple) else (group,)

    def find(text: str) -> Iterator[Span]:
        for m in rx.finditer(text):
            for g in groups:
                start, end = m.span(g)
                if start != -1:
                    break
            if end > start and (validate is None or validate(text[start:end])):
                yield start, end

    return find


# --- validators -----------------------------------------------------------------------------

def luhn_ok(digits: str) -> bool:
    """Return True when the digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Issuer prefixes of the big networks; requiring one keeps ids/timestamps (which start with 1)
# from being masked as cards even when their Luhn digit happens to fit.
_CARD_IIN = re.compile(r"4|5[1-5]|2[2-7]|3[47]|3[0689]|6(?:011|5|4[4-9]|22)|35")


def _card_ok(raw: str) -> bool:
    groups = re.split(r"[ -]", raw)
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19 or not _CARD_IIN.match(digits):
        return False
    if len(groups) > 1:
        if ("-" in raw) == (" " in raw):
            return False  # mixed separators: not how cards are written
        sizes = [len(g) for g in groups]
        four_blocks = all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4
        if not four_blocks and sizes not in ([4, 6, 5], [4, 6, 4]):
            return False
    return luhn_ok(digits)


_IBAN_LENGTHS = dict(
    (item[:2], int(item[2:]))
    for item in (
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 "
        "DO28 EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 "
        "IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 "
        "MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 SE24 SI19 SK24 SM27 "
        "ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20"
    ).split()
)


def _iban_ok(raw: str) -> bool:
    iban = raw.replace(" ", "")
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _ssn_ok(raw: str) -> bool:
    area, group, serial = raw.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _e164_ok(raw: str) -> bool:
    digits = sum(ch.isdigit() for ch in raw)
    # "+1234.5678" reads as a signed decimal, so dotted numbers need at least three groups
    return 8 <= digits <= 15 and ("." not in raw or raw.count(".") >= 2)


def _us_phone_ok(raw: str) -> bool:
    return raw[0] in "23456789" and raw[3] == raw[7]


def _basic_credential_ok(raw: str) -> bool:
    try:
        decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in decoded


def _ipv4_ok(raw: str) -> bool:
    return all(int(part) <= 255 for part in raw.split("."))


def _ipv6_ok(raw: str) -> bool:
    try:
        ipaddress.IPv6Address(raw)
    except ValueError:
        return False
    return True


def _has_digit(raw: str) -> bool:
    return any(ch.isdigit() for ch in raw)


# --- finders that are not a single regex ----------------------------------------------------

_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}(?![\w-])")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")


def _find_emails(text: str) -> Iterator[Span]:
    # Anchor on '@' and walk back over the local part: a regex starting with a character class
    # would go quadratic on long runs of word characters (base64 blobs).
    for m in _EMAIL_DOMAIN.finditer(text):
        at = start = m.start()
        while start > 0 and at - start < 64 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        if start < at:
            yield start, m.end()


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
    return Detector("secret_value", finder, priority, any_of=tuple(ordered) if len(ordered) <= 64
                    else ())


# --- the table --------------------------------------------------------------------------------

_KEY_WORDS = (
    r"passw(?:or)?d|(?<![a-z])pass|pwd|passphrase|secret(?:[_-]?key)?|token|api[_-]?key|"
    r"access[_-]?key|private[_-]?key|credentials?"
)
_ASSIGN = r"[\"'\\]{0,3}[ \t]*[:=]>?[ \t]*"
_VALUE = (
    r"(?:\\\"(?P<esc>(?:[^\"\\]|\\[^\"])*)\\\"|\"(?P<dq>(?:[^\"\\\n]|\\.)*)\"|'(?P<sq>[^'\n]*)'"
    r"|(?P<bare>[^\s\"'&,;\\]+))"
)
_VALUE_GROUPS = ("esc", "dq", "sq", "bare")
_SCHEMES = r"(?:bearer|basic|token|bot|negotiate|ntlm|digest|apikey)"


def _d(kind: str, priority: int, pattern: str, group: int | str | tuple[int | str, ...] = 0,
       validate: Callable[[str], bool] | None = None, any_of: tuple[str, ...] = (),
       ignore_case: bool = False, absorbs: bool = False) -> Detector:
    return Detector(kind, regex_finder(pattern, group, validate), priority, any_of, ignore_case,
                    absorbs)


_PEM = r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----"

DEFAULT_DETECTORS: tuple[Detector, ...] = (
    # Unterminated blocks (truncated output) are masked to the end of the text.
    _d("private_key", 0,
       _PEM + r"(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY-----|[\s\S]*\Z)", any_of=("PRIVATE KEY",)),
    _d("jwt", 20, r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", any_of=("eyJ",)),
    _d("aws_access_key_id", 20, r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])",
       any_of=("AKIA", "ASIA")),
    _d("github_token", 20, r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}",
       any_of=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    _d("slack_token", 20, r"xox[abposr]-[A-Za-z0-9-]{10,}", any_of=("xox",)),
    _d("stripe_key", 20, r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}",
       any_of=("_live_", "_test_")),
    _d("google_api_key", 20, r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", any_of=("AIza",)),
    _d("bearer", 30,
       r"(?i)\b(?:proxy-)?authorization" + _ASSIGN + r"[\"'\\]*(?:" + _SCHEMES + r"[ \t]+)?"
       r"([^\s\"',;\\]+)", 1, any_of=("authoriz",), ignore_case=True, absorbs=True),
    _d("bearer", 30, r"(?i)\bbearer[ \t]+([A-Za-z0-9._~+/-]{16,}=*)", 1, _has_digit,
       any_of=("bearer",), ignore_case=True, absorbs=True),
    _d("bearer", 30, r"(?i)\bbasic[ \t]+([A-Za-z0-9+/]{8,}={0,2})(?![\w+/=])", 1,
       _basic_credential_ok, any_of=("basic",), ignore_case=True, absorbs=True),
    _d("url_password", 30, r"://[^\s:/@]*:([^\s/?#@]+(?:@[^\s/?#@]+)*)@", 1, any_of=("://",),
       absorbs=True),
    _d("azure_storage_key", 30, r"(?i)\b(?:AccountKey|SharedAccessKey)=([A-Za-z0-9+/=]{16,})", 1,
       any_of=("accountkey", "sharedaccesskey"), ignore_case=True, absorbs=True),
    _d("azure_storage_key", 30, r"(?i)\bsig=([A-Za-z0-9%+/=_-]{8,})", 1, any_of=("sig=",),
       ignore_case=True, absorbs=True),
    _d("aws_secret_access_key", 30,
       r"(?i)(?:aws_?secret(?:_?access)?(?:_?key)?|secret_?access_?key)" + _ASSIGN
       + r"[\"'\\]*([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])", 1,
       any_of=("aws_secret", "awssecret", "secret_access", "secretaccess"), ignore_case=True,
       absorbs=True),
    _d("secret_assignment", 40, r"(?i)(?:" + _KEY_WORDS + r")" + _ASSIGN + _VALUE, _VALUE_GROUPS,
       any_of=("pass", "pwd", "secret", "token", "key", "credential"), ignore_case=True,
       absorbs=True),
    _d("iban", 50,
       r"[A-Z]{2}(?<![A-Za-z0-9][A-Z]{2})\d\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
       r"(?![A-Za-z0-9])", validate=_iban_ok),
    # Patterns start with the digit itself (boundary checked by a lookbehind after it) so the
    # regex engine can skip quickly to candidate characters.
    _d("card", 50, r"\d(?<![\d+-]\d)(?:[ -]?\d){12,18}(?![\d-])", validate=_card_ok),
    _d("ssn", 50, r"\d(?<![\d-]\d)\d\d-\d\d-\d{4}(?![\d-])", validate=_ssn_ok, any_of=("-",)),
    Detector("email", _find_emails, 50, any_of=("@",)),
    _d("phone", 50, r"\+(?<![\w+]\+)[1-9](?:[ .()-]{0,2}\d){7,14}(?!\w|[.-]\d)",
       validate=_e164_ok, any_of=("+",)),
    _d("phone", 50, r"(?<![\w(+.-])\([2-9]\d\d\) ?\d{3}[-.]\d{4}(?!\w|[.-]\d)", any_of=("(",)),
    _d("phone", 50, r"\d(?<![\w(+.-]\d)\d\d[-.]\d{3}[-.]\d{4}(?!\w|[.-]\d)",
       validate=_us_phone_ok),
)

IP_DETECTORS: tuple[Detector, ...] = (
    _d("ipv4", 60, r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)",
       validate=_ipv4_ok, any_of=(".",)),
    _d("ipv6", 60,
       r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}|(?=::))(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}"
       r"(?![\w:]|\.\d)", validate=_ipv6_ok, any_of=("::", ":")),
)
