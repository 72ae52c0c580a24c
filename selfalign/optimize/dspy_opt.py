"""DSPy's optimizers inside ``selfalign optimize`` (stages ``dspy`` and ``mipro``), driven by the project's metric.

DSPy optimizers compile a ``dspy.Module`` against a metric ``metric(example, prediction, trace)``. Here the
module is the :class:`~selfalign.programs.AlignmentProgram` itself: its ``forward(probe)`` renders the probe and
scores the options through the search's budgeted, cached model client, and returns a ``dspy.Prediction``
with the distribution; the metric is the project's objective (agreement, JS similarity as tie-break)
against the country's shares. Examples are the country's dev questions (inputs: the probe; labels: the
majority answer, the shares). What each optimizer does here:

``LabeledFewShot``
    fixed demonstrations sampled from the dev questions with the country's answers: fits as is.
``BootstrapFewShotWithRandomSearch``
    random search over fixed demonstration sets, each scored by our metric on search questions. Its
    bootstrapping step keeps a demonstration when the teacher program's answer to it agreed with the
    country (the program records a DSPy trace of its predictor for this); the zero-shot seed is skipped.
``KNNFewShot``
    the project's retriever as the vectorizer: the KNN scores of a probe against the dev examples are
    exactly the retriever's chrF++ similarities (dev examples are one-hot rows, a probe is its row of
    similarities). Its compiled program chooses demonstrations inside a Python closure, which DSPy's
    ``save`` does not store, so it is scored for the record (``eligible=False``) and cannot be the saved
    program; its selection equals ``DemonstrationsPart(strategy="chrf")`` up to the order of the
    demonstrations, which the config stage covers.
``MIPROv2`` (stage ``mipro``, not in the default search)
    proposes instructions with a generating LM (:func:`selfalign.models.dspy_lm` of the same model) and
    searches instructions x demonstration sets with Optuna (``pip install optuna``). The embedded 270M base
    model writes poor instructions; use a capable ``--model`` for this stage.

Fixed demonstrations carry one country's answers, so these stages run for single-country optimizations
only (a pooled search skips them with a note).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import dspy
import numpy as np

from selfalign.errors import SelfAlignError
from selfalign.optimize.evaluate import JS_TIE_WEIGHT, BudgetExceeded, Evaluator, Item, Score, aggregate
from selfalign.optimize.space import Candidate
from selfalign.programs import AlignmentProgram, PersonaPart, Probe, ProgramContext
from selfalign.survey import Protocol

if TYPE_CHECKING:
    from selfalign.optimize.search import Scored, _Search

DEMO_FIELDS = ("question_id", "answer_code", "question", "options", "answer")
_QID = re.compile(r"question_id='([^']+)'")
_runtime: dict[str, Any] = {}
_runtime_lock = threading.Lock()


class _BudgetedClient:
    """A model client for DSPy-driven calls: every prompt goes through the evaluator's memo and budget, and
    refuses (raising :class:`BudgetExceeded`, remembered in ``refused``) past an absolute planned-call mark."""

    def __init__(self, evaluator: Evaluator, limit: int) -> None:
        self.evaluator = evaluator
        self.limit = limit
        self.refused = False
        self._lock = threading.Lock()

    def score(self, prompt: Any) -> Any:
        with self._lock:
            if self.evaluator.planned + self.evaluator.cost_of_prompts([prompt]) > self.limit:
                self.refused = True
                raise BudgetExceeded("the DSPy stage reached its share of the budget")
            return self.evaluator.score_prompts([prompt])[0]


class TracedProgram(AlignmentProgram):
    """An :class:`AlignmentProgram` whose ``forward`` takes its context and client from the running DSPy stage
    and records a DSPy trace of its predictor, so that DSPy's bootstrapping can keep answered examples."""

    def forward(self, probe: Probe, context: ProgramContext | None = None, client: Any = None, **_: Any) -> Any:
        context = context or _runtime["context"]
        client = client or _runtime["client"]
        prediction = super().forward(probe, context, client)
        trace = dspy.settings.trace
        if trace is not None and prediction.distribution.ok:
            prepared = prediction.prepared
            best = prediction.distribution.argmax
            question = context.survey.questions_by_id[prepared.probe.question_id]
            lang = prepared.probe.lang
            binary = prepared.probe.protocol is Protocol.BINARY and question.binary is not None
            inputs = {
                "question_id": probe.question_id,
                "question": question.binary.statement(lang) if binary and question.binary else question.text(lang),
                "options": list(prepared.prompt.options),
                "respondent": "",
            }
            outputs = dspy.Prediction(answer=prediction.answer, answer_code=prepared.option_codes[best])
            trace.append((self.answer, inputs, outputs))
        return prediction


@contextlib.contextmanager
def _running(context: ProgramContext, client: _BudgetedClient) -> Iterator[None]:
    with _runtime_lock:
        _runtime.update(context=context, client=client)
        try:
            with contextlib.redirect_stdout(io.StringIO()), dspy.context(trace=None):
                yield
        finally:
            _runtime.clear()


def _examples(search: _Search, country: str, qids: Sequence[str]) -> list[dspy.Example]:
    survey = search.survey
    ev = search.ev
    out = []
    for qid in qids:
        question = survey.questions_by_id[qid]
        shares = ev.shares(Item(country, qid))
        if search.protocol is Protocol.BINARY:
            assert question.binary is not None
            code = survey.majority_side(country, qid) or "agree"
            options = list(survey.side_labels(ev.lang))
            text = question.binary.statement(ev.lang)
            answer = options[0] if code == "agree" else options[1]
        else:
            code = survey.majority_option(country, qid)
            options = list(question.option_labels(ev.lang))
            text = question.text(ev.lang)
            answer = options[question.option_codes.index(code)]
        probe = Probe(qid, country, lang=ev.lang, protocol=search.protocol, seed=ev.seed)
        out.append(
            dspy.Example(
                probe=probe, question_id=qid, answer_code=code, question=text, options=options, answer=answer,
                shares=shares,
            ).with_inputs("probe")
        )  # fmt: skip
    return out


def metric(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    """The project's objective for one example: agreement + JS_TIE_WEIGHT x JS similarity (0 on failure)."""
    from selfalign.metrics import agreement, js_similarity

    dist = getattr(prediction, "distribution", None)
    if dist is None or not dist.ok:
        return 0.0
    shares = list(example.shares)
    total = sum(shares)
    shares = [s / total for s in shares]
    return agreement(dist.probs, shares) + JS_TIE_WEIGHT * js_similarity(dist.probs, shares)


def _clean_demos(demos: Sequence[Any]) -> list[dict[str, Any]]:
    """Fixed demonstrations as JSON-ready dicts with only the fields the program renders from."""
    out = []
    for demo in demos:
        data = dict(demo)
        if not data.get("question_id") or data.get("answer_code") is None:
            continue
        out.append({k: data[k] for k in DEMO_FIELDS if k in data})
    return out


def _student(base: Candidate) -> TracedProgram:
    parts = [PersonaPart()] if base.persona else []
    return TracedProgram(parts, name="dspy-student")


def _fixed_candidate(
    base: Candidate, demos: list[dict[str, Any]], label: str, instructions: str | None = None
) -> Candidate:
    parts: list[dict[str, Any]] = [{"part": "persona"}] if base.persona else []
    return Candidate(label=label, origin="dspy", parts=parts, instructions=instructions, fixed_demos=demos)


def score_module(search: _Search, module: Any, items: Sequence[Item], client: _BudgetedClient) -> Score:
    """Score a DSPy-compiled module (called probe by probe through its own ``forward``) on ``items``."""
    outcomes = []
    for item in items:
        probe = Probe(
            item.question_id, item.country, lang=search.ev.lang, protocol=search.protocol, seed=search.ev.seed
        )
        prediction = module(probe=probe)
        demos = tuple(d.question_id for d in prediction.prepared.demonstrations)
        outcomes.append((item, search.ev.outcome(item, prediction.distribution, demos)))
    return aggregate(outcomes)


def _retriever_vectorizer(search: _Search, strategy: str = "chrf") -> Any:
    """An embedding function whose dot products are the retriever's similarities (see the module docstring)."""
    retriever = search.ev.context.retriever
    assert retriever is not None
    state: dict[str, Any] = {}

    def embed(texts: list[str]) -> np.ndarray:
        ids = [m.group(1) if (m := _QID.search(t)) else "" for t in texts]
        if "train" not in state:  # the first call embeds the trainset
            state["train"] = ids
            return np.eye(len(ids), dtype=np.float32)
        rows = []
        for qid in ids:
            sims = retriever.similarities(qid, strategy=strategy, lang=search.ev.lang, protocol=search.protocol.value)
            rows.append([sims.get(t, -1e9) if t != qid else -1e9 for t in state["train"]])
        return np.asarray(rows, dtype=np.float32)

    return dspy.Embedder(embed, caching=False)


def run_stage(stage: str, search: _Search, allowance: int, base: Candidate, options: dict[str, Any]) -> list[Scored]:
    """Run the ``dspy`` or ``mipro`` stage within ``allowance`` planned calls; returns scored candidates."""

    if len(search.countries) > 1:
        search.notes.append(f"{stage}: skipped for a pooled search (fixed demonstrations carry one country's answers)")
        return []
    country = search.countries[0]
    limit = search.ev.planned + allowance
    client = _BudgetedClient(search.ev, limit)
    k = base.k or 5
    dev = [q for q in search.universe if search.survey.has_answers(country, q)]
    trainset = _examples(search, country, dev)
    search_items = search.items("search")
    out: list[Scored] = []
    with _running(search.ev.context, client):
        try:
            if stage == "dspy":
                out += _dspy_stage(search, base, k, trainset, search_items, client, limit, options)
            else:
                out += _mipro_stage(search, base, k, trainset, search_items, client, options)
        except BudgetExceeded:
            search.notes.append(f"{stage}: stopped at its share of the budget")
    if client.refused:
        search.notes.append(f"{stage}: some DSPy calls were refused at the budget share; its scores are partial")
    return out


def _dspy_stage(
    search: _Search,
    base: Candidate,
    k: int,
    trainset: list[dspy.Example],
    search_items: list[Item],
    client: _BudgetedClient,
    limit: int,
    options: dict[str, Any],
) -> list[Scored]:
    from selfalign.optimize.search import Scored

    out: list[Scored] = []
    # LabeledFewShot: k labelled dev examples as fixed demonstrations
    search.progress.stage("dspy: LabeledFewShot")
    labeled = dspy.LabeledFewShot(k=k).compile(_student(base), trainset=trainset)
    candidate = _fixed_candidate(base, _clean_demos(labeled.answer.demos), f"dspy LabeledFewShot k={k}")
    out.append(Scored(candidate, search.try_score(candidate, search_items, "dspy/labeled", limit)))
    # KNNFewShot with the project's retriever (scored for the record; not saveable)
    search.progress.stage("dspy: KNNFewShot")
    knn_items = search_items[: options.get("knn_questions", 16)]
    knn = dspy.KNNFewShot(k=k, trainset=trainset, vectorizer=_retriever_vectorizer(search),
                          max_bootstrapped_demos=0, max_labeled_demos=k)  # fmt: skip
    knn_program = knn.compile(_student(base))
    score = score_module(search, knn_program, knn_items, client)
    knn_candidate = Candidate(
        label=f"dspy KNNFewShot k={k} (chrF++ retriever)", origin="dspy", parts=[], eligible=False,
        note="a closure DSPy cannot save; equals chrF selection up to demonstration order",
    )  # fmt: skip
    search.log.append(
        {
            "stage": "dspy/knn",
            "candidate": knn_candidate.label,
            "on": "search",
            "questions": len(knn_items),
            "agreement": _r(score.agreement),
            "js_similarity": _r(score.js),
        }
    )
    out.append(Scored(knn_candidate, None, note="scored on the first search questions only"))
    # BootstrapFewShotWithRandomSearch: random search over fixed demonstration sets, scored by our metric
    valset_size = min(len(search_items), options.get("valset", 16))
    per_candidate = valset_size + 2  # valset scoring plus a few bootstrapping calls
    remaining = limit - search.ev.planned - len(search_items)  # keep room to score the winner on all items
    n_candidates = max(0, min(options.get("num_candidate_programs", 8), remaining // per_candidate - 2))
    if n_candidates >= 1:
        search.progress.stage(f"dspy: BootstrapFewShotWithRandomSearch ({n_candidates} sets)")
        valset = [ex for ex in trainset if Item(search.countries[0], ex.question_id) in set(search_items)][:valset_size]
        optimizer = dspy.BootstrapFewShotWithRandomSearch(
            metric=metric, metric_threshold=1.0, max_bootstrapped_demos=max(1, k // 2), max_labeled_demos=k,
            num_candidate_programs=n_candidates, num_threads=1, max_errors=len(trainset),
        )  # fmt: skip
        best = optimizer.compile(_student(base), trainset=trainset, valset=valset,
                                 restrict=list(range(-2, n_candidates)))  # fmt: skip
        demos = _clean_demos(best.answer.demos)
        candidate = _fixed_candidate(base, demos, f"dspy BootstrapFewShotWithRandomSearch k={len(demos)}")
        out.append(Scored(candidate, search.try_score(candidate, search_items, "dspy/random-search", limit)))
    else:
        search.notes.append("dspy: BootstrapFewShotWithRandomSearch skipped (budget share too small)")
    return out


def _mipro_stage(
    search: _Search,
    base: Candidate,
    k: int,
    trainset: list[dspy.Example],
    search_items: list[Item],
    client: _BudgetedClient,
    options: dict[str, Any],
) -> list[Scored]:
    from selfalign.models import dspy_lm
    from selfalign.optimize.search import Scored

    try:
        import optuna  # noqa: F401
    except ImportError:
        raise SelfAlignError("the mipro stage needs Optuna: pip install optuna") from None
    search.progress.stage("mipro: proposing instructions")
    model = options.get("model") or search.model
    lm = dspy_lm(model, cache_dir=options.get("cache_dir"), max_tokens=options.get("max_tokens", 128))
    valset = [ex for ex in trainset if Item(search.countries[0], ex.question_id) in set(search_items)]
    valset = valset[: options.get("valset", 16)]
    optimizer = dspy.MIPROv2(
        metric=metric, prompt_model=lm, task_model=lm, auto=None, num_candidates=options.get("num_candidates", 3),
        max_bootstrapped_demos=max(1, k // 2), max_labeled_demos=k, num_threads=1, verbose=False,
    )  # fmt: skip
    from selfalign.models.dspy_lm import route_client

    generator = route_client(lm)  # the ModelClient behind the DSPy LM
    assert generator is not None
    before = generator.stats.calls
    try:
        with dspy.context(lm=lm):
            compiled = optimizer.compile(
                _student(base), trainset=trainset, valset=valset, num_trials=options.get("num_trials", 4),
                minibatch=False, program_aware_proposer=False, data_aware_proposer=False,
            )  # fmt: skip
    except BudgetExceeded:
        raise
    except Exception as exc:  # e.g. a small model whose proposals DSPy cannot parse
        message = " ".join(str(exc).split())[:200]
        search.notes.append(f"mipro: MIPROv2 failed with {model}: {type(exc).__name__}: {message}")
        return []
    finally:
        search.generation_calls += generator.stats.calls - before
    instructions = compiled.answer.signature.instructions
    candidate = _fixed_candidate(base, _clean_demos(compiled.answer.demos), "dspy MIPROv2", instructions)
    candidate.note = f"instructions: {instructions[:200]}"
    return [Scored(candidate, search.try_score(candidate, search_items, "mipro", client.limit))]


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)
