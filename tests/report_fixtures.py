"""A synthetic run of realistic size for report tests: real survey wordings rendered by the real prompt
renderer, up to five demonstrations per prompt (none for zero-shot and persona rows), answers and
probabilities drawn from a seeded generator."""

from __future__ import annotations

import json
import random

import pandas as pd

from selfalign.loaders import load_survey
from selfalign.plan import prompt_sha256
from selfalign.prompt_store import ShownDemo, StoredPrompt
from selfalign.prompts import Item, ShownDemonstration, render
from selfalign.runtable import COLUMNS, rows_to_frame

PROGRAMS = ("zero-shot", "persona", "self-align-random", "self-align-topic", "self-align-chrf")
LANGS = ("en", "en", "en", "ar", "zh")
N_DEMOS = (0, 2, 3, 4, 5)  # prompts of about 650 characters on average, as in the paper run
TRICKY = 'Say "</script><script>alert(1)</script>" & <b>bold</b> <!-- x --> \u2028 كلمة 中文'


def synthetic_run(n_rows: int = 25_000, n_prompts: int = 7_800, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """A run table of ``n_rows`` binary-protocol rows over ``n_prompts`` distinct prompts, and the prompts by
    hash. Prompt 0's test statement is :data:`TRICKY` (quotes, tags, a closing script tag, Arabic, CJK)."""
    rng = random.Random(seed)
    survey = load_survey("wvs7")
    questions = [q for q in survey.questions if q.binary is not None]
    countries = list(survey.countries)
    prompts: dict[str, StoredPrompt] = {}
    meta: list[tuple[str, str, str, list[str], list[str]]] = []
    while len(prompts) < n_prompts:
        lang = rng.choice(LANGS)
        sides = survey.side_labels(lang)
        question, *demos = rng.sample(questions, 1 + rng.choice(N_DEMOS))
        statement = TRICKY if not prompts else question.binary.statement(lang)
        shown = [
            ShownDemonstration(Item(d.binary.statement(lang), sides, lang, True), rng.choice(sides)) for d in demos
        ]
        prompt = render(Item(statement, sides, lang, True), demonstrations=shown)
        sha = prompt_sha256(prompt)
        if sha in prompts:
            continue
        stored = tuple(ShownDemo(d.id, s.item.text, s.answer) for d, s in zip(demos, shown, strict=True))
        asked = [question.id, *(d.id for d in demos)]
        answered = [c for c in countries if all((c, qid) in survey.answers for qid in asked)]
        if not answered:
            continue
        prompts[sha] = StoredPrompt(sha, prompt, stored)
        meta.append((sha, question.id, lang, [d.id for d in demos], answered))
    config = json.dumps({"parts": [{"part": "demonstrations", "k": 5}]})
    codes = json.dumps(["agree", "disagree"])
    shown_sides = {lang: json.dumps(list(survey.side_labels(lang)), ensure_ascii=False) for lang in LANGS}
    topics = {q.id: q.topic for q in questions}
    nan = float("nan")
    rows = []
    for r in range(n_rows):
        sha, qid, lang, demo_ids, answered = meta[r % n_prompts]
        shares, p = rng.random(), rng.random()
        failed = rng.random() < 0.02
        majority = "agree" if shares >= 0.5 else "disagree"
        choice = "agree" if p >= 0.5 else "disagree"
        row = dict.fromkeys(COLUMNS)
        row.update(
            run="synthetic",
            model="selfalign/gemma-3-270m",
            survey="wvs7",
            protocol="binary",
            split="test",
            split_seed=0,
            country=answered[(r // n_prompts + r) % len(answered)],  # a country that answered all it is shown
            language=lang,
            demo_language=lang,
            program=PROGRAMS[r % 2] if not demo_ids else PROGRAMS[2 + r % 3],
            program_config=config,
            k=5,
            n_demos=len(demo_ids),
            seed=0,
            question_id=qid,
            topic=topics[qid],
            scale="ordinal",
            option_codes=codes,
            options_shown=shown_sides[lang],
            country_shares=f'{{"agree": {shares!r}, "disagree": {1 - shares!r}}}',
            country_majority=majority,
            demo_ids="[" + ", ".join(f'"{d}"' for d in demo_ids) + "]",
            invalid=False,
            ok=not failed,
            prompt_tokens=180,
            completion_tokens=0,
            cost_usd=0.0,
            latency_s=0.4,
            cached=False,
            prompt_sha256=sha,
            finished_at="2026-01-01T00:00:00+00:00",
        )
        if failed:
            row.update(error="model error: Timeout after 60 s", off_option_mass=nan, agreement=nan,
                       js_similarity=nan, wasserstein_similarity=nan)  # fmt: skip
        else:
            row.update(
                probs=f'{{"agree": {p!r}, "disagree": {1 - p!r}}}',
                model_choice=choice,
                method="logprob",
                off_option_mass=0.0,
                agreement=float(choice == majority),
                js_similarity=1 - abs(p - shares) / 2,
                wasserstein_similarity=1 - abs(p - shares),
            )
        rows.append(row)
    return rows_to_frame(rows), prompts
