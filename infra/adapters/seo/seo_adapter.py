"""SEO content evaluation adapter (method ``seo.evaluate_content``).

Input: ``{"title": str, "metaDescription": str, "content": str (HTML or plain text),
"keywords": [str]}``. Evaluation: ``{"score", "passed", "checks", "metrics"}``; ``passed`` is
false if any check has status ``fail``. A finished evaluation always exits 0: whether the
content is good enough is the caller's decision, read from ``passed``.

All logic is in pure functions so unit tests can import this module without side effects.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from itertools import pairwise
from typing import Any

try:  # inside the image the SDK sits next to this file on PYTHONPATH
    import adapter_sdk
except ImportError:  # in the repo (unit tests) it lives in shared/
    from shared import adapter_sdk

BadInput = adapter_sdk.BadInput
METHOD_ID = "seo.evaluate_content"

TITLE_IDEAL = (50, 60)
META_IDEAL = (120, 160)
MIN_WORDS = 300
DENSITY_IDEAL = (0.5, 2.5)
DENSITY_STUFFING = 4.0  # above this search engines treat it as keyword stuffing
STATUS_POINTS = {"pass": 1.0, "warn": 0.5, "fail": 0.0}
# Relative weight of each check in the 0-100 score; keyword checks share their weight.
WEIGHTS = {
    "title_length": 10,
    "meta_description_length": 10,
    "word_count": 15,
    "h1_count": 10,
    "h2_present": 5,
    "heading_order": 5,
    "readability": 15,
    "keyword_density": 20,
    "keyword_placement": 10,
    "keywords_present": 10,
}

_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_TAG_RE = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")
_MD_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BLOCK_TAGS = set(
    "p div li ul ol section article header footer main blockquote pre table tr td th br hr"
    " figcaption".split()
)
_BANDS = ((90, "very easy"), (80, "easy"), (70, "fairly easy"), (60, "standard"))
_BANDS += ((50, "fairly difficult"), (30, "difficult"))
_SKIP_TAGS = set("script style noscript template head svg".split())


@dataclass
class Document:
    """Visible text of the content, split into blocks, with its headings and paragraphs."""

    blocks: list[str] = field(default_factory=list)
    headings: list[tuple[int, str]] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.blocks)


class _ContentParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.doc = Document()
        self._buf: list[str] = []
        self._kind: tuple[str, int] = ("block", 0)
        self._skip = 0

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        self._buf = []
        if text:
            self.doc.blocks.append(text)
            kind, level = self._kind
            if kind == "h":
                self.doc.headings.append((level, text))
            elif kind == "p":
                self.doc.paragraphs.append(text)
        self._kind = ("block", 0)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self._kind = ("h", int(tag[1]))
        elif tag == "p":
            self._flush()
            self._kind = ("p", 0)
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag == "p" or tag in _BLOCK_TAGS or re.fullmatch(r"h[1-6]", tag):
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def is_html(content: str) -> bool:
    return bool(_TAG_RE.search(content))


def parse_content(content: str) -> Document:
    """Parse HTML, or plain text where blank lines separate paragraphs and ``#`` marks headings."""
    if is_html(content):
        parser = _ContentParser()
        parser.feed(content)
        parser.close()
        return parser.doc
    doc = Document()
    for chunk in re.split(r"\n\s*\n", content):
        for line in chunk.splitlines():
            m = _MD_HEADING_RE.match(line.strip())
            if m:
                doc.headings.append((len(m.group(1)), m.group(2)))
                doc.blocks.append(m.group(2))
        body = " ".join(
            ln.strip()
            for ln in chunk.splitlines()
            if ln.strip() and not _MD_HEADING_RE.match(ln.strip())
        )
        if body:
            doc.blocks.append(body)
            doc.paragraphs.append(body)
    return doc


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(text)]


def count_syllables(word: str) -> int:
    """English syllable estimate: vowel groups, minus silent endings; at least 1."""
    w = re.sub(r"[^a-z]", "", word.lower())
    if len(w) <= 3:
        return 1
    w = re.sub(r"(?:[^laeiouy]es|[^laeiouy]e|ed)$", lambda m: m.group(0)[0], w)
    w = re.sub(r"^y", "", w)
    return max(1, len(re.findall(r"[aeiouy]+", w)))


def count_sentences(blocks: list[str]) -> int:
    # Headings and list items rarely end with a full stop, so each block ends a sentence.
    return sum(len([s for s in re.split(r"[.!?]+", b) if words(s)]) for b in blocks)


def flesch_reading_ease(blocks: list[str]) -> float:
    ws = [w for b in blocks for w in words(b)]
    if not ws:
        return 0.0
    sentences = max(1, count_sentences(blocks))
    syllables = sum(count_syllables(w) for w in ws)
    raw = 206.835 - 1.015 * len(ws) / sentences - 84.6 * syllables / len(ws)
    # The formula leaves 0-100 for extreme texts; editors expect the conventional scale.
    return round(min(100.0, max(0.0, raw)), 1)


def readability_band(score: float) -> str:
    for floor, label in _BANDS:
        if score >= floor:
            return label
    return "very difficult"


def count_phrase(tokens: list[str], phrase: list[str]) -> int:
    n = len(phrase)
    if not n:
        return 0
    return sum(1 for i in range(len(tokens) - n + 1) if tokens[i : i + n] == phrase)


def keyword_density(tokens: list[str], keyword: str) -> float:
    """Percent of the words that belong to occurrences of ``keyword`` (multi-word aware)."""
    phrase = words(keyword)
    if not tokens or not phrase:
        return 0.0
    return round(100.0 * count_phrase(tokens, phrase) * len(phrase) / len(tokens), 2)


def contains_phrase(text: str, keyword: str) -> bool:
    return count_phrase(words(text), words(keyword)) > 0


def _check(check_id: str, status: str, value: Any, message: str, **extra: Any) -> dict:
    return {"id": check_id, "status": status, "value": value, "message": message, **extra}


def _range_status(n: float, ideal: tuple[int, int], warn: tuple[int, int]) -> str:
    if ideal[0] <= n <= ideal[1]:
        return "pass"
    return "warn" if warn[0] <= n <= warn[1] else "fail"


def check_title(title: str) -> dict:
    n = len(title.strip())
    status = _range_status(n, TITLE_IDEAL, (30, 70))
    return _check("title_length", status, n, f"Title is {n} characters (ideal 50-60).")


def check_meta_description(meta: str) -> dict:
    n = len(meta.strip())
    status = _range_status(n, META_IDEAL, (70, 200))
    return _check(
        "meta_description_length", status, n, f"Meta description is {n} characters (ideal 120-160)."
    )


def check_word_count(n: int) -> dict:
    status = "pass" if n >= MIN_WORDS else "warn" if n >= MIN_WORDS // 2 else "fail"
    return _check("word_count", status, n, f"{n} words (at least {MIN_WORDS} recommended).")


def check_headings(headings: list[tuple[int, str]]) -> list[dict]:
    levels = [lvl for lvl, _ in headings]
    h1, h2 = levels.count(1), levels.count(2)
    h1_status = "pass" if h1 == 1 else "fail" if h1 == 0 else "warn"
    skips = [f"h{a}->h{b}" for a, b in pairwise(levels) if b > a + 1]
    if levels and levels[0] != 1:
        skips.insert(0, f"starts with h{levels[0]}")
    return [
        _check("h1_count", h1_status, h1, f"{h1} h1 heading(s) (exactly one expected)."),
        _check(
            "h2_present",
            "pass" if h2 else "warn",
            h2,
            f"{h2} h2 heading(s)" + ("." if h2 else "; add h2s to structure the text."),
        ),
        _check(
            "heading_order",
            "warn" if skips else "pass",
            skips,
            "Heading levels skip: " + ", ".join(skips) if skips else "Heading levels are in order.",
        ),
    ]


def check_readability(score: float) -> dict:
    status = "pass" if score >= 60 else "warn" if score >= 30 else "fail"
    return _check(
        "readability",
        status,
        score,
        f"Flesch reading ease {score} ({readability_band(score)}); 60+ is ideal for web.",
    )


def check_keyword(kw: str, tokens: list[str], title: str, meta: str, doc: Document) -> list[dict]:
    density = keyword_density(tokens, kw)
    lo, hi = DENSITY_IDEAL
    if lo <= density <= hi:
        status = "pass"
    elif density == 0 or density > DENSITY_STUFFING:
        status = "fail"
    else:
        status = "warn"
    first_para = doc.paragraphs[0] if doc.paragraphs else (doc.blocks[0] if doc.blocks else "")
    places = {
        "title": contains_phrase(title, kw),
        "metaDescription": contains_phrase(meta, kw),
        "firstParagraph": contains_phrase(first_para, kw),
        "heading": any(contains_phrase(t, kw) for lvl, t in doc.headings if lvl <= 2),
    }
    found = sum(places.values())
    missing = [k for k, v in places.items() if not v]
    return [
        _check(
            "keyword_density",
            status,
            density,
            f"'{kw}' density {density}% (ideal {lo}-{hi}%).",
            keyword=kw,
        ),
        _check(
            "keyword_placement",
            "pass" if found >= 3 else "warn" if found else "fail",
            places,
            f"'{kw}' missing from: {', '.join(missing)}."
            if missing
            else f"'{kw}' appears in title, meta, first paragraph and a heading.",
            keyword=kw,
        ),
    ]


def score(checks: list[dict]) -> int:
    per_id: dict[str, list[float]] = {}
    for c in checks:
        per_id.setdefault(c["id"], []).append(STATUS_POINTS[c["status"]])
    total = sum(WEIGHTS.get(i, 5) for i in per_id)
    got = sum(WEIGHTS.get(i, 5) * sum(p) / len(p) for i, p in per_id.items())
    return round(100 * got / total) if total else 0


def validate_input(data: Any) -> tuple[str, str, str, list[str]]:
    if not isinstance(data, dict):
        raise BadInput("input must be a JSON object")
    for key in ("title", "metaDescription", "content"):
        if key not in data:
            raise BadInput(f"missing required field '{key}'")
        if not isinstance(data[key], str):
            raise BadInput(f"field '{key}' must be a string")
    kws = data.get("keywords")
    if not isinstance(kws, list) or not all(isinstance(k, str) for k in kws):
        raise BadInput("field 'keywords' must be a list of strings")
    cleaned = list(dict.fromkeys(k.strip() for k in kws if k.strip()))
    return data["title"], data["metaDescription"], data["content"], cleaned


def evaluate_content(data: Any) -> dict:
    """Full evaluation of one input object (raises BadInput for malformed input)."""
    title, meta, content, keywords = validate_input(data)
    doc = parse_content(content)
    tokens = words(doc.text)
    flesch = flesch_reading_ease(doc.blocks)
    checks = [
        check_title(title),
        check_meta_description(meta),
        check_word_count(len(tokens)),
        *check_headings(doc.headings),
        check_readability(flesch),
    ]
    if not keywords:
        checks.append(_check("keywords_present", "warn", 0, "No target keywords supplied."))
    for kw in keywords:
        checks.extend(check_keyword(kw, tokens, title, meta, doc))
    return {
        "score": score(checks),
        "passed": not any(c["status"] == "fail" for c in checks),
        "checks": checks,
        "metrics": {
            "wordCount": len(tokens),
            "headings": [{"level": lvl, "text": t} for lvl, t in doc.headings],
            "readability": {"fleschReadingEase": flesch, "band": readability_band(flesch)},
            "keywordDensity": {kw: keyword_density(tokens, kw) for kw in keywords},
        },
    }


@adapter_sdk.method(METHOD_ID)
def _handle(data: dict) -> dict:
    content = data.get("content")
    size = len(content) if isinstance(content, str) else 0
    print(f"seo: evaluating content ({size} chars)", flush=True)
    result = evaluate_content(data)
    m = result["metrics"]
    print(
        f"seo: {m['wordCount']} words, {len(m['headings'])} headings, "
        f"flesch {m['readability']['fleschReadingEase']} ({m['readability']['band']})",
        flush=True,
    )
    failed = [c["id"] for c in result["checks"] if c["status"] == "fail"]
    print(
        f"seo: score {result['score']}, passed={result['passed']}"
        + (f", failing: {', '.join(failed)}" if failed else ""),
        file=sys.stderr,
        flush=True,
    )
    return result


if __name__ == "__main__":
    adapter_sdk.main()
