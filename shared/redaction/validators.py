"""Checksum and plausibility checks that turn regex candidates into findings."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections import Counter
from functools import lru_cache


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
_CARD_SEP = re.compile(r"[ -]")
# UATP (1, 15 digits only), Visa, Mastercard, Maestro and Dankort (50, 56-58), Amex, Diners,
# JCB, Discover, UnionPay and the 6x Maestro ranges.
_CARD_IIN = re.compile(r"1(?=\d{14}$)|4|5[0-8]|2[2-7]|3[0-9]|6")


def card_ok(raw: str) -> bool:
    if raw[0] not in "123456":
        return False
    groups = _CARD_SEP.split(raw)
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


_IBAN_LENGTHS = {
    item[:2]: int(item[2:])
    for item in (
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 "
        "DO28 EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 "
        "IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 "
        "MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 SE24 SI19 SK24 SM27 "
        "ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20"
    ).split()
}


def iban_ok(raw: str) -> bool:
    iban = raw.replace(" ", "")
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def ssn_ok(raw: str) -> bool:
    area, group, serial = raw[:3], raw[4:6], raw[7:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def e164_ok(raw: str) -> bool:
    digits = sum(ch.isdigit() for ch in raw)
    # "+1234.5678" reads as a signed decimal, so dotted numbers need at least three groups
    return 8 <= digits <= 15 and ("." not in raw or raw.count(".") >= 2)


def us_phone_ok(raw: str) -> bool:
    area = raw[1] if raw[0] == "(" else raw[0]
    return area in "23456789"  # NANP area codes never start with 0 or 1


def basic_credential_ok(raw: str) -> bool:
    try:
        decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in decoded


def ipv4_ok(raw: str) -> bool:
    return all(part and int(part) <= 255 for part in raw.split("."))  # ".1.2.3": no head


def ipv6_ok(raw: str) -> bool:
    if "::" not in raw and raw.count(":") != 7 and not (raw.count(":") == 6 and "." in raw):
        return False  # times like 10:43:12; also spares ipaddress' slow exception path
    try:
        ipaddress.IPv6Address(raw)
    except ValueError:
        return False
    return True


def slack_ok(raw: str) -> bool:
    """Require a letter in a Slack token's last group (xoxp-1234-5678-#### is a placeholder)."""
    last = raw.rsplit("-", 1)[-1]
    return any(ch.isalpha() for ch in last) and token_ok(raw, 2.5)


def jwt_ok(raw: str) -> bool:
    """Accept a JWT whose header decodes to a JSON object (eyJAAAA.eyJBBB does not)."""
    if raw.count(".") >= 2 and raw.split(".")[2]:
        return True  # signed: three segments are evidence enough
    header = raw.split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        return isinstance(json.loads(decoded), dict)
    except (ValueError, binascii.Error):
        return False


def has_digit(raw: str) -> bool:
    return any(ch.isdigit() for ch in raw)


def shannon_entropy(value: str) -> float:
    """Return the Shannon entropy of ``value`` in bits per character."""
    if not value:
        return 0.0
    size = len(value)
    counts = Counter(value).values()
    return math.log2(size) - sum(n * math.log2(n) for n in counts) / size


_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
# Values that stand for a secret without being one (templating, masking, empty markers).
_PLACEHOLDER_RE = re.compile(
    r"(?i)(?:|null|none|nil|true|false|undefined|redacted|hidden|masked|secret|password|passwd"
    r"|pass|pwd|token|apikey|api_key|credentials?|\*+|x{3,}|\.{3,}|[-_]+|<.*>|\[[^\]]*\]"
    r"|\$?\{.*\}|\$\(.*\)?|\$[a-z_][a-z0-9_]*|\$\d+|%\(?[a-z_]*\)?s"
    r"|\[redacted:[a-z0-9_]+\]|.*fake.*)"
)
# One character repeated: XXXXXXXX, ********, 00000000 (documentation fills tokens with them).
_FILLERS = frozenset("xXyYzZaA*#.0-_")


@lru_cache(maxsize=4096)
def is_placeholder(value: str) -> bool:
    """Return True for values such as ``${DB_PASSWORD}``, ``<token>``, ``****`` or ``null``."""
    if _PLACEHOLDER_RE.fullmatch(value) is not None:
        return True
    return len(value) >= 6 and is_filler(value)


def is_filler(value: str) -> bool:
    """Return True when one filler character (x, *, 0 ...) makes up most of ``value``."""
    least = 0.6 * len(value)
    return any(value.count(char) >= least for char in _FILLERS)


@lru_cache(maxsize=4096)
def token_ok(raw: str, min_entropy: float = 3.0) -> bool:
    """Tell a provider token from a documentation placeholder (AKIAXXXX..., ghp_xxxx...)."""
    return shannon_entropy(raw) >= min_entropy and not is_filler(raw[4:] or raw)


_SEQUENCES = (
    "abcdefghijklmnopqrstuvwxyz",
    "zyxwvutsrqponmlkjihgfedcba",
    "0123456789",
    "9876543210",
)
# Host names and dotted identifiers (sm02915.int.contoso.com, X25519.KeyPair, s_rsa1024.pem)
_DOTTED_RE = re.compile(r"[A-Za-z][\w-]{0,29}(?:\.[A-Za-z][\w-]{0,29})+")


_LETTER_RUN_RE = re.compile(r"[a-z]{16}")


# Any 8 characters in a row of an alphabet or counter: 0123456789abcdef..., ABCDEFGH...
_SEQUENCE_RE = re.compile(
    "|".join(sorted({seq[i : i + 8] for seq in _SEQUENCES for i in range(len(seq) - 7)}))
)


def _sequential(value: str) -> bool:
    """Return True for alphabets and counters like ``0123456789abcdef...`` (detect-secrets)."""
    return _SEQUENCE_RE.search(value.lower()) is not None


@lru_cache(maxsize=4096)  # logs repeat the same values; the checks are pure
def looks_random(value: str) -> bool:
    """Return True when ``value`` looks like a generated credential rather than a word or id.

    Like detect-secrets' entropy plugins (limits 4.5 base64 / 3.0 hex, scaled here to the
    value's length) plus its UUID filter; lower-case values with '/' are paths, not keys.
    """
    if len(value) < 16 or not any(ch.isdigit() for ch in value):
        return False
    if not any(ch.isalpha() for ch in value) or ("/" in value and value.islower()):
        return False
    entropy = shannon_entropy(value)
    # A random string cannot reach log2(len) bits when it is short; cap the bar accordingly.
    if entropy < (3.0 if _HEX_RE.fullmatch(value) else min(3.5, math.log2(len(value)) - 0.5)):
        return False
    # Identifiers and fillers can pass the entropy bar: UUIDs, host names and dotted names,
    # alphabets, XXXX..., and runs of words (storageaccountkeybase64encoded).
    return not (
        _UUID_RE.fullmatch(value)
        or _DOTTED_RE.fullmatch(value)
        or _LETTER_RUN_RE.search(value)
        or _sequential(value)
        or is_filler(value)
    )


def national_phone_ok(raw: str) -> bool:
    # Trunk prefix '0' then a non-zero digit; "00" starts an international call prefix.
    return raw[0] == "0" and raw[1] != "0"
