"""What the optimizer searches over: the search space and candidate programs.

A :class:`Candidate` is a program configuration in the form :meth:`AlignmentProgram.config` writes (parts,
instructions, fixed demonstrations), with a label and the stage that proposed it. Its :attr:`Candidate.key`
(canonical JSON) identifies it in the evaluator's memo, so the same configuration proposed twice is scored
once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.optimize.evaluate import Score
from selfalign.programs import DEFAULT_INSTRUCTIONS, AlignmentProgram, PersonaPart, part_from_config
from selfalign.retrieval import ANSWER_FORMS, ORDERS, STRATEGIES

STAGES: tuple[str, ...] = ("config", "ranking", "learned", "dspy", "mipro", "gepa")
DEFAULT_STAGES: tuple[str, ...] = ("config", "ranking")
PAPER_DEFAULT: dict[str, Any] = {
    "part": "demonstrations",
    "strategy": "chrf",
    "k": 5,
    "answer_form": "majority",
    "order": "similar_last",
    "exclude_battery": False,
}
"""The paper's best fixed strategy (the ``self-align-chrf`` program): always a candidate and the incumbent."""


@dataclass(frozen=True)
class SearchSpace:
    """The selection settings the config stage samples from, and the stages to run."""

    strategies: tuple[str, ...] = ("random", "topic", "chrf", "bm25")
    ks: tuple[int, ...] = (1, 3, 5, 8)
    answer_forms: tuple[str, ...] = ("majority", "distribution")
    orders: tuple[str, ...] = ("similar_last", "retrieved")
    personas: tuple[bool, ...] = (False, True)
    stages: tuple[str, ...] = DEFAULT_STAGES
    rerank: str = "chrf"
    exclude_battery: bool = False

    def __post_init__(self) -> None:
        for value in self.strategies:
            if value not in STRATEGIES:
                raise UnknownChoiceError("strategy", value, STRATEGIES)
        for value in self.answer_forms:
            if value not in ANSWER_FORMS:
                raise UnknownChoiceError("answer form", value, ANSWER_FORMS)
        for value in self.orders:
            if value not in ORDERS:
                raise UnknownChoiceError("order", value, ORDERS)
        for value in self.stages:
            if value not in STAGES:
                raise UnknownChoiceError("search stage", value, STAGES)
        if not self.stages:
            raise SelfAlignError(f"--search needs at least one of {', '.join(STAGES)}")
        if any(k < 1 for k in self.ks) or not self.ks:
            raise SelfAlignError(f"search space: k values must be at least 1, got {list(self.ks)}")
        if self.exclude_battery and "ranking" in self.stages:
            raise SelfAlignError("the ranking stage cannot exclude battery items; use --search config,learned")

    def grid(self) -> list[dict[str, Any]]:
        """Every (persona, demonstrations part) configuration, canonical and without duplicates.

        Settings that cannot change the prompt are canonicalised: the order of a single demonstration and of
        random draws is ``similar_last``.
        """
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        for persona in self.personas:
            for strategy in self.strategies:
                for k in self.ks:
                    for form in self.answer_forms:
                        for order in self.orders:
                            if k == 1 or strategy == "random":
                                order = "similar_last"
                            config = {
                                "persona": persona,
                                "demonstrations": {**PAPER_DEFAULT, "strategy": strategy, "k": k,
                                                   "answer_form": form, "order": order,
                                                   "exclude_battery": self.exclude_battery},
                            }  # fmt: skip
                            key = json.dumps(config, sort_keys=True)
                            if key not in seen:
                                seen.add(key)
                                out.append(config)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (written to meta.json)."""
        return {
            "strategies": list(self.strategies),
            "ks": list(self.ks),
            "answer_forms": list(self.answer_forms),
            "orders": list(self.orders),
            "personas": list(self.personas),
            "stages": list(self.stages),
            "rerank": self.rerank,
            "exclude_battery": self.exclude_battery,
        }


@dataclass
class Candidate:
    """A program configuration proposed by a search stage."""

    label: str
    origin: str
    parts: list[dict[str, Any]]
    instructions: str | None = None
    fixed_demos: list[dict[str, Any]] = field(default_factory=list)
    eligible: bool = True  # False: scored for the record, but cannot be saved as a compiled program
    note: str = ""

    @property
    def key(self) -> str:
        """Canonical JSON of what determines the prompts."""
        return json.dumps(
            {"parts": self.parts, "instructions": self.instructions, "fixed_demos": self.fixed_demos},
            sort_keys=True,
            ensure_ascii=False,
        )

    @property
    def k(self) -> int:
        """Demonstrations shown (dynamic parts plus fixed ones)."""
        return sum(int(p.get("k", 0)) for p in self.parts) + len(self.fixed_demos)

    @property
    def persona(self) -> bool:
        """Whether the program has a persona part."""
        return any(p.get("part") == "persona" for p in self.parts)

    def build(self, name: str = "candidate", description: str = "") -> AlignmentProgram:
        """The :class:`AlignmentProgram` of this configuration."""
        program = AlignmentProgram([part_from_config(p) for p in self.parts], name=name, description=description)
        if self.instructions and self.instructions != DEFAULT_INSTRUCTIONS:
            program.answer.signature = program.answer.signature.with_instructions(self.instructions)
        program.answer.demos = [dspy.Example(**d) for d in self.fixed_demos]
        return program

    def config(self) -> dict[str, Any]:
        """JSON-ready description (meta.json)."""
        return {
            "label": self.label,
            "origin": self.origin,
            "parts": self.parts,
            "instructions": self.instructions,
            "fixed_demos": self.fixed_demos,
        }


def demonstrations_candidate(config: dict[str, Any], origin: str = "config") -> Candidate:
    """A candidate from a grid entry ``{"persona": bool, "demonstrations": {...}}``."""
    demos = dict(config["demonstrations"])
    parts: list[dict[str, Any]] = [PersonaPart().config()] if config.get("persona") else []
    parts.append(demos)
    return Candidate(label=describe(parts), origin=origin, parts=parts)


def paper_default(exclude_battery: bool = False) -> Candidate:
    """The ``self-align-chrf`` configuration (chrF++, k = 5, majority answers, most similar last); with
    ``exclude_battery``, ``self-align-chrf-no-battery``."""
    demonstrations = {**PAPER_DEFAULT, "exclude_battery": exclude_battery}
    candidate = demonstrations_candidate({"persona": False, "demonstrations": demonstrations}, origin="paper")
    candidate.label = f"self-align-chrf{'-no-battery' if exclude_battery else ''} (paper default)"
    return candidate


def describe(parts: list[dict[str, Any]]) -> str:
    """A short human label of a list of part configurations."""
    words: list[str] = []
    for p in parts:
        kind = p.get("part")
        if kind == "persona":
            words.append("persona +")
        elif kind == "demonstrations":
            battery = " no battery" if p.get("exclude_battery") else ""
            words.append(f"{p['strategy']} k={p['k']} {p['answer_form']} {p['order']}{battery}")
        elif kind == "learned_demonstrations":
            weights = " ".join(f"{name}={w:+.3g}" for name, w in p["weights"].items())
            battery = " no battery" if p.get("exclude_battery") else ""
            words.append(f"learned ({weights}) k={p['k']} {p['answer_form']} {p['order']}{battery}")
        elif kind == "ranked_demonstrations":
            rerank = f" rerank={p['rerank']}/{p['shortlist']}" if p.get("rerank") else ""
            words.append(f"learned ranking k={p['k']} {p['answer_form']} {p['order']}{rerank}")
    return " ".join(words) or "zero-shot"


@dataclass
class Scored:
    """A candidate with its scores on search and validation questions."""

    candidate: Candidate
    search: Score | None = None
    validation: Score | None = None
    note: str = ""


def objective(score: Score | None) -> float:
    if score is None or math.isnan(score.objective):
        return -math.inf
    return score.objective


def by_score(rows: Sequence[Scored], attr: str = "search") -> list[Scored]:
    """Best first; ties keep the given order (stable sort)."""
    return sorted(rows, key=lambda r: -objective(getattr(r, attr)))
