"""Probes for the model-layer benchmarks: real WVS-7 questions (the bundled survey, in the project's own
wording) with demonstrations answered the way a real country's majority answered them.

Not a benchmark itself; imported by bench_models_*.py and compare_server_vs_inprocess.py.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfalign.models.types import LETTERS, RenderedPrompt


def render(question: str, options: tuple[str, ...], demos: list[tuple[str, tuple[str, ...], str]]) -> RenderedPrompt:
    """A probe: a "Question / Options / Answer:" transcript for the base model; for chat models the
    demonstrations as earlier user/assistant turns answered with letters."""

    def block(q: str, opts: tuple[str, ...]) -> str:
        return f"Question: {q}\nOptions: {' / '.join(opts)}\nAnswer:"

    text = "".join(f"{block(q, o)} {a}\n\n" for q, o, a in demos) + block(question, options)

    def ask(q: str, opts: tuple[str, ...]) -> str:
        lettered = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(opts))
        return f"{q}\n{lettered}\nReply with the letter only."

    messages: list[dict[str, str]] = []
    for q, o, a in demos:
        messages += [{"role": "user", "content": ask(q, o)}, {"role": "assistant", "content": LETTERS[o.index(a)]}]
    messages.append({"role": "user", "content": ask(question, options)})
    return RenderedPrompt(
        text=text,
        continuations=tuple(" " + o for o in options),
        messages=tuple(messages),
        labels=tuple(LETTERS[: len(options)]),
        options=options,
    )


def survey_probes(
    n: int,
    *,
    k: int = 5,
    n_options: int | None = 4,
    seed: int = 0,
    countries: tuple[str, ...] = ("DEU", "NGA", "JPN", "BRA", "USA", "IDN", "EGY", "SWE"),
) -> list[RenderedPrompt]:
    """``n`` probes: a WVS-7 question (with ``n_options`` options when given) and ``k`` demonstrations of the
    same topic, answered with a country's majority option (the real figures)."""
    from selfalign.loaders import load_survey

    survey = load_survey("wvs7")
    rng = random.Random(seed)
    pool = [
        q
        for q in survey.questions
        if q.probe and (n_options is None or len(q.options) == n_options) and 2 <= len(q.options) <= 6
    ]
    probes = []
    while len(probes) < n:
        target = rng.choice(pool)
        country = rng.choice([c for c in countries if c in survey.countries])
        same = [
            q for q in survey.questions_of_topic(target.topic) if q.id != target.id and q.probe and len(q.options) <= 6
        ]
        rng.shuffle(same)
        demos = []
        for q in same:
            if len(demos) == k:
                break
            try:
                code = survey.majority_option(country, q.id)
            except Exception:
                continue
            labels = q.option_labels("en")
            answer = labels[q.option_codes.index(code)]
            demos.append((q.text("en"), labels, answer))
            if len(demos) == k:
                break
        if len(demos) < k:
            continue
        probes.append(render(target.text("en"), target.option_labels("en"), demos))
    return probes
