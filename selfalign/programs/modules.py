"""Alignment programs: DSPy modules that answer a survey question as a country, through their predictor.

An :class:`AlignmentProgram` is a ``dspy.Module`` built from parts (see :mod:`selfalign.programs.parts`). A call
``program(question_id="Q164", country="NGA")`` (or ``program(Probe(...))``)

1. resolves the probe against the program's :class:`ProgramContext` (default: the bundled survey, no pool),
2. lets its parts contribute a persona and retrieved demonstrations,
3. calls its predictor ``self.answer`` -- a :class:`SurveyPredict` of :class:`~selfalign.signatures.SurveyAnswer`
   -- with ``question``, ``options``, ``respondent``, ``language``, ``statement`` and ``demos`` = the fixed
   demonstrations (``program.answer.demos``, e.g. from ``dspy.LabeledFewShot``; shown again in the probe's
   language) followed by the retrieved ones,
4. returns a ``dspy.Prediction`` with ``answer`` (the most likely option), ``answer_code`` (its survey code),
   ``distribution`` (:class:`~selfalign.models.types.AnswerDistribution`, with its ``method``) and
   ``prepared`` (:class:`PreparedProbe`: the prompt and the demonstrations shown).

The model is DSPy's: ``dspy.configure(lm=...)`` or ``dspy.context(lm=...)``, else the embedded model
(:func:`selfalign.models.default_lm`). So DSPy's tools work on programs as on any module: ``dspy.Evaluate``,
the few-shot optimizers and MIPROv2/GEPA record traces of ``self.answer`` and set its demos and
instructions, ``dspy.inspect_history()`` shows the prompts, ``program.save()`` / ``load()`` round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import dspy

from selfalign.adapter import SurveyAdapter
from selfalign.errors import SelfAlignError
from selfalign.models.types import AnswerDistribution, dist_from_json
from selfalign.perturbations import shown_demonstration, shown_item
from selfalign.predict import AdapterPredict
from selfalign.programs.parts import DemonstrationsPart, Part, PersonaPart, PromptPieces
from selfalign.programs.probes import PreparedProbe, Probe, ProgramContext, default_context, make_probe
from selfalign.prompts import Item
from selfalign.signatures import DEMO_FIELDS, SurveyAnswer
from selfalign.survey import Protocol, Survey


class SurveyPredict(AdapterPredict):
    """``dspy.Predict`` of :class:`SurveyAnswer` that always answers through a :class:`SurveyAdapter`.

    Saved demonstrations keep :data:`~selfalign.signatures.DEMO_FIELDS` only.
    """

    adapter_class = SurveyAdapter

    def __init__(self, signature: type[dspy.Signature] = SurveyAnswer, **config: Any) -> None:
        super().__init__(signature, **config)

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        state = super().dump_state(json_mode=json_mode)
        state["demos"] = [{k: d[k] for k in DEMO_FIELDS if k in d} for d in state["demos"]]
        return state

    def load_state(self, state: dict[str, Any], *, allow_unsafe_lm_state: bool = False) -> SurveyPredict:
        saved = state.get("signature") or {}
        if len(saved.get("fields", ())) != len(self.signature.fields):
            # written with an older SurveyAnswer: keep its instructions, this signature's fields
            current = self.signature.dump_state()
            state = {
                **state,
                "signature": {**current, "instructions": saved.get("instructions", current["instructions"])},
            }
        super().load_state(state, allow_unsafe_lm_state=allow_unsafe_lm_state)
        return self


def resolve_lm(lm: Any = None) -> Any:
    """The LM a call uses: ``lm``, else ``dspy.settings.lm``, else the embedded model's DSPy LM."""
    if lm is None:
        lm = dspy.settings.lm
    if lm is None:
        from selfalign.models.dspy_bridge import default_lm

        return default_lm()
    if not isinstance(lm, dspy.BaseLM):
        shown = repr(lm) if isinstance(lm, str) else type(lm).__name__
        raise SelfAlignError(
            f"the configured LM is not a DSPy LM ({shown}); use dspy.configure(lm=selfalign.models.dspy_lm('...'))"
        )
    return lm


@dataclass(frozen=True)
class Presentation:
    """What a program shows its predictor for one probe: the inputs and the demonstrations, in prompt order."""

    probe: Probe
    inputs: dict[str, Any]
    demos: tuple[dict[str, Any], ...]
    option_codes: tuple[str, ...]
    pieces: PromptPieces


class AlignmentProgram(dspy.Module):
    """A survey-answering program composed of parts (see the module docstring)."""

    def __init__(
        self,
        parts: Sequence[Part] = (),
        *,
        name: str = "custom",
        description: str = "",
        context: ProgramContext | None = None,
    ) -> None:
        super().__init__()
        self.answer = SurveyPredict(SurveyAnswer)
        self.parts: tuple[Part, ...] = tuple(parts)
        self.program_name = name
        self.description = description
        self.context = context

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
            "fixed_demos": [{k: d[k] for k in DEMO_FIELDS if k in d} for d in self.answer.demos],
        }

    def with_k(self, k: int) -> AlignmentProgram:
        """A copy whose demonstration parts show ``k`` demonstrations."""
        parts = [replace(p, k=k) if hasattr(p, "k") else p for p in self.parts]
        clone = AlignmentProgram(parts, name=self.program_name, description=self.description, context=self.context)
        clone.answer.demos = list(self.answer.demos)
        clone.answer.signature = self.answer.signature
        return clone

    # --- presentation ----------------------------------------------------------------------------------
    def _context(self, context: ProgramContext | None) -> ProgramContext:
        return context or self.context or default_context()

    @staticmethod
    def _item(survey: Survey, question_id: str, protocol: Protocol, lang: str) -> tuple[Item, tuple[str, ...]]:
        question = survey.question(question_id)
        if not question.supports(protocol):
            reason = question.binary_skip_reason or question.note or "not posed under this protocol"
            raise SelfAlignError(
                f"question {question.id} cannot be posed under the {protocol.value} protocol ({reason})"
            )
        if protocol is Protocol.BINARY:
            assert question.binary is not None
            return Item(question.binary.statement(lang), survey.side_labels(lang), lang, binary=True), (
                "agree",
                "disagree",
            )
        return Item(question.text(lang), question.option_labels(lang), lang), question.option_codes

    def _fixed_demos(self, survey: Survey, probe: Probe, test_text: str) -> list[dict[str, Any]]:
        """The predictor's fixed demonstrations for ``probe``: those that name a survey question and an answer
        code are shown in the probe's demonstration language and protocol; others as they are. The test
        question itself is never shown."""
        lang = probe.demonstration_language
        shown: list[dict[str, Any]] = []
        for demo in self.answer.demos:
            qid, code = demo.get("question_id"), demo.get("answer_code")
            if qid and qid == probe.question_id:
                continue
            if qid and code is not None:
                question = survey.question(str(qid))
                if probe.protocol is Protocol.BINARY and question.binary is not None:
                    agree, disagree = survey.side_labels(lang)
                    item = Item(question.binary.statement(lang), (agree, disagree), lang, binary=True)
                    answer = agree if code == "agree" else disagree
                else:
                    labels = question.option_labels(lang)
                    item = Item(question.text(lang), labels, lang)
                    codes = question.option_codes
                    answer = labels[codes.index(code)] if code in codes else str(code)
                item, answer = shown_demonstration(item, answer, str(qid), probe.perturbation)
                shown.append(_demo(item, answer, question_id=str(qid), answer_code=code))
            elif demo.get("question") and demo.get("answer") is not None:
                if demo.get("question") != test_text:
                    shown.append({k: demo[k] for k in DEMO_FIELDS if k in demo})
            else:
                raise SelfAlignError(
                    "a fixed demonstration needs question_id and answer_code, or question, options and answer"
                )
        return shown

    def present(
        self, probe: Probe, context: ProgramContext | None = None, *, respondent: str | None = None
    ) -> Presentation:
        """Resolve ``probe`` and choose what the predictor is shown (no model call)."""
        ctx = self._context(context)
        survey = ctx.survey
        probe = replace(probe, country=survey.resolve_country(probe.country), lang=survey.resolve_language(probe.lang))
        if probe.demo_lang:
            probe = replace(probe, demo_lang=survey.resolve_language(probe.demo_lang))
        item, codes = self._item(survey, probe.question_id, probe.protocol, probe.lang)
        perturbation = probe.perturbation
        item, codes = shown_item(item, codes, probe.question_id, perturbation)  # options in the order shown
        pieces = PromptPieces()
        for part in self.parts:
            pieces = part.contribute(probe, ctx, pieces)
        demos = self._fixed_demos(survey, probe, item.text)
        binary = probe.protocol is Protocol.BINARY
        for d in pieces.demonstrations:
            demo_item, answer = Item(d.text, d.options, probe.demonstration_language, binary=binary), d.answer
            if not perturbation.is_default:  # the same perturbation as the test question (selfalign.perturbations)
                demo_item, answer = shown_demonstration(demo_item, answer, d.question_id, perturbation, d.shares)
            demos.append(_demo(demo_item, answer, question_id=d.question_id))
        if respondent is not None:
            pieces = replace(pieces, persona=respondent or None)
        inputs = {
            "question": item.text,
            "options": list(item.options),
            "respondent": pieces.persona or "",
            "language": item.lang,
            "statement": item.binary,
            "template": probe.template,
        }
        return Presentation(probe, inputs, tuple(demos), codes, pieces)

    def _prepared(self, presented: Presentation) -> PreparedProbe:
        prompt = self.answer.adapter().render(self.answer.signature, presented.demos, presented.inputs)
        return PreparedProbe(
            presented.probe,
            self.program_name,
            prompt,
            presented.option_codes,
            presented.pieces.demonstrations,
            presented.pieces.persona is not None,
            presented.demos,
        )

    def prepare(self, probe: Probe, context: ProgramContext | None = None) -> PreparedProbe:
        """Render ``probe`` without a model call: the prompt for base and chat models and what it shows."""
        return self._prepared(self.present(probe, context))

    # --- answering -------------------------------------------------------------------------------------
    def forward(
        self,
        probe: Probe | None = None,
        *,
        context: ProgramContext | None = None,
        lm: Any = None,
        respondent: str | None = None,
        **inputs: Any,
    ) -> dspy.Prediction:
        """Answer one probe (a :class:`Probe`, or ``question_id=``, ``country=`` and optionally ``lang``,
        ``protocol``, ``demo_lang``, ``seed``, ``option_order``, ``answer_words``, ``template``); ``respondent``
        replaces the persona sentence, ``lm`` the configured LM for this call. See the module docstring for the
        prediction's fields."""
        presented = self.present(make_probe(probe, **inputs), context, respondent=respondent)
        pred = self.answer(**presented.inputs, demos=list(presented.demos), lm=resolve_lm(lm))
        return self._prediction(presented, pred)

    async def aforward(
        self,
        probe: Probe | None = None,
        *,
        context: ProgramContext | None = None,
        lm: Any = None,
        respondent: str | None = None,
        **inputs: Any,
    ) -> dspy.Prediction:
        """Async :meth:`forward`."""
        presented = self.present(make_probe(probe, **inputs), context, respondent=respondent)
        pred = await self.answer.acall(**presented.inputs, demos=list(presented.demos), lm=resolve_lm(lm))
        return self._prediction(presented, pred)

    def _prediction(self, presented: Presentation, pred: dspy.Prediction) -> dspy.Prediction:
        data = pred.distribution
        dist = data if isinstance(data, AnswerDistribution) else dist_from_json(data, cached=bool(data.get("cached")))
        best = dist.argmax
        code = presented.option_codes[best] if best is not None else None
        # the predictor's own prediction is what DSPy's traces keep: name the survey question and the answer's
        # code, so that a bootstrapped demonstration can be shown again in another language
        pred["question_id"] = presented.probe.question_id
        pred["answer_code"] = code
        return dspy.Prediction(
            answer=pred.answer, answer_code=code, distribution=dist, prepared=self._prepared(presented)
        )


def _demo(item: Item, answer: str, **ids: Any) -> dict[str, Any]:
    return {
        **ids,
        "question": item.text,
        "options": list(item.options),
        "language": item.lang,
        "statement": item.binary,
        "answer": answer,
    }


class ZeroShot(AlignmentProgram):
    """The question alone."""

    def __init__(
        self,
        *,
        name: str = "zero-shot",
        description: str = "The question alone.",
        context: ProgramContext | None = None,
    ) -> None:
        super().__init__((), name=name, description=description, context=context)


class Persona(AlignmentProgram):
    """The question, answered as an average person from the country (cultural prompting)."""

    def __init__(
        self,
        *,
        name: str = "persona",
        description: str = "Answer as an average person from the country.",
        context: ProgramContext | None = None,
    ) -> None:
        super().__init__((PersonaPart(),), name=name, description=description, context=context)


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
        context: ProgramContext | None = None,
    ) -> None:
        parts: list[Part] = [PersonaPart()] if self.with_persona else []
        parts.append(DemonstrationsPart(strategy, k, answer_form, order, exclude_battery))
        super().__init__(parts, name=name or f"{self.name_prefix}-{strategy}", description=description, context=context)


class PersonaSelfAlign(SelfAlign):
    """Persona plus self-alignment demonstrations."""

    with_persona = True
    name_prefix = "persona-self-align"
