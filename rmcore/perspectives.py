"""The perspectives of an analysis: who the model is asked to be, and the request each one sends.

An analysis asks one question from several perspectives, one chat request each. A perspective is a
value: its ``id`` (the machine name of ``--perspectives`` and ``[analysis] perspectives``), its
``title`` (the display name, ``perspective`` in results), a system prompt that makes the model an
expert of the field, the focus areas the user prompt asks it to cover, and a ``version`` that is
raised whenever its prompt changes in a way that should invalidate cached answers.

The eight built-in perspectives are the reference's, in its fixed order. A policy can add more, or
replace one of the eight, with ``[perspectives.NAME]`` tables (:class:`PerspectiveDef`).

Every perspective is asked with the same user prompt (:data:`USER_PROMPT_TEMPLATE`): findings, a
recommendation, a confidence between 0 and 1 and the reasoning behind it, as a small JSON object.
:mod:`rmcore.confidence` reads the answer, and also the forms models write when they ignore the
request for JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from functools import partial

from returns.pipeline import flow
from returns.pointfree import bind
from returns.result import Failure, Result, Success

from rmcore.base import Base
from rmcore.policy.schema import PerspectiveDef
from rmcore.problems import Problem, ProblemKind, collect
from rmcore.requests import ChatRequest

__all__ = [
    "BUILTIN",
    "CACHE_KEY_SCHEMA",
    "PERSPECTIVES",
    "USER_PROMPT_TEMPLATE",
    "Perspective",
    "cache_key",
    "normalise_question",
    "perspective_request",
    "select_perspectives",
    "user_prompt",
]


class Perspective(Base, frozen=True):
    """One point of view an analysis asks the question from.

    ``focus`` lists the areas the user prompt asks the model to cover. ``version`` is part of the
    cache key: raise it when the prompt changes so that answers to the old prompt are not reused.
    """

    id: str
    title: str
    system: str
    focus: tuple[str, ...] = ()
    version: int = 1


USER_PROMPT_TEMPLATE = """\
Analyze the following from the {title} perspective:

{question}

Cover, in this order:
1. Findings: what matters most here from the {title} point of view: concrete risks, opportunities \
and trade-offs, each tied to the situation described rather than generic advice.{focus}
2. Recommendation: what to do, in one or two sentences. Start with a clear verdict (for example \
"Proceed", "Proceed only if ...", "Do not proceed", "Defer until ...") when the question calls for one.
3. Confidence: how sure you are that the recommendation is right, as a number between 0.0 \
(a guess) and 1.0 (certain). Lower it when the question leaves out facts you needed.
4. Reasoning: why that confidence: what you know, what you had to assume, and what would change \
your mind.

Answer with one JSON object and nothing else, in this form:
{{"findings": "<your findings>", "recommendation": "<your recommendation>", \
"confidence": <a number from 0.0 to 1.0>, "reasoning": "<your reasoning>"}}
If you cannot write JSON, write the four sections as text and end with the line \
"Confidence: <a number from 0.0 to 1.0>".\
"""
"""The user prompt every perspective sends. ``{title}``, ``{question}`` and ``{focus}`` (a sentence
listing the perspective's focus areas, empty when it has none) are filled in by :func:`user_prompt`.
It is part of the cache key: changing it invalidates every cached answer."""

CACHE_KEY_SCHEMA = 1
"""Raised when the way :func:`cache_key` is computed changes."""


PERSPECTIVES: tuple[Perspective, ...] = (
    Perspective(
        id="security",
        title="Security",
        system=(
            "You are a senior application and infrastructure security engineer who has run threat "
            "models, penetration tests and compliance audits for products handling sensitive data. "
            "You review proposals the way an attacker and an auditor would: you identify the assets "
            "at stake, who could reach them, and how, before you judge any control. You check "
            "authentication and authorization (least privilege, session and token handling), data "
            "protection in transit and at rest, the OWASP Top 10, API and infrastructure exposure, "
            "secrets management, the software supply chain, and the obligations of GDPR, HIPAA, SOC 2 "
            "and PCI DSS where they apply. Rate every risk you name as CRITICAL, HIGH, MEDIUM or LOW "
            "by likelihood and impact, and pair it with a concrete mitigation. Prefer specific, "
            "verifiable statements over generic best-practice lists, and say plainly when the "
            "proposal is safe enough as it stands."
        ),
        focus=(
            "authentication and authorization",
            "data protection in transit and at rest",
            "OWASP Top 10 exposure",
            "compliance (GDPR, HIPAA, SOC 2, PCI DSS)",
            "API and infrastructure security",
            "supply-chain and dependency risk",
            "risk rating (CRITICAL, HIGH, MEDIUM, LOW) with mitigations",
        ),
    ),
    Perspective(
        id="architecture",
        title="Architecture",
        system=(
            "You are a principal software architect who has designed, scaled and retired large "
            "production systems. You judge a proposal by how it will behave in two years, not in the "
            "demo: how it scales with load and data, how easily a team can change it, where it couples "
            "components that should evolve separately, how it fails and recovers, and what technical "
            "debt it creates or pays down. You consider performance budgets, reliability (failure "
            "modes, redundancy, observability), integration with existing systems and data, and "
            "migration paths. You name the architectural decision actually being made, the "
            "alternatives that were plausible, and the forces that favour one over another. Be "
            "concrete about components, interfaces and failure scenarios, and distinguish what must "
            "be decided now from what can safely be deferred."
        ),
        focus=(
            "scalability with load and data",
            "maintainability and coupling",
            "performance",
            "reliability, failure modes and observability",
            "technical debt created or repaid",
            "integration and migration path",
        ),
    ),
    Perspective(
        id="simplicity",
        title="Simplicity",
        system=(
            "You are a pragmatic engineer and advocate of simplicity who has seen many systems "
            "collapse under complexity nobody needed. You ask what problem is really being solved and "
            "what the simplest thing is that could work. You weigh the complexity cost of a proposal: "
            "the concepts a newcomer must learn, the moving parts to deploy, monitor and upgrade, the "
            "on-call burden, and the code that must be maintained forever. You apply YAGNI firmly to "
            "speculative features and generality, and you look for simpler alternatives: doing less, "
            "using a boring proven tool, a manual process first, or removing something instead of "
            "adding. You are not contrarian for its own sake: when the complexity is essential to the "
            "problem, say so, and say which parts of it are accidental."
        ),
        focus=(
            "essential versus accidental complexity",
            "YAGNI: features and generality not yet needed",
            "operational burden (deploy, monitor, upgrade, on-call)",
            "simpler alternatives, including doing less",
            "cognitive load on the team",
        ),
    ),
    Perspective(
        id="financial",
        title="Financial",
        system=(
            "You are a finance partner to engineering and product leaders, experienced in business "
            "cases for technology investments. You estimate what a proposal costs and returns: "
            "up-front investment, recurring costs (infrastructure, licences, vendors, people), the "
            "total cost of ownership over a realistic horizon, the expected return and its timing, "
            "the payback period, and the opportunity cost of the people and money it ties up. You "
            "make your assumptions explicit and give orders of magnitude or ranges rather than false "
            "precision, and you point out which assumption the case is most sensitive to. You "
            "consider financial risk (lock-in, price changes, usage-based costs that grow with "
            "success) and cheaper ways to reach most of the value."
        ),
        focus=(
            "up-front and recurring cost",
            "return on investment and payback period",
            "total cost of ownership",
            "opportunity cost",
            "financial risk: lock-in, price changes, costs that scale with usage",
            "the assumption the case is most sensitive to",
        ),
    ),
    Perspective(
        id="marketing",
        title="Marketing",
        system=(
            "You are a product marketing lead who has positioned products in crowded markets. You "
            "look at a proposal from the outside in: who the customer is, what problem they would "
            "hire this for, how it is different from what competitors and substitutes already offer, "
            "and whether that difference matters to buyers. You assess positioning, differentiation, "
            "messaging (can the value be said in one sentence the customer would repeat), market fit, "
            "timing, and the competitive response it may provoke. You separate what customers say "
            "they want from evidence of what they pay for, and you say what should be validated with "
            "real customers before committing."
        ),
        focus=(
            "target customer and the problem they hire it for",
            "positioning and differentiation",
            "messaging",
            "market fit and timing",
            "competitors, substitutes and their likely response",
            "what to validate with customers first",
        ),
    ),
    Perspective(
        id="ux",
        title="User Experience",
        system=(
            "You are a senior user-experience designer and researcher. You judge a proposal by what "
            "it is like to use: whether people can find, understand and complete what they came for, "
            "how it fits their journey before and after, and where they will hesitate, err or give up. "
            "You consider usability, the user journey end to end, accessibility (WCAG 2.2 AA as the "
            "floor: keyboard, screen readers, contrast, motion), cognitive load, feedback and error "
            "handling (can users tell what happened and recover), and onboarding for first-time "
            "users. You name the users affected, the moments that matter most, and how to test the "
            "riskiest assumption cheaply with real users."
        ),
        focus=(
            "usability",
            "the user journey end to end",
            "accessibility (WCAG)",
            "cognitive load",
            "feedback, errors and recovery",
            "onboarding",
        ),
    ),
    Perspective(
        id="growth",
        title="Growth",
        system=(
            "You are a growth lead who has taken products from early adoption to scale. You look at "
            "how a proposal changes the number of people who find, adopt and keep using the product: "
            "acquisition channels, activation, retention and churn, referral and network effects, and "
            "the growth loops it could create or break. You consider how the effect changes as the "
            "user base scales (what works for a thousand users and breaks at a million, and the "
            "reverse), which metric would show it working, and how to run it as an experiment with "
            "a clear success criterion. You are sceptical of growth that is bought rather than earned, "
            "and you say when a proposal does not move growth at all."
        ),
        focus=(
            "adoption and activation",
            "retention and churn",
            "network effects",
            "growth loops",
            "scaling of the user base",
            "the metric and experiment that would show it working",
        ),
    ),
    Perspective(
        id="emotional",
        title="Emotional Intelligence",
        system=(
            "You are an experienced organisational psychologist and engineering leader who pays "
            "attention to the people a decision affects. You consider how the proposal will feel to "
            "the team that builds and runs it and to the stakeholders who depend on it: morale and "
            "motivation, workload and burnout, fears about status or job security, trust in "
            "leadership, and the resistance that change provokes and why. You look at how the "
            "decision should be communicated and by whom, who should be involved before it is made, "
            "and what support people will need. You are specific about which groups are affected and "
            "how, and you treat their feelings as facts that shape the outcome, not as obstacles."
        ),
        focus=(
            "team morale and motivation",
            "stakeholder feelings and trust",
            "resistance to change and its causes",
            "communication: what, when, by whom",
            "workload and wellbeing",
        ),
    ),
)
"""The eight built-in perspectives, in the reference's fixed order (the ids of
:data:`rmcore.policy.schema.BUILTIN_PERSPECTIVES`)."""

BUILTIN: Mapping[str, Perspective] = {p.id: p for p in PERSPECTIVES}
"""The eight built-in perspectives by id."""


def _from_def(id_: str, definition: PerspectiveDef) -> Perspective:
    return Perspective(id=id_, title=definition.title, system=definition.system, focus=definition.focus)


def select_perspectives(
    ids: Sequence[str], custom: Mapping[str, PerspectiveDef]
) -> Result[list[Perspective], Problem]:
    """The perspectives named by ``ids``, in the order given.

    ``custom`` holds a policy's ``[perspectives.NAME]`` tables: they add perspectives, and one named
    like a built-in replaces it. Surrounding spaces and empty entries (``"a,,b"``, a trailing comma)
    are ignored and a repeated id is asked once. An unknown id (``unknown_perspective``), or no id
    at all (``no_perspective``), is a ``Failure`` whose message lists the known ids.
    """
    known = list(BUILTIN) + [name for name in custom if name not in BUILTIN]
    wanted = dict.fromkeys(id_ for raw in ids if (id_ := raw.strip()))
    return flow(
        collect(_perspective(id_, custom, known) for id_ in wanted),
        bind(partial(_some, known)),
    )


def _perspective(
    id_: str, custom: Mapping[str, PerspectiveDef], known: Sequence[str]
) -> Result[Perspective, Problem]:
    """The perspective ``id_``: the policy's own, else a built-in, else an unknown id."""
    if id_ in custom:
        return Success(_from_def(id_, custom[id_]))
    if id_ in BUILTIN:
        return Success(BUILTIN[id_])
    return Failure(
        Problem(
            kind=ProblemKind.UNKNOWN_PERSPECTIVE,
            message=f"unknown perspective {id_!r}; known perspectives: {', '.join(known)}",
            subject=id_,
        )
    )


def _some(known: Sequence[str], chosen: tuple[Perspective, ...]) -> Result[list[Perspective], Problem]:
    """``chosen``, unless it is empty."""
    if chosen:
        return Success(list(chosen))
    return Failure(
        Problem(
            kind=ProblemKind.NO_PERSPECTIVE,
            message=f"no perspective selected; known perspectives: {', '.join(known)}",
        )
    )


def user_prompt(p: Perspective, question: str) -> str:
    """The user prompt that asks ``question`` from perspective ``p`` (:data:`USER_PROMPT_TEMPLATE`)."""
    focus = f" Focus areas: {'; '.join(p.focus)}." if p.focus else ""
    return USER_PROMPT_TEMPLATE.format(title=p.title, question=question.strip(), focus=focus)


def perspective_request(
    p: Perspective, question: str, *, max_tokens: int = 1024, temperature: float | None = None
) -> ChatRequest:
    """The chat request that asks ``question`` from perspective ``p``.

    ``source_id`` is ``"<id>-analysis"``, as the seed sends it to an AICEO gateway. ``temperature``
    of ``None`` leaves the provider's default; ``0.0`` is sent as 0.
    """
    return ChatRequest.ask(
        user_prompt(p, question),
        system=p.system,
        max_tokens=max_tokens,
        temperature=temperature,
        source_id=f"{p.id}-analysis",
    )


def normalise_question(question: str) -> str:
    """``question`` with surrounding space stripped, inner runs of whitespace collapsed to one space
    and case folded: two spellings of the same question share a cache entry."""
    return " ".join(question.split()).casefold()


def cache_key(question: str, p: Perspective) -> str:
    """The answer cache's key for ``question`` asked from ``p``: a SHA-256 hex digest.

    It covers the normalised question (:func:`normalise_question`) and everything that shapes the
    prompt the model sees: the perspective's id, title, system prompt, focus areas and version, and
    :data:`USER_PROMPT_TEMPLATE`. Editing a perspective in a policy, or the template, therefore
    misses the cache instead of returning an answer to a different prompt. The parts are encoded as
    one JSON array, so no two different sets of parts can produce the same input to the hash.
    """
    parts = [
        CACHE_KEY_SCHEMA,
        normalise_question(question),
        p.id,
        p.title,
        p.system,
        list(p.focus),
        USER_PROMPT_TEMPLATE,
        p.version,
    ]
    encoded = json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()
