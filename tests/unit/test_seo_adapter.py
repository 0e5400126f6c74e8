"""Unit tests for the SEO adapter's pure functions (infra/adapters/seo/seo_adapter.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from shared.adapter_sdk import BadInput

REPO_ROOT = Path(__file__).resolve().parents[2]
SEO_PATH = REPO_ROOT / "infra" / "adapters" / "seo" / "seo_adapter.py"


def _load_seo():
    # The adapter is a script, not a package module, so load it by path.
    spec = importlib.util.spec_from_file_location("seo_adapter", SEO_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("seo_adapter", module)
    spec.loader.exec_module(module)
    return module


seo = _load_seo()

GOOD_TITLE = "Composting at Home: An Easy Guide for Beginners in 2024"  # 55 chars
GOOD_META = (
    "Learn composting at home with this simple guide: what to add, what to avoid, "
    "and how to fix a smelly compost bin in a few easy steps."
)
SENTENCE = "Composting at home is easy and it helps your garden grow well every year. "
FILLER = "Add dry leaves and kitchen scraps to the pile and turn it once a week. "


def _article(h1s: int = 1, filler_sentences: int = 30) -> str:
    h1 = "<h1>Composting at Home</h1>" * h1s
    body = "".join(f"<p>{FILLER}</p>" for _ in range(filler_sentences))
    return (
        f"{h1}<p>{SENTENCE}</p><h2>What to add</h2>{body}"
        "<h2>What to avoid</h2><p>Do not add meat or oily food.</p>"
    )


def _input(**overrides: object) -> dict:
    data = {
        "title": GOOD_TITLE,
        "metaDescription": GOOD_META,
        "content": _article(),
        "keywords": ["composting at home"],
    }
    data.update(overrides)
    return data


def _by_id(result: dict, check_id: str) -> dict:
    return next(c for c in result["checks"] if c["id"] == check_id)


def test_title_length_ideal_passes_and_short_title_does_not() -> None:
    assert len(GOOD_TITLE) == 55
    assert seo.check_title(GOOD_TITLE)["status"] == "pass"
    short = seo.check_title("Composting")
    assert short["value"] == 10
    assert short["status"] == "fail"
    assert seo.check_title("x" * 65)["status"] == "warn"  # a little long: truncated in SERPs


def test_meta_description_length_bands() -> None:
    assert 120 <= len(GOOD_META) <= 160
    assert seo.check_meta_description(GOOD_META)["status"] == "pass"
    assert seo.check_meta_description("x" * 100)["status"] == "warn"
    assert seo.check_meta_description("")["status"] == "fail"


def test_word_count_threshold() -> None:
    assert seo.check_word_count(300)["status"] == "pass"
    assert seo.check_word_count(200)["status"] == "warn"
    assert seo.check_word_count(40)["status"] == "fail"


def test_keyword_density_on_known_text() -> None:
    # 100 words, "garden" three times -> 3.0 %.
    tokens = seo.words(" ".join(["garden"] * 3 + ["soil"] * 97))
    assert seo.keyword_density(tokens, "garden") == 3.0
    # A two-word phrase found twice in 200 words covers 4 words -> 2.0 %.
    text = "solar panel " * 2 + "roof " * 196
    assert seo.keyword_density(seo.words(text), "Solar Panel") == 2.0
    assert seo.keyword_density(seo.words(text), "wind turbine") == 0.0


def test_keyword_density_status_and_placement() -> None:
    result = seo.evaluate_content(_input(keywords=["composting at home", "worm farm"]))
    density = [c for c in result["checks"] if c["id"] == "keyword_density"]
    placement = [c for c in result["checks"] if c["id"] == "keyword_placement"]
    assert {c["keyword"]: c["status"] for c in density} == {
        "composting at home": "pass",
        "worm farm": "fail",
    }
    main_kw = next(c for c in placement if c["keyword"] == "composting at home")
    assert main_kw["value"] == {
        "title": True,
        "metaDescription": True,
        "firstParagraph": True,
        "heading": True,
    }
    assert main_kw["status"] == "pass"
    assert result["metrics"]["keywordDensity"]["worm farm"] == 0.0


def test_keyword_stuffing_fails() -> None:
    stuffed = "<h1>Buy shoes</h1><p>" + "buy shoes online cheap " * 50 + "</p>"
    result = seo.evaluate_content(_input(content=stuffed, keywords=["buy shoes"]))
    check = next(c for c in result["checks"] if c["id"] == "keyword_density")
    # 51 occurrences (h1 included) x 2 words out of 202 words.
    assert check["value"] == round(100 * 51 * 2 / 202, 2)
    assert check["status"] == "fail"


def test_exactly_one_h1_passes_two_h1s_warn_none_fails() -> None:
    one = _by_id(seo.evaluate_content(_input(content=_article(h1s=1))), "h1_count")
    two = _by_id(seo.evaluate_content(_input(content=_article(h1s=2))), "h1_count")
    none = _by_id(seo.evaluate_content(_input(content=_article(h1s=0))), "h1_count")
    assert (one["status"], two["status"], none["status"]) == ("pass", "warn", "fail")
    assert two["value"] == 2


def test_heading_order_and_h2_presence() -> None:
    checks = {c["id"]: c for c in seo.check_headings([(1, "A"), (2, "B"), (4, "C")])}
    assert checks["heading_order"]["status"] == "warn"
    assert checks["heading_order"]["value"] == ["h2->h4"]
    assert checks["h2_present"]["status"] == "pass"
    checks = {c["id"]: c for c in seo.check_headings([(1, "A"), (3, "B")])}
    assert checks["h2_present"]["status"] == "warn"


def test_html_parsing_ignores_scripts_and_finds_headings() -> None:
    doc = seo.parse_content(
        "<h1>Title</h1><script>var hidden = 'secret words here';</script>"
        "<p>First &amp; visible paragraph.</p><h2>Sub</h2><p>Second one.</p>"
    )
    assert doc.headings == [(1, "Title"), (2, "Sub")]
    assert doc.paragraphs == ["First & visible paragraph.", "Second one."]
    assert "secret" not in doc.text


def test_plain_text_with_markdown_headings() -> None:
    doc = seo.parse_content("# Big title\n\nFirst paragraph\ncontinues here.\n\n## Part two\nMore.")
    assert doc.headings == [(1, "Big title"), (2, "Part two")]
    assert doc.paragraphs[0] == "First paragraph continues here."


def test_syllable_heuristic() -> None:
    assert seo.count_syllables("cat") == 1
    assert seo.count_syllables("table") == 2
    assert seo.count_syllables("beautiful") == 3
    assert seo.count_syllables("readability") == 5


def test_readability_orders_simple_above_complex() -> None:
    simple = ["The cat sat on the mat. It was a sunny day. We had fun."]
    complex_ = [
        "Notwithstanding considerable organizational heterogeneity, institutional "
        "decision-making necessitates comprehensive evaluation of interdependent "
        "regulatory considerations."
    ]
    easy, hard = seo.flesch_reading_ease(simple), seo.flesch_reading_ease(complex_)
    assert easy > 80 > 30 > hard
    assert seo.readability_band(easy) in {"very easy", "easy"}
    assert seo.readability_band(hard) == "very difficult"
    assert seo.check_readability(hard)["status"] == "fail"


def test_good_article_passes_with_high_score() -> None:
    result = seo.evaluate_content(_input())
    assert result["passed"] is True, [c for c in result["checks"] if c["status"] != "pass"]
    assert result["metrics"]["wordCount"] >= 300
    assert 80 <= result["score"] <= 100
    assert isinstance(result["score"], int)


def test_poor_article_fails_and_scores_lower() -> None:
    good = seo.evaluate_content(_input())
    poor = seo.evaluate_content(
        _input(title="Compost", metaDescription="", content="<p>Short text.</p>")
    )
    assert poor["passed"] is False
    assert poor["score"] < good["score"]
    statuses = {c["status"] for c in poor["checks"]}
    assert "fail" in statuses
    assert set(poor) == {"score", "passed", "checks", "metrics"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"metaDescription": "m", "content": "c", "keywords": []}, "title"),
        ({"title": "t", "content": "c", "keywords": []}, "metaDescription"),
        ({"title": "t", "metaDescription": "m", "keywords": []}, "content"),
        ({"title": 5, "metaDescription": "m", "content": "c", "keywords": []}, "title"),
        ({"title": "t", "metaDescription": "m", "content": "c"}, "keywords"),
        ({"title": "t", "metaDescription": "m", "content": "c", "keywords": "a,b"}, "keywords"),
        ({"title": "t", "metaDescription": "m", "content": "c", "keywords": [1]}, "keywords"),
    ],
)
def test_bad_input(data: dict, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        seo.evaluate_content(data)


def test_no_keywords_is_a_warning_not_an_error() -> None:
    result = seo.evaluate_content(_input(keywords=[]))
    assert _by_id(result, "keywords_present")["status"] == "warn"
    assert result["metrics"]["keywordDensity"] == {}
