"""The perspectives: the eight built in, selection, their requests and their cache keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from rmcore.perspectives import (
    BUILTIN,
    PERSPECTIVES,
    Perspective,
    cache_key,
    normalise_question,
    perspective_request,
    select_perspectives,
    user_prompt,
)
from rmcore.policy.schema import BUILTIN_PERSPECTIVES, PerspectiveDef
from rmcore.problems import ProblemKind

TITLES = {
    "security": "Security",
    "architecture": "Architecture",
    "simplicity": "Simplicity",
    "financial": "Financial",
    "marketing": "Marketing",
    "ux": "User Experience",
    "growth": "Growth",
    "emotional": "Emotional Intelligence",
}

LEGAL = PerspectiveDef(title="Legal", system="You are a technology lawyer.", focus=("licensing", "liability"))


def test_the_eight_ids_titles_and_order_are_the_references() -> None:
    """The eight perspectives have the reference ids, titles and order."""
    assert tuple(p.id for p in PERSPECTIVES) == BUILTIN_PERSPECTIVES
    assert {p.id: p.title for p in PERSPECTIVES} == TITLES
    assert list(BUILTIN) == list(BUILTIN_PERSPECTIVES)


def test_every_builtin_has_a_substantive_prompt_and_focus() -> None:
    """Each system prompt makes the model an expert of its own field, with several focus areas."""
    keywords = {
        "security": "OWASP",
        "architecture": "scal",
        "simplicity": "YAGNI",
        "financial": "total cost of ownership",
        "marketing": "positioning",
        "ux": "WCAG",
        "growth": "retention",
        "emotional": "morale",
    }
    for p in PERSPECTIVES:
        assert len(p.system) > 400, p.id
        assert keywords[p.id] in p.system, p.id
        assert len(p.focus) >= 5, p.id
    assert len({p.system for p in PERSPECTIVES}) == 8


def test_select_keeps_the_given_order_and_skips_blanks_and_repeats() -> None:
    """Selection keeps the order asked, trims ids, and skips blanks and repeats."""
    result = select_perspectives([" ux", "security", "", "ux"], {})
    assert result == Success([BUILTIN["ux"], BUILTIN["security"]])


def test_select_an_unknown_id_fails_with_the_known_ids() -> None:
    """An unknown id is an ``unknown_perspective`` problem quoting it and listing every known id."""
    result = select_perspectives(["security", "legl"], {"legal": LEGAL})
    assert isinstance(result, Failure)
    assert (result.failure().kind, result.failure().subject) == (ProblemKind.UNKNOWN_PERSPECTIVE, "legl")
    message = str(result.failure())
    assert "'legl'" in message
    assert "security, architecture, simplicity, financial, marketing, ux, growth, emotional, legal" in message


def test_select_nothing_fails() -> None:
    """Selecting only blanks is a failure, not an empty analysis."""
    assert isinstance(select_perspectives([" ", ""], {}), Failure)


def test_policy_perspectives_extend_and_override_the_eight() -> None:
    """Perspectives of the policy add to the eight and replace those with the same id."""
    override = PerspectiveDef(title="Sec", system="You are a paranoid reviewer.")
    chosen = select_perspectives(["legal", "security", "growth"], {"legal": LEGAL, "security": override})
    assert chosen == Success(
        [
            Perspective(
                id="legal",
                title="Legal",
                system="You are a technology lawyer.",
                focus=("licensing", "liability"),
            ),
            Perspective(id="security", title="Sec", system="You are a paranoid reviewer."),
            BUILTIN["growth"],
        ]
    )


def test_request_carries_system_prompt_question_and_source_id() -> None:
    """A perspective's request carries its system prompt, the trimmed question, its focus, the answer
    format and its source id."""
    p = BUILTIN["financial"]
    request = perspective_request(p, "  Should we move to the cloud?  ", max_tokens=800, temperature=0.0)
    assert request.system == p.system
    assert request.source_id == "financial-analysis"
    assert request.max_tokens == 800
    assert request.temperature == 0.0
    assert "from the Financial perspective" in request.prompt
    assert "\nShould we move to the cloud?\n" in request.prompt
    for focus in p.focus:
        assert focus in request.prompt
    for part in ('"findings"', '"recommendation"', '"confidence"', '"reasoning"', "0.0", "1.0"):
        assert part in request.prompt
    assert perspective_request(p, "q").temperature is None


def test_question_braces_are_not_format_fields() -> None:
    """Braces in the question are kept as written, never taken for format fields."""
    prompt = user_prompt(BUILTIN["ux"], "Is {title} or {0} a good name?")
    assert "Is {title} or {0} a good name?" in prompt


def test_prompt_without_focus_has_no_empty_focus_sentence() -> None:
    """A perspective without focus areas gets no empty focus sentence."""
    p = Perspective(id="x", title="X", system="s")
    assert "Focus areas" not in user_prompt(p, "q")


def test_normalise_question() -> None:
    """A question is normalised to lower case with its whitespace folded."""
    assert normalise_question("  Should WE\n\tmigrate?  ") == "should we migrate?"


@given(st.text(max_size=40))
def test_cache_key_ignores_case_and_spacing_of_the_question(question: str) -> None:
    """The cache key ignores the case and spacing of the question, and is a SHA-256 hex digest."""
    p = BUILTIN["security"]
    noisy = "  " + "\n ".join(question.upper().split()) + "\t"
    assert cache_key(noisy, p) == cache_key(question.upper(), p)
    assert len(cache_key(question, p)) == 64


def test_cache_key_changes_with_question_prompt_focus_title_and_version() -> None:
    """The cache key changes with the question, the perspective, its prompt, focus, title and version."""
    p = BUILTIN["security"]
    base = cache_key("Adopt SSO?", p)
    variants = [
        cache_key("Adopt SAML?", p),
        cache_key("Adopt SSO?", BUILTIN["ux"]),
        cache_key("Adopt SSO?", Perspective(id=p.id, title=p.title, system=p.system + ".", focus=p.focus)),
        cache_key("Adopt SSO?", Perspective(id=p.id, title=p.title, system=p.system, focus=p.focus[:-1])),
        cache_key("Adopt SSO?", Perspective(id=p.id, title="Sec", system=p.system, focus=p.focus)),
        cache_key(
            "Adopt SSO?", Perspective(id=p.id, title=p.title, system=p.system, focus=p.focus, version=2)
        ),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)
    assert cache_key("Adopt SSO?", p) == base
