"""Detector table: how each kind of PII or secret is found in text."""

from __future__ import annotations

import base64
import json
import re
import string
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from urllib.parse import quote, quote_plus

from .finders import (
    anchored_finder,
    behind_finder,
    entropy_finder,
    find_cookies,
    find_emails,
    find_user_options,
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
    is_placeholder,
    jwt_ok,
    national_phone_ok,
    slack_ok,
    ssn_ok,
    token_ok,
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
# The num view is the shape view with spaces read as dashes, so "4111 1111 1111 1111" and
# "4111-1111-1111-1111" (and "(415) 555-0134") share one shape and one gate pattern. Lower-case
# u, x and y read as one rare byte, so one gate finds the token prefixes xoxb-, xapp-, ya29.,
# the eyJ of JWTs and the -u/--user option in a single scan (all are case-sensitive).
_TOKEN_MARK = "\x01"
_NUM_BYTES = bytes.maketrans(
    (_SHAPE_FROM + " uxy").encode(), (_SHAPE_TO + "-" + _TOKEN_MARK * 3).encode()
)


class _Views(dict[str, str]):
    """Views of a ``TextView``, each computed the first time a detector asks for it."""

    __slots__ = ("owner",)

    def __init__(self, owner: TextView) -> None:
        super().__init__(text=owner.text)
        # A weak reference: a strong one would make each view a reference cycle, and a stream
        # redacting megabytes between two runs of the cyclic collector would keep them all.
        self.owner = weakref.ref(owner)

    def __missing__(self, name: str) -> str:
        value: str = getattr(self.owner(), name)
        self[name] = value
        return value


class TextView:
    """Hold a text and index-aligned views of it for detectors and gates to search.

    ``lower`` lets keyword patterns skip ``re.I``. ``shape`` has digits as '0' and A-Z as 'A',
    so digit patterns can start with a literal prefix (e.g. ``000-00-0000``) that the regex
    engine searches for quickly; patterns starting with a digit class crawl on log text.
    ``num`` is the shape as ASCII bytes with number separators unified (see ``_NUM_BYTES``),
    for the gates. Views are computed on first use.
    """

    __slots__ = ("__weakref__", "_lower", "_num", "_shape", "text", "views")

    views: dict[str, str]

    def __init__(self, text: str, *, eager: bool = False) -> None:
        """Hold ``text``; its views are computed when first used, or now if ``eager``.

        Eager views sit in a plain dict, which is faster to index: that pays on short texts,
        where nearly every view is used anyway.
        """
        self.text = text
        self._lower: str | None = None
        self._shape: str | None = None
        self._num: bytearray | None = None
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
    def num(self) -> bytearray:
        """Return the gate view of numbers and tokens as bytes (see ``_NUM_BYTES``).

        Non-ASCII characters read '?', one byte each, so offsets match the text.
        """
        if self._num is None:
            # "replace" turns each non-ASCII character into one '?', so offsets still match.
            # bytearray.translate is about twice as fast as bytes.translate.
            self._num = bytearray(self.text.encode("ascii", "replace")).translate(_NUM_BYTES)
        return self._num

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
    detector must lie on a line where the gate matches. A regex gate starts with a literal
    whose first character is rare in logs (the regex engine scans for that character, then
    checks the rest with lookarounds); a plain string is searched with ``find`` instead, which
    is a memchr for one character and a skipping search for a longer one. ``check``, if set,
    is asked about each match (text, match start) and can reject it.
    """

    view: str
    pattern: re.Pattern[str] | re.Pattern[bytes] | str | bytes
    check: Callable[[str, int], bool] | None = None
    # Gates that together find the lines ``pattern`` finds, used instead of it on a view holding
    # ``run``: in a long run of its first character a regex gate starts a match at every
    # position (a line of 'x' is one such run in the num view, at about 50 MB/s), while each
    # of these skips along in C. Slower than ``pattern`` everywhere else, hence only there.
    split: tuple[Gate, ...] = ()
    run: str | bytes = ""


def _gate(view: str, pattern: str) -> Gate:
    if len(pattern) == 1:
        return Gate(view, pattern)
    if view == "num":
        return Gate(view, re.compile(pattern.encode("ascii")))
    return Gate(view, re.compile(pattern))


_CARD_LEADS = frozenset("23456")
_CARD_BEFORE = frozenset(string.ascii_letters + string.digits + "_+")


def _card_run(text: str, pos: int) -> bool:
    """Tell whether the digit run at ``pos`` may be a card: Visa..Discover start with 2-6.

    Epoch milliseconds and snowflake ids start with 1, so JSON logs full of them do not
    send every line to the card detector; a 1 starts only UATP cards, of exactly 15 digits.
    """
    if pos and text[pos - 1] in _CARD_BEFORE:
        return False
    if text[pos] in _CARD_LEADS:
        return True
    return (
        text[pos] == "1"
        and text[pos + 13 : pos + 15].isdigit()
        and not text[pos + 15 : pos + 16].isdigit()
    )


# Number shapes in the num view (0 = digit, A = capital, - = space or dash), as the detectors
# behind the "num" gate write them: cards 0000-0000-0000-0 and 0000-000000-0000(0), SSNs
# 000-00-0000 (dashes or spaces), US phones 000-000-0000, (000)-000-0000 and (000)000-0000
# (also after a country code 1), and national numbers 000-0000-0000, 00000-000000,
# 00000-000-000, 00-00-00-00-00 and 00-0000000. The gate finds "0-00" and checks the rest of
# a shape after it; dates (0000-00-00), times, UUIDs, hex ids, decimals, version numbers and
# "HTTP 200 1234" do not have one. Dotted forms (000.000.0000, 000.00.0000) get their own
# gate anchored on the dot: a gate whose first character is rare in logs (a dot rather than a
# digit) scans about three times faster.
_NUM_GATE = (
    r"0-00(?:-00-00-0|00000(?<=00-0000000)|0(?:0-0000|-000|00(?<=0000-00000)"
    r"|0(?:(?<=000-00-0000)|(?<=\)-000-0000)|(?<=\)000-0000))))"
)

# Keys are the names in ``Detector.gate``; the comments say which detectors each one serves.
GATES: dict[str, Gate] = {
    # key, token, cookie, *key assignments, private keys, k_live_ (Stripe), hooks.slack.com
    "k": _gate("lower", r"k(?:e[yn]|ie|_(?:live|test|prod)_|s\.slack\.com)"),
    # secret, credentials, and masks already in the text
    "c": _gate("lower", r"re(?:[dt](?<=cre[dt])|dacted:(?<=\[redacted:))"),
    "s": _gate("lower", r"ss(?:ion(?<=session)|(?<=pass))"),  # session, pass*
    "w": _gate("lower", r"w(?:d(?<=pwd)|hsec_|(?<=pw))"),  # pw, pwd, whsec_ (Stripe)
    # GitHub and GitLab tokens, sig= (Azure SAS)
    "g": _gate("lower", r"g(?:h[pousr]_|ithub_pat_|lpat-|=(?<=sig=)|ocspx-)"),  # and GOCSPX-
    # Slack xoxb-/xapp-, Google ya29., JWT eyJ, -u and --user after a space, tab or newline (in
    # the num view u, x and y read \x01, J reads A and a space reads -: " -u" reads "--\x01")
    "t": replace(
        _gate(
            "num",
            r"\x01(?:o\x01[abposre]-|app-|a00\.|A(?<=e\x01A)|(?<=-\x01)(?<![^\n\t-]-\x01))",
        ),
        # Each starts with a literal other than the run's character, so the regex engine
        # skips along a run looking for that literal instead of trying a match at each place.
        split=(
            _gate("num", r"o\x01[abposre]-(?<=\x01o\x01.-)"),
            _gate("num", r"app-(?<=\x01app-)"),
            _gate("num", r"a00\.(?<=\x01a00\.)"),
            _gate("num", r"e\x01A"),
            _gate("num", r"-\x01(?<![^\n\t-]-\x01)"),
        ),
        run=_TOKEN_MARK.encode() * 16,
    ),
    "a": _gate("lower", r"a(?:uth|sic(?<=basic)|rer(?<=bearer))"),  # auth*, basic, bearer
    "A": _gate("text", r"A(?:KIA|SIA|BIA|CCA|Iza)"),  # AWS key ids, Google API keys
    "@": _gate("text", "@"),  # emails, user:password@ in URLs
    "~": _gate("text", "~"),  # Azure client secrets
    "+": _gate("text", "+"),  # E.164 phone numbers
    "num": _gate("num", _NUM_GATE),  # grouped cards, SSNs, phone numbers
    # dotted US phone numbers and SSNs: 415.555.0134, (415) 555.0134, 078.05.1120
    "dots": _gate(
        "num",
        r"\.0000(?!0)(?:(?<=000\.000\.0000)|(?<=000\.00\.0000)|(?<=\)000\.0000)|(?<=\)-000\.0000))",
    ),
    # Cards without separators: 13 or more digits starting with 2-6, or UATP (see _card_run).
    "run": Gate("num", b"0000000000000", _card_run),
    "iban": _gate("num", r"AA00(?<![A-Za-z0-9]AA00)-?[A0]{4}-?[A0]{4}"),
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
    ("token", r"token(?<!jsonwebtoken)", "k"),
    ("api", r"api[_-]?key", "k"),
    ("access", r"access[_-]?key", "k"),
    ("private", r"private[_-]?key", "k"),
    ("cred", r"cred(?:s|entials?)", "c"),
    ("pw", r"pw(?<![a-z]pw)(?=[\"' \t]*[:=])", "w"),  # pw=..., but not a word ending in pw
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


def _auth_value_ok(raw: str) -> bool:
    """Reject Authorization values that are placeholders ($TOKEN, <token>, XXXX, {base64(...)})."""
    return not is_placeholder(raw) and raw[0] not in "<{$%"


def _storage_key_ok(raw: str) -> bool:
    """Accept base64 keys (mixed case and digits), not words like storageaccountkeybase64."""
    return any(c.isupper() for c in raw) and any(c.islower() for c in raw) and has_digit(raw)


_IBAN_RE = re.compile(r"AA00(?<![A-Za-z0-9]AA00)(?: ?[A0]{4}){2,7}(?: ?[A0]{1,3})?(?![A-Za-z0-9])")


def _find_ibans(view: TextView) -> Iterator[Span]:
    """Yield IBANs; a grouped one followed by a short word ("... 8901 X in") loses the word."""
    text = view.text
    for m in _IBAN_RE.finditer(view.source("shape")):
        start, end = m.span()
        while not iban_ok(text[start:end]):
            cut = text.rfind(" ", start, end)
            if cut - start < 14:  # two letters, two digits and two groups at least
                break
            end = cut
        else:
            yield start, end


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
        r"eyJ[A-Za-z0-9_-]{4,}\.(?:[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*|eyJ[A-Za-z0-9_-]{4,})",
        validate=jwt_ok,
        any_of=("eyJ",),
        gate="t",
    ),
    _d(
        "aws_access_key_id",
        20,
        r"A(?:KIA|SIA|BIA|CCA)(?<![A-Z0-9]A[A-Z]{3})[A-Z0-9]{16}(?![A-Z0-9])",
        validate=token_ok,
        any_of=("AKIA", "ASIA", "ABIA", "ACCA"),
        gate="A",
    ),
    _d(
        "github_token",
        20,
        r"gh[pousr]_[A-Za-z0-9]{36,255}",
        validate=token_ok,
        any_of=("gh",),
        gate="g",
    ),
    _d(
        "github_token",
        20,
        r"github_pat_[A-Za-z0-9_]{22,255}",
        validate=token_ok,
        any_of=("github_pat_",),
        gate="g",
    ),
    _d(
        "gitlab_token",
        20,
        r"glpat-[A-Za-z0-9_-]{20,}",
        validate=token_ok,
        any_of=("glpat-",),
        gate="g",
    ),
    # Bot, user, workspace and legacy tokens have numeric groups and a last alphanumeric one
    # (xoxb-263594206564-FGqdd...); configuration tokens are xoxe.xoxp-1- and 160+ characters.
    _d(
        "slack_token",
        20,
        r"xox(?:e\.xox[bp]-\d-[A-Za-z0-9]{100,}"
        r"|[abposre]-(?<!xoxe\.xox[bp]-)(?:[0-9]+-)+[A-Za-z0-9]{8,}(?:-[A-Za-z0-9]+)*)",
        validate=slack_ok,
        any_of=("xox",),
        gate="t",
    ),
    _d(
        "slack_token",
        20,
        r"xapp-\d-[A-Za-z0-9-]{10,}",
        validate=token_ok,
        any_of=("xapp-",),
        gate="t",
    ),
    _d(
        "slack_token",
        20,
        r"hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/_-]{20,}",
        validate=token_ok,
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
        r"AIza(?<![\w-]AIza)[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])",
        validate=lambda raw: token_ok(raw, 3.5),
        any_of=("AIza",),
        gate="A",
    ),
    _d("google_oauth_token", 20, r"ya29\.[0-9A-Za-z_-]{20,}", any_of=("ya29.",), gate="t"),
    _d("google_oauth_token", 20, r"GOCSPX-[0-9A-Za-z_-]{20,}", any_of=("GOCSPX-",), gate="g"),
    Detector(
        "azure_client_secret",
        _on(
            "text",
            behind_finder(
                r"Q~[A-Za-z0-9_~.-]{31,34}(?![\w~.-])", r"[\w~.]{3}\d", 4, lambda raw: token_ok(raw)
            ),
        ),
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
        _auth_value_ok,
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
        r"://[^\s:/@]*:([^\s/?#@\"']+(?:@[^\s/?#@\"']+)*)@",
        1,
        any_of=("://",),
        absorbs=True,
        gate="@",
    ),
    # Connection strings (AccountKey=, SharedAccessKey=) and account keys under any name or
    # syntax: storageAccountKey = "...", { "AccountKey", "..." }, <account_key>...</account_key>,
    # -storagekey ... The value must be base64 of at least 30 characters.
    _d(
        "azure_storage_key",
        30,
        r"(?:account|storage|sharedaccess)[_-]?(?:access[_-]?)?key"
        r"[\"'\]]{0,3}[ \t]*(?:=>?|:|,|>|[ \t])[ \t]*[\"'@]?([a-z0-9+/]{30,}={0,2})(?![a-z0-9+/=])",
        1,
        _storage_key_ok,
        any_of=("key",),
        source="lower",
        absorbs=True,
        gate="k",
    ),
    _d(
        "azure_storage_key",
        30,
        r"sig=(?<![a-z0-9_]sig=)([a-z0-9%+/=_-]{8,})",
        1,
        any_of=("sig=",),
        source="lower",
        absorbs=True,
        gate="g",
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
    Detector("secret_assignment", _on("text", find_user_options), 40, ("-u",), gate="t"),
    Detector("cookie", _on("lower", find_cookies), 40, ("cookie",), "lower", True, "k"),
    *(_entropy_detector(key, gate) for key, gate in _ENTROPY_KEYS),
    Detector("iban", _find_ibans, 50, ("AA00",), "shape", gate="iban"),
    # Word characters around a card mean it is part of a hex id or token, not a card; the
    # AA00 lookbehinds stop the tail of an IBAN with a bad checksum reading as a card.
    _d(
        "card",
        50,
        r"0000(?<![\w+-]0000)(?<!AA00 0000)(?<!AA00 [A0]{4} 0000)"
        r"(?:[ -]0000[ -]0000[ -]0{1,4}(?:[ -]0{1,3})?|[ -]000000[ -]0{4,5})(?![\w-])",
        validate=card_ok,
        source="shape",
        any_of=("0000 0000 0000 0", "0000-0000-0000-0", "0000 000000 0000", "0000-000000-0000"),
        gate="num",
    ),
    _d(
        "card",
        50,
        r"0000000000000(?<![\w+-]0000000000000)(?<!AA00 0000000000000)"
        r"(?<!AA00 [A0]{4} 0000000000000)0{0,6}(?![\w-])",
        validate=card_ok,
        source="shape",
        any_of=("0" * 13,),
        gate="run",
    ),
    *(
        _d(
            "ssn",
            50,
            r"000([-. ])00\1(?<![\w.-]000[-. ]00[-. ])0000(?![\w-]|[.-]0)",
            validate=ssn_ok,
            any_of=("000-00-0000", "000.00.0000", "000 00 0000"),
            source="shape",
            gate=gate,
        )
        for gate in ("num", "dots")  # 078-05-1120 and 078 05 1120; 078.05.1120
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
        for gate in ("num", "dots")
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
        for sep, lit, gate in (("-", "-", "num"), (r"\.", ".", "dots"))
    ),
    *(
        _d(
            "phone",
            50,
            r"0[ .-](?<![\w(+.-]0[ .-])(?:\(000\) ?|000[ .-])000[ .-]0000(?!\w|[.-]0)",
            validate=lambda raw: raw[0] == "1" and us_phone_ok(raw[2:]),
            any_of=("0-000-000-0000", "0 (000) 000", "0.000.000.0000", "0 000 000 0000"),
            source="shape",
            gate=gate,
        )
        for gate in ("num", "dots")  # with the country code: 1-312-515-2239, 1 (312) 515-2239
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
            gate="num",
        )
        for shape in (
            "00 00 00 00 00",
            "000 0000 0000",
            "00000 000000",
            "00000 000 000",
            "00-0000000",  # Israel 09-7625400
        )
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
