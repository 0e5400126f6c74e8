"""Finders that are more than one regex: keyword assignments, entropy, emails, cookies, IPs.

Every finder keeps a finding inside one line (no match crosses a newline), so redacting many
lines joined together gives the same result as redacting them one by one.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterator

from .validators import is_placeholder, looks_random

Span = tuple[int, int]

# --- keyword assignments: password=..., "token": "...", --password ..., <secret>..</secret> ---

_ASSIGN = r"[\"'\\]{0,3}[ \t]*(?P<sep>[:=])>?[ \t]*"
# A bare value runs to whitespace or a quote; '&', ',' and ';' end it only when a new
# "key=" follows or nothing does ("pw=a;b&c" keeps "a;b&c", "token=x&page=2" stops at "&").
_BARE = r"(?P<bare>(?:[^\s\"'\\&,;]|[&,;](?=[^\s&,;])(?![\w.-]*[=:]))+)"
_VALUE = (
    r"(?:\\\"(?P<esc>(?:[^\"\\\n]|\\[^\"\n])*)\\\"|\"(?P<dq>(?:[^\"\\\n]|\\.)*)\""
    r"|'(?P<sq>[^'\n]*)'|" + _BARE + ")"
)
_TAIL = (
    "(?:" + _ASSIGN + _VALUE + r"|[ \t]+(?P<cli>[^\s\"'\\-][^\s\"'\\]*)"
    r"|(?:[ \t][^<>\n]{0,80})?>(?P<xml>[^<\n]{1,256})</)"
)
_VALUE_GROUPS = ("esc", "dq", "sq", "bare", "cli", "xml")
_NAME_CHARS = frozenset(string.ascii_lowercase + string.digits + "_.-")
_XML_NAME_CHARS = _NAME_CHARS | {":"}


def keyword_finder(keyword: str) -> Callable[[str], Iterator[Span]]:
    """Build a finder (over the lower-cased view) for values assigned to ``keyword``."""
    rx = re.compile(keyword + _TAIL)

    def find(lower: str) -> Iterator[Span]:
        for m in rx.finditer(lower):
            group = next(g for g in _VALUE_GROUPS if m.start(g) != -1)
            if group == "bare" and _in_url_userinfo(lower, m.start()):
                continue  # https://x-access-token:<secret>@host is url_password's
            start, end = m.span(group)
            if group == "cli" and not _prefixed(lower, m.start(), "--", _NAME_CHARS):
                continue
            if group == "xml" and not _prefixed(lower, m.start(), "<", _XML_NAME_CHARS):
                continue
            value = lower[start:end]
            if group == "xml":
                value = value.strip()
                start = end - len(lower[start:end].lstrip())
                end = start + len(value)
            if not value or is_placeholder(value):
                continue
            if keyword == "pwd" and value.startswith(("/", "~")):
                continue  # PWD is the working directory in environment dumps
            if group in ("bare", "cli") and not _credential_like(
                value, m.group("sep") if group == "bare" else " ", lower, end
            ):
                continue
            yield start, end

    return find


def _in_url_userinfo(text: str, pos: int) -> bool:
    scheme = text.rfind("://", max(0, pos - 64), pos)
    return scheme != -1 and not any(ch in " \t\n/@;=?&" for ch in text[scheme + 3 : pos])


def _prefixed(text: str, pos: int, marker: str, name_chars: frozenset[str]) -> bool:
    """Return True when the name ending at ``pos`` starts with ``marker`` (``--db-password``)."""
    start = pos
    while start > 0 and text[start - 1] in name_chars:
        start -= 1
    if marker == "--":
        head = text[start:pos]
        return head.startswith("--") and (start == 0 or text[start - 1] in " \t\n\"'=")
    return start > 0 and text[start - 1] == marker


def _credential_like(value: str, sep: str, text: str, end: int) -> bool:
    """Tell a credential from prose such as ``token: expected 3 segments``."""
    if sep == "=":
        return True  # env, query strings and DSNs assign explicitly
    if not value.isalpha():
        return True  # digits or symbols: not an ordinary word
    # A single word is a credential only when nothing else follows it on the line (YAML).
    rest = text[end : text.find("\n", end) if "\n" in text[end : end + 256] else end + 256]
    return not rest.strip(" \t\r,;.")


# --- high-entropy values next to secret-like keywords -----------------------------------------

_ENTROPY_TAIL = (
    r"[a-z0-9_.-]{0,24}[\"'\\]{0,3}[ \t]*(?:[:=]>?|[ \t])[ \t]*[\"'\\]{0,3}"
    r"(?P<v>[a-z0-9+/_.~-]{16,512}=*)(?![a-z0-9+/_.~=-])"
)


def entropy_finder(keyword: str) -> Callable[[str, str], Iterator[Span]]:
    """Build a finder for random-looking values shortly after ``keyword`` (lower view)."""
    rx = re.compile(keyword + _ENTROPY_TAIL)

    def find(lower: str, text: str) -> Iterator[Span]:
        for m in rx.finditer(lower):
            start, end = m.span("v")
            if looks_random(text[start:end]):
                yield start, end

    return find


# --- cookies --------------------------------------------------------------------------------

# The literal comes first so the regex engine can search for it (see detectors.py).
_COOKIE_RE = re.compile(r"cookie[\"']?[ \t]*[:=][ \t]*\"?([^\n\"]*)")
_NAME_BEFORE = frozenset(string.ascii_lowercase + string.digits + "_-")
_COOKIE_PAIR = re.compile(r"[ \t]*[^=;, \t]+=([^;\n\"]*)")


def find_cookies(lower: str) -> Iterator[Span]:
    """Yield cookie values of ``Cookie:`` (all pairs) and ``Set-Cookie:`` (the first pair)."""
    for m in _COOKIE_RE.finditer(lower):
        name_start = m.start() - 4 if lower[m.start() - 4 : m.start()] == "set-" else m.start()
        if name_start > 0 and lower[name_start - 1] in _NAME_BEFORE:
            continue  # "x-cookie-id", "nocookie=" ...
        set_cookie = name_start < m.start()
        pos, end = m.start(1), m.end(1)
        while pos < end:
            pair = _COOKIE_PAIR.match(lower, pos, end)
            if pair is None:
                break
            start, stop = pair.span(1)
            value = lower[start:stop].rstrip()
            if value and not is_placeholder(value):
                yield start, start + len(value)
            if set_cookie:
                break  # Set-Cookie attributes (Path, Expires...) are not secret
            pos = pair.end() + 1


# --- emails and IP addresses: anchored on a separator, walking back over a short head -------

_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}(?![\w-])")
_EMAIL_LOCAL = frozenset(string.ascii_letters + string.digits + "._%+-")


def find_emails(text: str) -> Iterator[Span]:
    """Yield email addresses, but not scp-style ``git@github.com:org/repo`` remotes."""
    # Anchor on '@' and walk back over the local part: a regex starting with a character class
    # would go quadratic on long runs of word characters (base64 blobs).
    for m in _EMAIL_DOMAIN.finditer(text):
        at = start = m.start()
        end = m.end()
        if text[end : end + 1] == ":" and text[end + 1 : end + 2] not in ("", " ", "\t", "\n"):
            continue
        while start > 0 and at - start < 64 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        if start < at:
            yield start, end


def anchored_finder(
    tail: re.Pattern[str],
    head: frozenset[str],
    max_head: int,
    forbidden_before: str,
    validate: Callable[[str], bool],
) -> Callable[[str], Iterator[Span]]:
    """Build a finder matching ``tail`` at a separator, then walking back over a short head."""

    def find(text: str) -> Iterator[Span]:
        pos = 0
        while (m := tail.search(text, pos)) is not None:
            start = m.start()
            while start > 0 and m.start() - start < max_head and text[start - 1] in head:
                start -= 1
            before = text[start - 1] if start else " "
            if (before.isalnum() or before in forbidden_before) or not validate(
                text[start : m.end()]
            ):
                pos = m.start() + 1  # the real match may start at a later separator
                continue
            yield start, m.end()
            pos = m.end()

    return find


def behind_finder(pattern: str, back: str, width: int) -> Callable[[str], Iterator[Span]]:
    """Build a finder for ``pattern`` whose match also takes the ``back`` chars before it.

    Patterns that start with a character class (``[sr]k_live_``) make the regex engine try
    every position; starting at the literal (``k_live_``) and looking back is much faster.
    """
    rx = re.compile(pattern)
    back_rx = re.compile(back)

    def find(text: str) -> Iterator[Span]:
        for m in rx.finditer(text):
            start = m.start() - width
            if start < 0 or not back_rx.fullmatch(text, start, m.start()):
                continue
            if start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_"):
                yield start, m.end()

    return find
