"""The parts a program's prompt is built from: a persona and demonstrations (retrieved or from a learned ranking).

- :class:`PersonaPart` asks the model to answer as an average person from the country (cultural
  prompting, Tao et al. 2024);
- :class:`DemonstrationsPart` adds k self-alignment demonstrations (Choenni & Shutova 2024): other
  questions of the survey answered as the country answered them, chosen by the retriever;
- :class:`RankedDemonstrationsPart` picks demonstrations from a learned ranking (see :mod:`selfalign.optimize`);
- :class:`LearnedDemonstrationsPart` ranks the candidates by learned weights over the evidence about each one
  (:data:`selfalign.retrieval.FEATURES`; learned by :class:`selfalign.optimize.learned.LearnedSelection`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.programs.probes import Probe, ProgramContext
from selfalign.prompts import persona_sentence
from selfalign.retrieval import ANSWER_FORMS, FEATURES, ORDERS, STRATEGIES, VALUE_STRATEGIES, Demonstration

__all__ = [
    "DemonstrationsPart",
    "LearnedDemonstrationsPart",
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

    @property
    def uses_value_structure(self) -> bool:
        """Whether the selection reads other countries' answers (needs a survey with enough countries)."""
        return self.strategy in VALUE_STRATEGIES

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


@dataclass(frozen=True)
class LearnedDemonstrationsPart(Part):
    """The k candidates with the highest learned score ``sum(weight * feature)``, one score per candidate.

    ``weights`` pairs names of :data:`~selfalign.retrieval.FEATURES` with weights (features left out weigh 0);
    the features are the retriever's :meth:`~selfalign.retrieval.DemonstrationRetriever.candidate_features`
    for the probe (value structure leaves the target country out). Ties keep survey order. ``order`` as for
    :class:`DemonstrationsPart`: ``similar_last`` shows the best-scored candidate last, nearest the question;
    ``exclude_battery`` drops candidates of the test question's battery. One set of weights serves every
    country, including countries it was not learned on.
    """

    weights: tuple[tuple[str, float], ...] = (("concordance", 1.0),)
    k: int = 5
    answer_form: str = "majority"
    order: str = "similar_last"
    exclude_battery: bool = False

    def __post_init__(self) -> None:
        pairs = tuple(self.weights.items()) if isinstance(self.weights, dict) else tuple(self.weights)
        cleaned: list[tuple[str, float]] = []
        for pair in pairs:
            if len(pair) != 2:
                raise SelfAlignError(f"a learned weight is a (feature, weight) pair, not {pair!r}")
            name, weight = str(pair[0]), float(pair[1])
            if name not in FEATURES:
                raise UnknownChoiceError("feature", name, FEATURES)
            if not np.isfinite(weight):
                raise SelfAlignError(f"the weight of feature {name} must be a finite number, not {pair[1]!r}")
            if name in dict(cleaned):
                raise SelfAlignError(f"feature {name} is weighted twice")
            cleaned.append((name, weight))
        if not cleaned:
            raise SelfAlignError(f"a learned selection needs at least one weighted feature of {', '.join(FEATURES)}")
        object.__setattr__(self, "weights", tuple(cleaned))
        if self.answer_form not in ANSWER_FORMS:
            raise UnknownChoiceError("answer form", self.answer_form, ANSWER_FORMS)
        if self.order not in ORDERS:
            raise UnknownChoiceError("order", self.order, ORDERS)
        if self.k < 0:
            raise SelfAlignError(f"k must be at least 0, not {self.k}")

    @property
    def uses_value_structure(self) -> bool:
        """Whether the selection reads other countries' answers: always (the candidate features need them)."""
        return True

    @property
    def weight_vector(self) -> np.ndarray:
        """The weights in :data:`~selfalign.retrieval.FEATURES` order (0 for features left out)."""
        given = dict(self.weights)
        return np.array([given.get(name, 0.0) for name in FEATURES])

    def contribute(self, probe: Probe, context: ProgramContext, pieces: PromptPieces) -> PromptPieces:
        assert context.retriever is not None
        if self.k == 0:
            return pieces
        retriever = context.retriever
        features = retriever.candidate_features(
            probe.question_id,
            probe.country,
            lang=probe.demonstration_language,
            protocol=probe.protocol.value,
            answer_form=self.answer_form,
            pool=context.pool,
            exclude_battery=self.exclude_battery,
        )
        if len(features.ids) < self.k:
            raise SelfAlignError(
                f"question {probe.question_id}, country {probe.country}: only {len(features.ids)} candidate "
                f"demonstrations for k={self.k} (protocol {probe.protocol.value}"
                f"{', pool given' if context.pool is not None else ''}"
                f"{', battery excluded' if self.exclude_battery else ''})"
            )
        scores = features.values @ self.weight_vector
        best = np.argsort(-scores, kind="stable")[: self.k]  # ties: survey order
        if self.order == "similar_last":
            best = best[::-1]
        demos = retriever.demonstrations(
            probe.question_id,
            probe.country,
            [features.ids[i] for i in best],
            lang=probe.demonstration_language,
            protocol=probe.protocol.value,
            answer_form=self.answer_form,
            similarities=scores[best],
        )
        return replace(pieces, demonstrations=pieces.demonstrations + tuple(demos))

    def config(self) -> dict[str, Any]:
        return {
            "part": "learned_demonstrations",
            "weights": dict(self.weights),
            "k": self.k,
            "answer_form": self.answer_form,
            "order": self.order,
            "exclude_battery": self.exclude_battery,
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
    if kind == "learned_demonstrations":
        weights = values.get("weights", {})
        values["weights"] = tuple(weights.items()) if isinstance(weights, dict) else tuple(map(tuple, weights))
        return LearnedDemonstrationsPart(**values)
    raise UnknownChoiceError(
        "program part", str(kind), ["persona", "demonstrations", "ranked_demonstrations", "learned_demonstrations"]
    )
