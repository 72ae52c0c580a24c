"""Planning a run: a validated spec becomes its logical rows, each rendered by its program.

A run expands its :class:`~selfalign.specs.ExperimentSpec` into *logical rows*, one per grid cell and
question: model x country x language x demonstration language x program x k x option order x answer words x
template x seed x question of the split that the country answered and the protocol supports (the union of the
grid tables; a cell listed twice is one row). Demonstrations come from a pool that never contains the answers
being tested (see :func:`pool_of`).
Rows are rendered by their programs (:meth:`AlignmentProgram.prepare`, the survey adapter's renderer).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfalign.errors import SelfAlignError
from selfalign.models.types import RenderedPrompt
from selfalign.perturbations import DEFAULTS, PERTURBATION_COLUMNS
from selfalign.prompt_store import shown_demonstrations
from selfalign.specs import SAME, ExperimentSpec, resolve_language, validate_spec
from selfalign.splits import QuestionSplit, split_questions
from selfalign.survey import Protocol, Survey

KEY_COLUMNS: tuple[str, ...] = (
    "model",
    "country",
    "language",
    "demo_language",
    "program",
    "k",
    "seed",
    "question_id",
    *PERTURBATION_COLUMNS,
)
"""The columns that identify a row within a run (a logged row of an older run, without the perturbation
columns, is the unperturbed one)."""


@dataclass
class PlannedRow:
    """One logical row: its identity, settings and (once rendered) its prompt."""

    key: str
    base: dict[str, Any]
    program: Any = field(default=None, repr=False)
    prompt: RenderedPrompt | None = None
    prepare_error: str | None = None
    shown: tuple[Any, ...] = ()  # the demonstrations shown, in prompt order (stored with the prompt)


@dataclass
class RunPlan:
    """Every logical row of a spec, in table order, and the split it was drawn from."""

    spec: ExperimentSpec
    survey: Survey
    split: QuestionSplit
    rows: list[PlannedRow]
    _programs: dict[tuple[str, int | None, str], Any] = field(default_factory=dict, repr=False)

    @property
    def n_rows(self) -> int:
        """Number of logical rows."""
        return len(self.rows)


def row_key(values: dict[str, Any]) -> str:
    """The identity of a row within a run (JSON of :data:`KEY_COLUMNS`)."""
    return json.dumps([values[c] if c in values else DEFAULTS[c] for c in KEY_COLUMNS], ensure_ascii=False)


def prompt_sha256(prompt: RenderedPrompt) -> str:
    """A hash of everything a model sees of a prompt (transcript, continuations, chat messages, labels)."""
    payload = json.dumps(
        [prompt.text, prompt.continuations, prompt.messages, prompt.labels, prompt.options],
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def limit_questions(ids: Sequence[str], survey: Survey, limit: int | None) -> list[str]:
    """At most ``limit`` of ``ids``, taken round-robin over the topics (survey order within a topic)."""
    if limit is None or limit >= len(ids):
        return list(ids)
    by_topic: dict[str, list[str]] = {}
    for qid in ids:
        by_topic.setdefault(survey.question(qid).topic, []).append(qid)
    chosen: set[str] = set()
    queues = [by_topic[t] for t in survey.topics if t in by_topic]
    depth = 0
    while len(chosen) < limit:
        for queue in queues:
            if depth < len(queue) and len(chosen) < limit:
                chosen.add(queue[depth])
        depth += 1
    return [q for q in ids if q in chosen]


def _resolve_demo_language(survey: Survey, value: str, country: str, lang: str) -> str:
    if value == SAME:
        return lang
    return resolve_language(survey, value, country)


def pool_of(spec: ExperimentSpec, split: QuestionSplit) -> frozenset[str] | None:
    """The demonstration pool of a run: the dev split, or None (every other question) for split ``all``.

    Split ``test``: no test question's answer is shown; split ``dev``: the retriever never shows the question
    itself.
    """
    if spec.split == "all":
        return None
    return frozenset(split.dev)


def plan_run(spec: ExperimentSpec, survey: Survey | None = None, *, validate: bool = True) -> RunPlan:
    """Expand a spec into its logical rows (not yet rendered); validates the spec first by default."""
    from selfalign.loaders import load_survey
    from selfalign.programs import load_program

    if survey is None:
        survey = load_survey(spec.survey)
    if validate:
        spec = validate_spec(spec, survey)
    split = split_questions(survey, protocol=spec.protocol, seed=spec.split_seed, test_fraction=spec.test_fraction)
    split_ids = split.ids(spec.split)
    plan = RunPlan(spec, survey, split, [])
    seen: set[str] = set()
    questions_of: dict[str, list[str]] = {}
    for model in spec.models:
        for grid in spec.grids:
            for country in grid.countries:
                if country not in questions_of:
                    answered = [q for q in split_ids if survey.has_answers(country, q)]
                    questions_of[country] = limit_questions(answered, survey, spec.limit)
                langs = dict.fromkeys(resolve_language(survey, v, country) for v in grid.languages or spec.languages)
                for lang in langs:
                    demo_values = grid.demo_languages or spec.demo_languages
                    demo_langs = dict.fromkeys(_resolve_demo_language(survey, v, country, lang) for v in demo_values)
                    for demo_lang in demo_langs:
                        for name in grid.programs:
                            for k in grid.k:
                                program = _program(plan, name, k, model, load_program)
                                reported_k = k if k is not None else program.k
                                config = json.dumps(program.config(), sort_keys=True, ensure_ascii=False)
                                for shown in _perturbations(spec, grid):
                                    for seed in spec.seeds:
                                        for qid in questions_of[country]:
                                            base = _base_row(
                                                spec, survey, model, country, lang, demo_lang, name, config,
                                                reported_k, seed, qid,
                                            )  # fmt: skip
                                            base.update(shown)
                                            key = row_key(base)
                                            if key in seen:
                                                continue
                                            seen.add(key)
                                            plan.rows.append(PlannedRow(key, base, program))
    return plan


def _perturbations(spec: ExperimentSpec, grid: Any) -> list[dict[str, str]]:
    """The grid's perturbations (option order x answer words x template), as row values."""
    return [
        {"option_order": order, "answer_words": words, "template": template}
        for order in grid.option_orders or spec.option_orders
        for words in grid.answer_words or spec.answer_words
        for template in grid.templates or spec.templates
    ]


def _program(plan: RunPlan, name: str, k: int | None, model: str, loader: Callable[..., Any]) -> Any:
    from selfalign.programs import COMPILED_PREFIX

    cache_key = (name, k, model if name.startswith(COMPILED_PREFIX) else "")
    if cache_key not in plan._programs:
        if name.startswith(COMPILED_PREFIX):
            plan._programs[cache_key] = loader(name, survey=plan.survey, model=model)
        else:
            plan._programs[cache_key] = loader(name, k=k)
    return plan._programs[cache_key]


def country_shares(survey: Survey, protocol: Protocol, country: str, qid: str) -> dict[str, float]:
    """A country's answer shares on ``qid`` as the protocol scores them: ``agree``/``disagree`` (the question's
    binary split) or one share per option code, in the question's order (the ``country_shares`` column)."""
    question = survey.question(qid)
    answers = survey.distribution(country, qid)
    if protocol is Protocol.BINARY:
        assert question.binary is not None
        return dict(zip(("agree", "disagree"), answers.side_shares(question.binary), strict=True))
    return {c: answers.share(c) for c in question.option_codes}


def _base_row(
    spec: ExperimentSpec,
    survey: Survey,
    model: str,
    country: str,
    lang: str,
    demo_lang: str,
    program: str,
    config: str,
    k: int,
    seed: int,
    qid: str,
) -> dict[str, Any]:
    question = survey.question(qid)
    shares = country_shares(survey, Protocol(spec.protocol), country, qid)
    codes = tuple(shares)
    if spec.protocol == Protocol.BINARY.value:
        majority = "agree" if shares["agree"] >= shares["disagree"] else "disagree"
    else:
        majority = survey.distribution(country, qid).majority_option
    return {
        "run": spec.name,
        "model": model,
        "survey": survey.name,
        "protocol": spec.protocol,
        "split": spec.split,
        "split_seed": spec.split_seed,
        "country": country,
        "language": lang,
        "demo_language": demo_lang,
        "program": program,
        "program_config": config,
        "k": int(k),
        "n_demos": 0,
        "seed": seed,
        "question_id": qid,
        "topic": question.topic,
        "scale": question.scale.value,
        "option_codes": json.dumps(list(codes), ensure_ascii=False),
        "options_shown": None,
        "order_shown": None,
        "country_shares": json.dumps(shares, ensure_ascii=False),
        "country_majority": majority,
        "demo_ids": None,
    }


def render_rows(plan: RunPlan, rows: Iterable[PlannedRow]) -> None:
    """Render the prompts of ``rows`` in place (a row whose prompt cannot be built gets ``prepare_error``)."""
    from selfalign.programs import Probe, ProgramContext

    context = ProgramContext(plan.survey, pool_of(plan.spec, plan.split))
    for row in rows:
        b = row.base
        program = row.program
        probe = Probe(
            question_id=b["question_id"],
            country=b["country"],
            lang=b["language"],
            protocol=Protocol(b["protocol"]),
            demo_lang=b["demo_language"],
            seed=b["seed"],
            option_order=b["option_order"],
            answer_words=b["answer_words"],
            template=b["template"],
        )
        try:
            prepared = program.prepare(probe, context)
        except SelfAlignError as exc:
            row.prepare_error = f"prompt not built: {exc}"
            continue
        codes = json.loads(b["option_codes"])
        if sorted(prepared.option_codes) != sorted(codes):
            row.prepare_error = f"program returned option codes {list(prepared.option_codes)}"
            continue
        demo_ids = list(prepared.demo_ids)
        row.prompt = prepared.prompt
        row.shown = shown_demonstrations(prepared)
        label_of = dict(zip(prepared.option_codes, prepared.prompt.options, strict=True))
        # the label shown for each code, in the codes' (survey) order; the order shown is order_shown
        b["options_shown"] = json.dumps([label_of[c] for c in codes], ensure_ascii=False)
        b["order_shown"] = json.dumps(list(prepared.option_codes), ensure_ascii=False)
        b["demo_ids"] = json.dumps(demo_ids)
        b["n_demos"] = len(demo_ids)
        b["prompt_sha256"] = prompt_sha256(prepared.prompt)
