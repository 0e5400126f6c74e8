from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import PolicyViolation
from shared.policy import DEFAULTS, Policy, Resources, load_policy

PERSONA = "6f1c2a57-3b0e-4c55-9a51-0f4d7f1d2b11"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_seed_values() -> None:
    assert Policy().resolve(PERSONA, "seo.evaluate_content") == Resources(1.0, 2048, 120)
    assert DEFAULTS == Resources(cpu=1.0, memory_mb=2048, timeout_s=120)


def test_method_then_persona_then_request_override_in_that_order(tmp_path: Path) -> None:
    policy = load_policy(
        write(
            tmp_path,
            f"""
[methods."seo.evaluate_content"]
timeout_s = 60
memory_mb = 1024
[personas."{PERSONA}".methods."seo.evaluate_content"]
memory_mb = 3072
""",
        )
    )
    assert policy.resolve(PERSONA, "seo.evaluate_content") == Resources(1.0, 3072, 60)
    assert policy.resolve("someone-else", "seo.evaluate_content") == Resources(1.0, 1024, 60)
    assert policy.resolve(PERSONA, "seo.evaluate_content", {"cpu": 2}) == Resources(2.0, 3072, 60)


def test_exact_method_beats_a_glob(tmp_path: Path) -> None:
    policy = load_policy(
        write(
            tmp_path,
            """
[methods."seo.*"]
timeout_s = 30
[methods."seo.evaluate_content"]
timeout_s = 90
""",
        )
    )
    assert policy.resolve(PERSONA, "seo.evaluate_content").timeout_s == 90
    assert policy.resolve(PERSONA, "seo.other").timeout_s == 30


@pytest.mark.parametrize(
    ("line", "limit"),
    [
        ("cpu = 2.5", "cpu"),
        ("memory_mb = 8192", "memory_mb"),
        ("timeout_s = 301", "timeout_s"),
    ],
)
def test_an_override_beyond_a_guardrail_is_refused_not_clamped(
    tmp_path: Path, line: str, limit: str
) -> None:
    with pytest.raises(PolicyViolation) as info:
        load_policy(write(tmp_path, f'[methods."seo.evaluate_content"]\n{line}\n'))
    assert info.value.limit == limit
    assert "guardrail" in str(info.value)


def test_a_request_beyond_a_guardrail_is_refused() -> None:
    with pytest.raises(PolicyViolation, match="exceeds the guardrail"):
        Policy().resolve(PERSONA, "seo.evaluate_content", {"timeout_s": 3600})


def test_unknown_keys_and_non_numbers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyViolation, match="unknown keys"):
        load_policy(write(tmp_path, '[methods."a.b"]\ngpu = 1\n'))
    with pytest.raises(PolicyViolation, match="must be a number"):
        load_policy(write(tmp_path, '[methods."a.b"]\ncpu = "lots"\n'))


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyViolation, match="cannot read policy file"):
        load_policy(write(tmp_path, "[methods\n"))
