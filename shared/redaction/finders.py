"""Finders that are more than one regex: keyword assignments, entropy, emails, cookies, IPs.

Every finder keeps a finding inside one line (no match crosses a newline), so redacting many
lines joined together gives the same result as redacting them one by one.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterator
from functools import lru_cache

from .validators import is_placeholder, looks_random

Span = tuple[int, int]

# --- keyword assignments: password=..., "token": "...", --password ..., <secret>..</secret> ---

# After the keyword: "[]" (PHP arrays) or a closing quote and bracket (some_dict["secret"]),
# an optional Go type ("var token string = ..."), then any of the assignment operators of
# env files, YAML, JSON, Go, Makefiles, PHP and Perl/Ruby ("=>").
_KEY_END = r"(?:\[\])?[\"'\\]{0,3}\]?(?:[ \t]+string)?"
_ASSIGN = r"[ \t]*(?P<sep>:{1,3}=|[?+.]=|=>?|:)[ \t]*(?:!![a-z]+[ \t]+)?"
# A bare value runs to whitespace or a quote; '&', ',' and ';' end it only when a new
# "key=" follows or nothing does ("pw=a;b&c" keeps "a;b&c", "token=x&page=2" stops at "&").
_BARE = r"(?P<bare>(?:[^\s\"'`\\&,;]|[&,;](?=[^\s&,;])(?![\w.-]*[=:]))+)"
_VALUE = (
    r"(?:\\\"(?P<esc>(?:[^\"\\\n]|\\[^\"\n])*)\\\"|@?\"(?P<dq>(?:[^\"\\\n]|\\.)*)\""
    r"|@?'(?P<sq>[^'\n]*)'|`(?P<bt>[^`\n]*)`|" + _BARE + ")"
)
# "AccountKey", "value" (a C# initialiser, a call's arguments): the key's closing quote first.
_PAIR = r"[\"']\]?[ \t]*,[ \t]*@?(?:\"(?P<pdq>[^\"\s]*)\"|'(?P<psq>[^'\s]*)')"
# apikey "value"; and fooapikeyfoo'value'; (C-like config files): quoted, then a semicolon.
_SEMI = r"[a-z0-9_]*[ \t]*(?:\"(?P<qdq>[^\"\s]*)\"|'(?P<qsq>[^'\s]*)');"
_TAIL = (
    "(?:"
    + _KEY_END
    + _ASSIGN
    + _VALUE
    + "|"
    + _PAIR
    + "|"
    + _SEMI
    + r"|[ \t]+(?P<cli>[^\s\"'\\-][^\s\"'\\]*)|(?:[ \t][^<>\n]{0,80})?>(?P<xml>[^<\n]{1,256})</)"
)
_VALUE_GROUPS = ("esc", "dq", "sq", "bt", "bare", "pdq", "psq", "qdq", "qsq", "cli", "xml")
_CHECKED_GROUPS = frozenset({"bare", "cli", "pdq", "psq"})  # must look like a credential
_NAME_CHARS = frozenset(string.ascii_lowercase + string.digits + "_.-")
_XML_NAME_CHARS = _NAME_CHARS | {":"}
# Names whose values are identifiers, not secrets (after gitleaks' generic-api-key allowlist):
# public keys and tokens, database keys, key lengths and sizes, key files, vault names.
_NOT_SECRET_BEFORE = re.compile(
    r"(?:public|pub|primary|foreign|issuer|schema|sequence|bucket|idx|natural|hot|csrf)[_.-]?\Z"
)
# Values that are code, not data: this.apiKey, fs.readFileSync(, foo(hey)you, json_body[
_CODE_RE = re.compile(r"[a-z_$][a-z_$]*(?:(?:\.[a-z_$][a-z_$]*)+|(?:\.[a-z_$][a-z_$]*)*[(\[].*)")
_PATH_RE = re.compile(r"(?:[a-z0-9_.-]+/){3,}[a-z0-9_.-]*|[~.]?/[\w./-]*")
_NESTED_RE = re.compile(r"[a-z_][a-z0-9_]*=")
_CLOSERS = {")": "(", "]": "[", "}": "{"}


def _trim_closers(value: str) -> str:
    """Drop closing brackets that end a value without opening in it (``f(password=x)``)."""
    while value and value[-1] in _CLOSERS and _CLOSERS[value[-1]] not in value:
        value = value[:-1]
    return value


def keyword_finder(keyword: str) -> Callable[[str], Iterator[Span]]:
    """Build a finder (over the lower-cased view) for values assigned to ``keyword``."""
    rx = re.compile(keyword + _TAIL)

    def find(lower: str) -> Iterator[Span]:
        for m in rx.finditer(lower):
            group = next(g for g in _VALUE_GROUPS if m.start(g) != -1)
            if group == "bare" and _in_url_userinfo(lower, m.start()):
                continue  # https://x-access-token:<secret>@host is url_password's
            if _NOT_SECRET_BEFORE.search(lower, max(0, m.start() - 8), m.start()):
                continue
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
            if group in ("bare", "cli"):
                value = _trim_closers(value)
                end = start + len(value)
            if not value or is_placeholder(value) or _PATH_RE.fullmatch(value):
                continue
            if keyword == "pwd" and value.startswith(("/", "~")):
                continue  # PWD is the working directory in environment dumps
            if group == "bare" and _NESTED_RE.match(value) and lower[end : end + 1] == "&":
                continue  # TOKEN=st=...&se=...: a query string; its sig= has a detector
            if group in _CHECKED_GROUPS and not _credential_like(
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
    """Tell a credential from prose such as ``token: expected 3 segments`` or from code."""
    if len(value) < 2 or _CODE_RE.fullmatch(value):
        return False  # a flag ("PuttyPassword=0") or an expression ("this.apiKey")
    if sep.endswith("="):
        return True  # env, query strings and DSNs assign explicitly
    if not value.isalpha():
        return True  # digits or symbols: not an ordinary word
    # A single word is a credential only when nothing else follows it on the line (YAML).
    rest = text[end : text.find("\n", end) if "\n" in text[end : end + 256] else end + 256]
    return not rest.strip(" \t\r,;.")


# --- high-entropy values next to secret-like keywords -----------------------------------------

# A ',' separates only when no space follows (CSV "apiToken,VALUE," but not "a_Key, b_Key"); a
# value followed by filler (####, ****) is a placeholder's prefix.
_ENTROPY_TAIL = (
    r"(?P<suffix>[a-z0-9_.-]{0,24})[\"'\\]{0,3}\]?[ \t]*(?::{0,3}=>?|[?+.]=|:|,(?![ \t])|[ \t(|@])"
    r"[ \t]*[\"'\\@]{0,3}(?P<v>[a-z0-9+/_.~-]{16,512}=*)(?![a-z0-9+/_.~=#*-])"
)
_IDENT_CHARS = frozenset(string.ascii_letters + string.digits + "_.-")
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# Words that make a name an identifier rather than a secret, after gitleaks' generic-api-key
# allowlist: public keys, database keys, key sizes and files, names, ids, vaults, authors.
_NOT_SECRET_WORDS = frozenset(
    "alias board code frame id ids length len mesh meshing name names pair press pressed ring"
    " selector signature signatures size stone store storetype word up down left right file"
    " files path char chars str tab hash url uri endpoint source vault type format version"
    " public pub pubkey primary foreign issuer schema sequence bucket idx natural hot csrf"
    " author authentication authority jsonwebtoken keyword keyboard keystore keyframe keyring"
    " keypair keying monkey donkey turkey hockey".split()
)


def _names_an_identifier(text: str, start: int, end: int) -> bool:
    """Tell whether the name around ``text[start:end]`` holds a non-secret word (KeyVaultName)."""
    while start > 0 and text[start - 1] in _IDENT_CHARS:
        start -= 1
    return _has_identifier_word(text[start:end])


@lru_cache(maxsize=4096)
def _has_identifier_word(name: str) -> bool:
    return any(w.lower() in _NOT_SECRET_WORDS for w in _WORD_RE.findall(name))


def entropy_finder(keyword: str) -> Callable[[str, str], Iterator[Span]]:
    """Build a finder for random-looking values shortly after ``keyword`` (lower view)."""
    rx = re.compile(keyword + _ENTROPY_TAIL)

    def find(lower: str, text: str) -> Iterator[Span]:
        for m in rx.finditer(lower):
            if _names_an_identifier(text, m.start(), m.end("suffix")):
                continue  # key_name, keyVaultName, public_key, primaryKey, KeyFile ...
            start, end = m.span("v")
            if looks_random(text[start:end]):
                yield start, end

    return find


# --- curl -u user:password ------------------------------------------------------------------

_USER_OPTION = re.compile(
    r"-(?:-user(?:=|[ \t]+)|u[ \t]*)(?:\"(?P<dq>[^\"\n]*)\"(?::\"(?P<dq2>[^\"\n]*)\")?"
    r"|'(?P<sq>[^'\n]*)'|(?P<bare>[^\s\"':]*:(?:'[^'\n]*'|\"[^\"\n]*\"|[^\s\"']+)))"
)
# gitleaks' curl-auth-user allowlist: common placeholder passwords
_PLACEHOLDER_PASSWORD = re.compile(r"(?i)change(?:it|me)|pass(?:word)?|pwd|test|token|\*+|x+|y+")


def find_user_options(text: str) -> Iterator[Span]:
    """Yield the password of ``-u user:password`` / ``--user user:password`` (curl and co)."""
    for m in _USER_OPTION.finditer(text):
        if m.start() > 0 and not text[m.start() - 1].isspace():
            continue  # part of a longer option or word
        if m.group("dq2") is not None:  # "user":"password"
            user = m.group("dq")
            start, end = m.span("dq2")
        else:
            group = next(g for g in ("dq", "sq", "bare") if m.start(g) != -1)
            gstart, end = m.span(group)
            colon = text.find(":", gstart, end)
            if colon == -1:
                continue  # a user name alone
            user, start = text[gstart:colon], colon + 1
            if end - start >= 2 and text[start] in "'\"" and text[end - 1] == text[start]:
                start, end = start + 1, end - 1  # kevin:'password'
        password = text[start:end]
        if not password or user.startswith("<") or password.endswith(">"):
            continue  # <user:password>
        if is_placeholder(password) or _PLACEHOLDER_PASSWORD.fullmatch(password):
            continue
        if password == user or (user.isdigit() and password.isdigit()):
            continue  # docker -u 1000:1000, -u www-data:www-data (uid:gid, user:group)
        yield start, end


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

_EMAIL_DOMAIN = re.compile(r"@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,63}(?![\w-])")
_EMAIL_LOCAL = frozenset(string.ascii_letters + string.digits + "._%+-")
# What follows "git@github.com:" in an scp-style remote: a path (org/repo, repo.git)
_SCP_PATH = re.compile(r":[\w.~-]*/|:[\w.-]+\.git\b")


def find_emails(text: str) -> Iterator[Span]:
    """Yield email addresses, but not scp-style ``git@github.com:org/repo`` remotes."""
    # Anchor on '@' and walk back over the local part: a regex starting with a character class
    # would go quadratic on long runs of word characters (base64 blobs).
    for m in _EMAIL_DOMAIN.finditer(text):
        at = start = m.start()
        end = m.end()
        if text[end : end + 1] == ":" and _SCP_PATH.match(text, end):
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


def behind_finder(
    pattern: str, back: str, width: int, validate: Callable[[str], bool] | None = None
) -> Callable[[str], Iterator[Span]]:
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
            if start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
                continue
            if validate is None or validate(text[start : m.end()]):
                yield start, m.end()

    return find
