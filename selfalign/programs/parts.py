"""The parts a program's prompt is built from: a persona and demonstrations (retrieved or from a learned ranking).

- :class:`PersonaPart` asks the model to answer as an average person from the country (cultural
  prompting, Tao et al. 2024);
- :class:`DemonstrationsPart` adds k self-alignment demonstrations (Choenni & Shutova 2024): other
  questions of the survey answered as the country answered them, chosen by the retriever;
- :class:`RankedDemonstrationsPart` picks demonstrations from a learned ranking (see :mod:`selfalign.optimize`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.programs.probes import Probe, ProgramContext
from selfalign.prompts import persona_sentence
from selfalign.retrieval import ANSWER_FORMS, ORDERS, STRATEGIES, Demonstration

__all__ = [
    "DemonstrationsPart",
    "Part",
    "PersonaPart",
    "PromptPieces",
    "RankedDemonstrationsPart",
    "part_from_config",
]


@dataclass(frozen=True)
class PromptPieces:
    """What the parts contributed to one prompt."""

    persona: str | None = None
    demonstrations: tuple[Demonstration, ...] = ()


class Part:
    """A piece of a program's prompt. Subclasses override :meth:`contribute` and :meth:`config`."""

    def contribute(self, probe: Probe, context: ProgramContext, pieces: PromptPieces) -> PromptPieces:
        """Return ``pieces`` with this part's contribution added."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The part's whole configuration (saved with programs and written to run tables)."""
        raise NotImplementedError


@dataclass(frozen=True)
class PersonaPart(Part):
    """Ask the model to answer as an average person from the probe's country."""

    def contribute(self, probe: Probe, context: ProgramContext, pieces: PromptPieces) -> PromptPieces:
        survey = context.survey
        code = survey.resolve_country(probe.country)
        return replace(pieces, persona=persona_sentence(code, survey.country_names[code], probe.lang))

    def config(self) -> dict[str, Any]:
        return {"part": "persona"}


@dataclass(frozen=True)
class DemonstrationsPart(Part):
    """Self-alignment demonstrations chosen by the retriever (strategy, k, answer form, order)."""

    strategy: str = "chrf"
    k: int = 5
    answer_form: str = "majority"
    order: str = "similar_last"
    exclude_battery: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UnknownChoiceError("strategy", self.strategy, STRATEGIES)
        if self.answer_form not in ANSWER_FORMS:
            raise UnknownChoiceError("answer form", self.answer_form, ANSWER_FORMS)
        if self.order not in ORDERS:
            raise UnknownChoiceError("order", self.order, ORDERS)
        if self.k < 0:
            raise SelfAlignError(f"k must be at least 0, not {self.k}")

    def contribute(self, probe: Probe, context: ProgramContext, pieces: PromptPieces) -> PromptPieces:
        assert context.retriever is not None
        demos = context.retriever.select(
            probe.question_id,
            probe.country,
            k=self.k,
            strategy=self.strategy,
            seed=probe.seed,
            lang=probe.demonstration_language,
            protocol=probe.protocol.value,
            answer_form=self.answer_form,
            order=self.order,
            pool=context.pool,
            exclude_battery=self.exclude_battery,
        )
        return replace(pieces, demonstrations=pieces.demonstrations + tuple(demos))

    def config(self) -> dict[str, Any]:
        return {
            "part": "demonstrations",
            "strategy": self.strategy,
            "k": self.k,
            "answer_form": self.answer_form,
            "order": self.order,
            "exclude_battery": self.exclude_battery,
        }


@dataclass(frozen=True)
class RankedDemonstrationsPart(Part):
    """Demonstrations from a learned ranking of survey questions: the k best-ranked allowed candidates.

    ``ranking`` lists question ids, most useful first (learned on the dev split by ``selfalign optimize``);
    the test question, questions outside the pool and questions the country did not answer are skipped.
    With ``rerank="chrf"`` (or another similarity strategy) the top ``shortlist`` ranked candidates are
    re-ordered by similarity to the test question before the k are taken.
    """

    ranking: tuple[str, ...] = ()
    k: int = 5
    answer_form: str = "majority"
    order: str = "similar_last"
    rerank: str | None = None
    shortlist: int = 20

    def contribute(self, probe: Probe, context: ProgramContext, pieces: PromptPieces) -> PromptPieces:
        assert context.retriever is not None
        if self.k == 0:
            return pieces
        allowed = set(
            context.retriever.candidate_ids(
                probe.question_id,
                probe.country,
                protocol=probe.protocol.value,
                answer_form=self.answer_form,
                pool=context.pool,
            )
        )
        ranked = [q for q in self.ranking if q in allowed]
        if self.rerank:
            scores = context.retriever.similarities(
                probe.question_id,
                strategy=self.rerank,
                lang=probe.demonstration_language,
                protocol=probe.protocol.value,
            )
            shortlist = ranked[: max(self.shortlist, self.k)]
            ranked = sorted(shortlist, key=lambda q: -scores.get(q, 0.0))
        chosen = ranked[: self.k]
        if len(chosen) < self.k:
            raise SelfAlignError(
                f"question {probe.question_id}, country {probe.country}: the learned ranking has only "
                f"{len(chosen)} usable demonstrations for k={self.k}"
            )
        demos = context.retriever.select(
            probe.question_id,
            probe.country,
            k=len(allowed),
            strategy="random",
            seed=probe.seed,
            lang=probe.demonstration_language,
            protocol=probe.protocol.value,
            answer_form=self.answer_form,
            pool=context.pool,
        )
        by_id = {d.question_id: d for d in demos}
        ordered = [by_id[q] for q in chosen]  # most useful first
        if self.order == "similar_last":
            ordered.reverse()
        return replace(pieces, demonstrations=pieces.demonstrations + tuple(ordered))

    def config(self) -> dict[str, Any]:
        return {
            "part": "ranked_demonstrations",
            "ranking": list(self.ranking),
            "k": self.k,
            "answer_form": self.answer_form,
            "order": self.order,
            "rerank": self.rerank,
            "shortlist": self.shortlist,
        }


def part_from_config(config: dict[str, Any]) -> Part:
    """Rebuild a part from :meth:`Part.config` output."""
    kind = config.get("part")
    values = {k: v for k, v in config.items() if k != "part"}
    if kind == "persona":
        return PersonaPart()
    if kind == "demonstrations":
        return DemonstrationsPart(**values)
    if kind == "ranked_demonstrations":
        values["ranking"] = tuple(values.get("ranking", ()))
        return RankedDemonstrationsPart(**values)
    raise UnknownChoiceError("program part", str(kind), ["persona", "demonstrations", "ranked_demonstrations"])
