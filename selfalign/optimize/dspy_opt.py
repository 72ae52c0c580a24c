"""DSPy's own optimizers inside ``selfalign optimize`` (stages ``dspy``, ``mipro`` and ``gepa``).

The student is an :class:`~selfalign.programs.AlignmentProgram` (with the base configuration's persona, no
dynamic demonstrations) whose context is the search's (demonstration pool = dev questions). DSPy's
optimizers run it as they run any module: they call ``program(**example.inputs())`` with the LM configured
through ``dspy.context`` (:func:`selfalign.models.dspy_lm` of the search's model, so every call goes through
the search's cached client), record traces of its predictor, and set the predictor's demonstrations and
instructions. The metric is the project's (:func:`selfalign.programs.metric`); examples are the country's dev
questions (:func:`selfalign.programs.survey_examples`). Nothing here is module-level state: several searches
can run in one process, and the optimizers use several threads (``threads``, default 4).

``dspy``
    ``LabeledFewShot`` (k labelled dev questions as fixed demonstrations), ``BootstrapFewShot`` (demonstrations
    the model itself answered as the country did, from its own traces) and ``BootstrapFewShotWithRandomSearch``
    (random search over such sets, scored on search questions), each sized to the stage's share of the budget.
``mipro``
    ``MIPROv2``: instructions proposed by an LM (``model`` option, default the search's model; the tiny embedded
    base model writes poor instructions) searched together with demonstration sets (needs Optuna).
``gepa``
    ``dspy.GEPA``: instructions evolved by a reflection LM (``reflection_model``, required) from textual
    feedback on the model's answers (:func:`feedback_metric`).

Each compiled program becomes a candidate with fixed demonstrations (and instructions) that the search then
scores on its own questions like every other candidate. The calls the optimizers make count towards the
budget (every distribution asked for, cached or not). Fixed demonstrations carry one country's answers, so
these stages run for single-country searches only.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import dspy

from selfalign.errors import SelfAlignError
from selfalign.optimize.space import Candidate, Scored
from selfalign.programs import AlignmentProgram, PersonaPart, js_metric, metric, survey_examples
from selfalign.signatures import DEMO_FIELDS

if TYPE_CHECKING:
    from selfalign.optimize.search import Search

DEFAULT_THREADS = 4


def feedback_metric(
    gold: dspy.Example,
    pred: dspy.Prediction,
    trace: Any = None,
    pred_name: str | None = None,
    pred_trace: Any = None,
    *,
    objective: str = "agreement",
) -> dspy.Prediction:
    """GEPA's metric: the project's score (:func:`~selfalign.programs.metric`, or
    :func:`~selfalign.programs.js_metric` for ``objective="js"``), with feedback naming the country's answer
    and the model's."""
    score = float((js_metric if objective == "js" else metric)(gold, pred))
    dist = getattr(pred, "distribution", None)
    shares = list(gold.shares)
    if dist is None or not dist.ok:
        feedback = "The model gave no valid answer (an error or an answer outside the options)."
    else:
        best = max(range(len(shares)), key=lambda i: shares[i])
        feedback = (
            f"Most people in {gold.country} answered {dist.options[best]!r} ({100 * shares[best]:.0f}%); "
            f"the model put {100 * dist.probs[best]:.0f}% on it and answered {pred.answer!r}."
        )
    return dspy.Prediction(score=score, feedback=feedback)


def _clean_demos(demos: Sequence[Any]) -> list[dict[str, Any]]:
    """Fixed demonstrations as JSON-ready dicts that name their survey question and answer code."""
    out = []
    for demo in demos:
        data = dict(demo)
        if data.get("question_id") and data.get("answer_code") is not None:
            out.append({k: data[k] for k in DEMO_FIELDS if k in data})
    return out


def _fixed_candidate(
    base: Candidate, demos: list[dict[str, Any]], label: str, instructions: str | None = None
) -> Candidate:
    parts: list[dict[str, Any]] = [{"part": "persona"}] if base.persona else []
    return Candidate(label=label, origin="dspy", parts=parts, instructions=instructions, fixed_demos=demos)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class _Stage:
    """One DSPy stage of a search: its student, examples, LM and the calls its optimizers made."""

    def __init__(self, search: Search, allowance: int, base: Candidate, options: dict[str, Any]) -> None:
        from selfalign.models.dspy_bridge import dspy_lm

        self.search = search
        self.base = base
        self.options = options
        self.country = search.countries[0]
        self.limit = search.ev.planned + allowance
        self.metric = js_metric if search.ev.objective == "js" else metric  # the search's objective
        self.k = base.k or 5
        self.threads = int(options.get("threads", DEFAULT_THREADS))
        self.lm = dspy_lm(search.model, cache_dir=options.get("cache_dir"), **options.get("client_settings", {}))
        self.client = _client_of(self.lm)
        examples = survey_examples(
            search.survey, countries=[self.country], split="all", protocol=search.protocol.value, lang=search.ev.lang
        )
        universe = set(search.universe)
        self.trainset = [ex for ex in examples if ex.question_id in universe]
        wanted = {i.question_id for i in search.items("search")}
        self.valset = [ex for ex in self.trainset if ex.question_id in wanted]

    def student(self) -> AlignmentProgram:
        parts = [PersonaPart()] if self.base.persona else []
        return AlignmentProgram(parts, name="dspy-student", context=self.search.ev.context)

    @property
    def left(self) -> int:
        """Planned calls left in the stage's share of the budget."""
        return self.limit - self.search.ev.planned

    def compile(self, optimizer: Any, **kwargs: Any) -> AlignmentProgram:
        """Run ``optimizer.compile(student, **kwargs)`` with the stage's LM; its requests count as planned calls."""
        before = self.client.stats.requests
        try:
            with dspy.context(lm=self.lm), _quiet():
                return optimizer.compile(self.student(), **kwargs)
        finally:
            self.search.ev.planned += self.client.stats.requests - before

    def scored(self, program: AlignmentProgram, label: str, stage: str, instructions: str | None = None) -> Scored:
        demos = _clean_demos(program.answer.demos)
        candidate = _fixed_candidate(self.base, demos, label, instructions)
        if instructions:
            candidate.note = f"instructions: {instructions[:200]}"
        items = self.search.items("search")
        return Scored(candidate, self.search.try_score(candidate, items, stage, self.limit))


def run_stage(stage: str, search: Search, allowance: int, base: Candidate, options: dict[str, Any]) -> list[Scored]:
    """Run the ``dspy``, ``mipro`` or ``gepa`` stage within about ``allowance`` planned calls."""
    if len(search.countries) > 1:
        search.notes.append(f"{stage}: skipped for a pooled search (fixed demonstrations carry one country's answers)")
        return []
    runner = _Stage(search, allowance, base, options)
    if stage == "dspy":
        return _dspy_stage(runner)
    if stage == "mipro":
        return _mipro_stage(runner)
    return _gepa_stage(runner)


def _dspy_stage(st: _Stage) -> list[Scored]:
    search = st.search
    n_search = len(search.items("search"))
    out: list[Scored] = []
    search.progress.stage("dspy: LabeledFewShot")
    labeled = st.compile(dspy.LabeledFewShot(k=st.k), trainset=st.trainset)
    out.append(st.scored(labeled, f"dspy LabeledFewShot k={st.k}", "dspy/labeled"))
    # each bootstrapping pass asks for about one answer per training example it tries
    n_train = max(0, min(len(st.trainset), (st.left - n_search) // 3))
    if n_train >= st.k:
        search.progress.stage(f"dspy: BootstrapFewShot ({n_train} examples)")
        optimizer = dspy.BootstrapFewShot(
            metric=st.metric, max_bootstrapped_demos=max(1, st.k // 2), max_labeled_demos=st.k, max_errors=n_train
        )
        boot = st.compile(optimizer, trainset=st.trainset[:n_train])
        out.append(st.scored(boot, f"dspy BootstrapFewShot k={len(boot.answer.demos)}", "dspy/bootstrap"))
    else:
        search.notes.append("dspy: BootstrapFewShot skipped (budget share too small)")
    valset = st.valset[: st.options.get("valset", 16)]
    per_candidate = len(valset) + max(1, st.k // 2) * 2  # scoring a set plus its bootstrapping calls
    n_candidates = max(0, min(st.options.get("num_candidate_programs", 8), (st.left - n_search) // per_candidate - 2))
    if n_candidates >= 1 and valset:
        search.progress.stage(f"dspy: BootstrapFewShotWithRandomSearch ({n_candidates} sets)")
        optimizer = dspy.BootstrapFewShotWithRandomSearch(
            metric=st.metric, max_bootstrapped_demos=max(1, st.k // 2), max_labeled_demos=st.k,
            num_candidate_programs=n_candidates, num_threads=st.threads, max_errors=len(st.trainset),
        )  # fmt: skip
        best = st.compile(optimizer, trainset=st.trainset, valset=valset)
        out.append(st.scored(best, f"dspy BootstrapFewShotWithRandomSearch k={len(best.answer.demos)}", "dspy/random"))
    else:
        search.notes.append("dspy: BootstrapFewShotWithRandomSearch skipped (budget share too small)")
    return out


def _client_of(lm: Any) -> Any:
    from selfalign.models.dspy_bridge import route_client

    client = route_client(lm)
    assert client is not None
    return client


def _mipro_stage(st: _Stage) -> list[Scored]:
    from selfalign.models.dspy_bridge import dspy_lm

    try:
        import optuna  # noqa: F401
    except ImportError:
        raise SelfAlignError("the mipro stage needs Optuna: pip install optuna") from None
    search = st.search
    search.progress.stage("mipro: proposing instructions")
    model = st.options.get("model") or search.model
    settings = st.options.get("client_settings", {}) if model == search.model else {}  # --api-base is --model's
    prompt_lm = dspy_lm(
        model, cache_dir=st.options.get("cache_dir"), max_tokens=st.options.get("max_tokens", 128), **settings
    )
    generator = _client_of(prompt_lm)
    before = generator.stats.calls
    optimizer = dspy.MIPROv2(
        metric=st.metric, prompt_model=prompt_lm, task_model=st.lm, auto=None,
        num_candidates=st.options.get("num_candidates", 3), max_bootstrapped_demos=max(1, st.k // 2),
        max_labeled_demos=st.k, num_threads=st.threads, verbose=False,
    )  # fmt: skip
    try:
        compiled = st.compile(
            optimizer, trainset=st.trainset, valset=st.valset[: st.options.get("valset", 16)],
            num_trials=st.options.get("num_trials", 4), minibatch=False, program_aware_proposer=False,
            data_aware_proposer=False,
        )  # fmt: skip
    except Exception as exc:  # e.g. a small model whose proposals DSPy cannot parse
        message = " ".join(str(exc).split())[:200]
        search.notes.append(f"mipro: MIPROv2 failed with {model}: {type(exc).__name__}: {message}")
        return []
    finally:
        search.generation_calls += generator.stats.calls - before
    instructions = compiled.answer.signature.instructions
    return [st.scored(compiled, "dspy MIPROv2", "mipro", instructions)]


def _gepa_stage(st: _Stage) -> list[Scored]:
    from selfalign.models.dspy_bridge import dspy_lm

    search = st.search
    model = st.options.get("reflection_model")
    if not model:
        raise SelfAlignError("the gepa stage needs a reflection model: --reflection-model MODEL (a capable chat model)")
    reflection = dspy_lm(model, cache_dir=st.options.get("cache_dir"), max_tokens=st.options.get("max_tokens", 1024))
    generator = _client_of(reflection)
    before = generator.stats.calls
    valset = st.valset[: st.options.get("valset", 16)]
    calls = max(len(valset) * 2, min(st.left - len(search.items("search")), st.options.get("max_metric_calls", 200)))
    search.progress.stage(f"gepa: evolving instructions ({calls} metric calls)")
    feedback = functools.partial(feedback_metric, objective=search.ev.objective)
    optimizer = dspy.GEPA(
        metric=feedback, reflection_lm=reflection, max_metric_calls=calls, num_threads=st.threads,
        track_stats=False, seed=search.seed,
    )  # fmt: skip
    try:
        compiled = st.compile(optimizer, trainset=st.trainset[: max(len(valset), 8)], valset=valset)
    except Exception as exc:
        message = " ".join(str(exc).split())[:200]
        search.notes.append(f"gepa: GEPA failed with reflection model {model}: {type(exc).__name__}: {message}")
        return []
    finally:
        search.generation_calls += generator.stats.calls - before
    instructions = compiled.answer.signature.instructions
    return [st.scored(compiled, "dspy GEPA", "gepa", instructions)]
