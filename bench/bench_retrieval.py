"""Benchmark of demonstration retrieval: similarity index build time and time per selection.

Run: ``.venv/bin/python bench/bench_retrieval.py [--selections N]``

Two surveys, measured in one run:

* the bundled WVS-7 survey: chrF++ and BM25 matrices for every language it has and both protocols, and the
  per-country features of the value-structure strategy (``correlation``) for both protocols;
* a synthetic survey of 3,000 questions (GlobalOpinionQA's size) and 12 countries whose wordings are drawn
  from a word list with Zipf-like frequencies and a fixed seed, so texts share function words and vary in
  content words.

Selections are for test-split questions with the dev split as the pool (as the runner does), cycling
through countries and the five strategies random/topic/chrf/bm25/correlation (a correlation selection
includes, the first time a test question is seen, the sums its correlations need). Targets: build < 60 s,
selection < 1 ms.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time

import numpy as np

from selfalign.loaders import load_survey
from selfalign.retrieval import DemonstrationRetriever
from selfalign.splits import split_questions
from selfalign.survey import BinarySplit, CountryAnswers, Option, Question, ScaleKind, Survey

BUILD_TARGET_S = 60.0
SELECT_TARGET_MS = 1.0
STRATEGIES = ("random", "topic", "chrf", "bm25", "correlation")
SYNTHETIC_COUNTRIES = ("DEU", "JPN", "EGY", "USA", "BRA", "IND", "NGA", "RUS", "MEX", "IDN", "TUR", "KEN")

_FUNCTION_TEXT = (
    "the of and to a in that is it for on with as be at by this have from or an they which you one all "
    "were we when there can their more if some would what about into than them only other its our should "
    "most your how people do not very much"
)
_CONTENT_TEXT = (
    "family friends work leisure politics religion government country city neighbours children parents "
    "marriage income job security science technology environment economy growth freedom equality "
    "democracy army police courts press television church mosque temple women men elections voting taxes "
    "welfare state business companies banks universities schools health hospitals immigrants refugees "
    "crime violence corruption trust respect tolerance obedience independence imagination thrift effort "
    "responsibility honesty happiness satisfaction life future past tradition change authority order "
    "peace war nation pride identity culture language history world region village internet newspapers "
    "radio books music sport art nature animals climate energy water food poverty wealth inequality "
    "competition cooperation unions parties parliament president leaders experts rules laws rights duties "
    "abortion divorce euthanasia suicide homosexuality prostitution alcohol drugs cheating bribes theft "
    "fraud stealing lying gossip jealousy kindness generosity charity volunteering membership "
    "organisations associations movements protests petitions boycotts strikes important necessary "
    "acceptable justifiable good bad better worse fair unfair free safe dangerous modern old new young "
    "local national international global public private personal social moral agree disagree support "
    "oppose allow forbid trust fear value prefer choose believe think feel"
)
FUNCTION_WORDS = _FUNCTION_TEXT.split()
CONTENT_WORDS = _CONTENT_TEXT.split()


def _weights(n: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** 1.1
    return w / w.sum()


def synthetic_survey(n_questions: int = 3000, seed: int = 0) -> Survey:
    """``n_questions`` English-like questions in 30 topics, 12 countries with Dirichlet shares."""
    rng = np.random.default_rng(seed)
    fw, cw = _weights(len(FUNCTION_WORDS)), _weights(len(CONTENT_WORDS))
    labels = ("Strongly agree", "Agree", "Disagree", "Strongly disagree")
    questions = []
    for i in range(n_questions):
        words = []
        for _ in range(int(rng.integers(6, 28))):
            pool, weights = (FUNCTION_WORDS, fw) if rng.random() < 0.45 else (CONTENT_WORDS, cw)
            words.append(pool[int(rng.choice(len(pool), p=weights))])
        body = " ".join(words)
        statement = body[0].upper() + body[1:] + "."
        options = tuple(Option(str(j + 1), {"en": label}) for j, label in enumerate(labels))
        questions.append(
            Question(
                f"G{i + 1}",
                f"Topic {i % 30}",
                ScaleKind.ORDINAL,
                options,
                {"en": f"Do you agree or disagree: {body}?"},
                binary=BinarySplit({"en": statement}, ("1", "2"), ("3", "4")),
                battery=f"battery {i // 10}" if i % 3 == 0 else None,
            )
        )
    answers = [
        CountryAnswers(country, q.id, dict(zip(q.option_codes, map(float, rng.dirichlet(np.ones(4))), strict=True)))
        for q in questions
        for country in SYNTHETIC_COUNTRIES
    ]
    return Survey.build("synthetic-3000", questions, answers)


def bench(name: str, survey: Survey, n_selections: int) -> None:
    retriever = DemonstrationRetriever(survey)
    start = time.perf_counter()
    retriever.prepare(
        strategies=("chrf", "bm25", "correlation"), languages=survey.languages, protocols=("binary", "options")
    )
    build = time.perf_counter() - start
    n_matrices = 2 * 2 * len(survey.languages)
    print(
        f"{name}: {len(survey.questions)} questions, {len(survey.countries)} countries, {len(survey.languages)} "
        f"languages, {n_matrices} matrices (chrf+bm25 x binary+options x languages) + correlation features"
    )
    print(
        f"  index build          {build:8.2f} s      target < {BUILD_TARGET_S:.0f} s   "
        f"ratio {build / BUILD_TARGET_S:.3f}"
    )

    split = split_questions(survey, protocol="binary", seed=0)
    pool = split.dev
    tests = [q for q in split.test]
    countries = survey.countries
    jobs = list(itertools.islice(itertools.cycle(itertools.product(tests, countries, STRATEGIES)), n_selections))
    per_strategy: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    skipped = 0
    for n, (qid, country, strategy) in enumerate(jobs):
        if not survey.has_answers(country, qid):
            skipped += 1
            continue
        t0 = time.perf_counter()
        demos = retriever.select(qid, country, k=5, strategy=strategy, seed=n, pool=pool)
        per_strategy[strategy].append(time.perf_counter() - t0)
        assert len(demos) == 5 and all(d.question_id in pool for d in demos)
    times = [t for ts in per_strategy.values() for t in ts]
    mean_ms = 1000 * sum(times) / len(times)
    print(
        f"  selection (mean)     {mean_ms:8.3f} ms     target < {SELECT_TARGET_MS:.0f} ms   "
        f"ratio {mean_ms / SELECT_TARGET_MS:.3f}   ({len(times)} selections, k=5, dev pool of {len(pool)})"
    )
    for strategy, ts in per_strategy.items():
        ms = 1000 * sum(ts) / max(len(ts), 1)
        print(f"    {strategy:<11}        {ms:8.3f} ms     ratio {ms / SELECT_TARGET_MS:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--selections", type=int, default=4000, help="selections timed per survey")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, numpy {np.__version__}")
    bench("wvs7 (bundled)", load_survey("wvs7"), args.selections)
    start = time.perf_counter()
    synthetic = synthetic_survey()
    print(f"(synthetic survey generated in {time.perf_counter() - start:.1f} s)")
    bench("synthetic", synthetic, args.selections)


if __name__ == "__main__":
    main()
