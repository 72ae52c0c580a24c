"""Machine translation of a survey into another language, through the model layer (``selfalign translate``).

:func:`translate_survey` translates a survey's question wordings, binary statements, option labels and the
binary protocol's answer words ("agree" / "disagree") from a source language into a new language with any
model, and writes a reviewable language file marked machine-translated, which then loads as another language
of the survey.

Work is split into requests ("units", :mod:`selfalign.translate.units`), each one JSON object sent to the model
and expected back with the same keys, translated: one per question, one per label set shared by several
questions (or per chunk of a long one), one for the answer words. Each unit is translated by
:class:`~selfalign.translate.program.SurveyTranslator`, a DSPy module whose LM is
:func:`selfalign.models.dspy_lm` of the model (one disk cache, retries). An off-format reply is asked again
once with a correction turn; a unit that still fails fails the questions that need it and the others go on.
Every finished unit is appended to a partial file as it arrives, so an interrupted or partly failed run loses
nothing: a re-run translates only what is missing (units that failed before are asked again without the
cache), and a complete translation makes no model call at all. Where the result goes:
:mod:`selfalign.translate.store`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from selfalign.errors import ModelError, SelfAlignError
from selfalign.loaders import load_bundled, survey_name_of, survey_path, user_translations_dir
from selfalign.loaders.bundled import LANGUAGE_CODE
from selfalign.translate.program import OffFormatReply, SurveyTranslator, messages_for, parse_reply
from selfalign.translate.store import (
    NOT_REVIEWED,
    PARTIAL_SUFFIX,
    Destination,
    assemble,
    check_target,
    choose_destination,
    existing_meta,
    from_final,
    load_saved,
    meta_fields,
    publish,
)
from selfalign.translate.units import LABEL_CHUNK, LANGUAGE_NAMES, Unit, build_units, language_name

ANSWER_WORDS = "answer words"  # the key of report.failed when the agree/disagree words failed

__all__ = [
    "ANSWER_WORDS",
    "LABEL_CHUNK",
    "LANGUAGE_NAMES",
    "NOT_REVIEWED",
    "PARTIAL_SUFFIX",
    "Destination",
    "OffFormatReply",
    "SurveyTranslator",
    "TranslationError",
    "TranslationReport",
    "Unit",
    "build_units",
    "choose_destination",
    "language_name",
    "messages_for",
    "parse_reply",
    "translate_survey",
]


class TranslationError(SelfAlignError):
    """A translation that could not be completed: names the questions that failed and where progress is."""


@dataclass
class TranslationReport:
    """What :func:`translate_survey` did.

    ``written`` is the finished language file, or None when some questions failed (``failed`` maps their
    ids to the reason; the rest is kept in ``destination.partial_file``). ``calls`` counts requests that
    reached the model (retries included), ``cache_hits`` replies served from the model cache, ``reused``
    units taken from earlier runs' files without asking the model.
    """

    survey: str
    lang: str
    name: str
    destination: Destination
    units: int
    translated: int = 0
    reused: int = 0
    calls: int = 0
    cache_hits: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    written: Path | None = None
    models: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether the language file was written."""
        return self.written is not None


ProgressFn = Callable[[int, int, Unit, str | None], None]


@dataclass
class _Run:
    """The outcome of asking the model for the missing units."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    cache_hits: int = 0


def _run_units(
    todo: Sequence[Unit],
    retry_fresh: set[str],
    model: str,
    settings: dict[str, Any],
    cache_dir: str | Path | None,
    concurrency: int,
    partial_file: Path,
    names: tuple[str, str, str],
    progress: ProgressFn | None,
) -> _Run:
    """Translate ``todo`` with ``concurrency`` requests in flight, appending each outcome to ``partial_file``.

    Units in ``retry_fresh`` (they failed in an earlier run) are asked without the model cache.
    """
    from selfalign.models.dspy_bridge import dspy_lm, route_client

    run = _Run()
    cached = dspy_lm(model, cache_dir=cache_dir, **settings)
    fresh = dspy_lm(model, use_cache=False, **settings)
    clients = [route_client(cached), route_client(fresh)]
    before = [(c.stats.calls, c.stats.cache_hits) for c in clients]
    translator = SurveyTranslator()
    partial_file.parent.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="translate")
    try:
        with partial_file.open("a", encoding="utf-8") as log:
            futures = {
                pool.submit(translator, u, *names, lm=fresh if u.key in retry_fresh else cached): u for u in todo
            }
            for done, future in enumerate(as_completed(futures), start=1):
                unit = futures[future]
                error: str | None = None
                entry: dict[str, Any] = {"key": unit.key, "sha": unit.sha, "model": model}
                try:
                    entry["result"] = run.results[unit.key] = future.result()
                except (OffFormatReply, ModelError) as exc:
                    entry["failed"] = run.failed[unit.key] = error = str(exc)
                log.write(json.dumps(entry, ensure_ascii=False) + "\n")
                log.flush()
                if progress is not None:
                    progress(done, len(todo), unit, error)
    finally:  # on an interruption, drop what has not started; what finished is in the partial file
        pool.shutdown(wait=True, cancel_futures=True)
        run.calls = sum(c.stats.calls - b[0] for c, b in zip(clients, before, strict=True))
        run.cache_hits = clients[0].stats.cache_hits - before[0][1]
    return run


def _failed_questions(units: Sequence[Unit], failed: dict[str, str]) -> dict[str, str]:
    by_question: dict[str, str] = {}
    for unit in units:
        if unit.key not in failed:
            continue
        if unit.kind == "words":
            by_question.setdefault(ANSWER_WORDS, failed[unit.key])
            continue
        reason = f"shared option labels: {failed[unit.key]}" if unit.kind == "labels" else failed[unit.key]
        for qid in unit.questions:
            by_question.setdefault(qid, reason)
    return by_question


def translate_survey(
    survey: str | Path,
    lang: str,
    model: str,
    *,
    api_base: str | None = None,
    source_lang: str = "en",
    name: str | None = None,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    concurrency: int = 4,
    progress: ProgressFn | None = None,
    today: date | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
) -> TranslationReport:
    """Translate ``survey`` into ``lang`` with ``model`` and write it as a machine-translated language.

    Returns a :class:`TranslationReport`; when some units fail the finished part is kept in the partial
    file and ``report.failed`` names the questions (the CLI turns that into an error). ``progress(done,
    total, unit, error)`` is called after each unit the model was asked for. A language whose finished file
    already covers everything is left as it is (a reviewer's edits stay). ``api_base``, ``timeout_s`` and
    ``max_retries`` configure the model's client.
    """
    if not LANGUAGE_CODE.match(lang):
        raise SelfAlignError(f"{lang!r} is not a language code (e.g. fr, pt-BR, zh)")
    if concurrency < 1:
        raise SelfAlignError(f"concurrency must be at least 1, not {concurrency}")
    source_folder = survey_path(survey)
    dest = choose_destination(source_folder, lang, out)
    copy_needed = not (dest.survey_folder / "survey.toml").is_file()
    folder = source_folder if copy_needed else dest.survey_folder
    survey_name = survey_name_of(folder)
    check_target(folder, dest, survey_name)
    overlay = user_translations_dir(survey_name) if dest.kind == "overlay" else None
    base = load_bundled(folder, overlay_dir=overlay, skip_languages={lang})
    source_lang = base.resolve_language(source_lang)
    if source_lang == lang:
        raise SelfAlignError(f"the source and target language are both {lang!r}")
    target_name = name or str(existing_meta(dest).get("name") or "") or language_name(lang)
    source_name = base.languages_info[source_lang].name

    units = build_units(base, source_lang, lang)
    saved = load_saved(dest, units)
    report = TranslationReport(survey_name, lang, target_name, dest, len(units))
    results: dict[str, dict[str, Any]] = {}
    models: set[str] = set()
    n_from_final = 0
    todo: list[Unit] = []
    for unit in units:
        earlier = from_final(unit, base, saved)
        if earlier is not None:
            results[unit.key] = earlier
            models.update(saved.final_meta.get("models") or [])
            n_from_final += 1
        elif unit.key in saved.done:
            results[unit.key] = saved.done[unit.key]["result"]
            models.add(str(saved.done[unit.key].get("model", model)))
        else:
            todo.append(unit)
    report.reused = len(results)
    if n_from_final == len(units) and (name is None or name == saved.final_meta.get("name")):
        report.models = tuple(sorted(models)) or tuple(saved.final_meta.get("models") or ())
        report.written = dest.text_file
        return report

    if copy_needed:
        shutil.copytree(
            source_folder, dest.survey_folder, ignore=shutil.ignore_patterns(f"*{PARTIAL_SUFFIX}"), dirs_exist_ok=True
        )
    if todo:
        run = _run_units(
            todo,
            saved.failed,
            model,
            {"api_base": api_base, "timeout_s": timeout_s, "max_retries": max_retries},
            cache_dir,
            concurrency,
            dest.partial_file,
            (source_name, target_name, lang),
            progress,
        )
        results.update(run.results)
        report.translated, report.calls, report.cache_hits = len(run.results), run.calls, run.cache_hits
        report.failed = _failed_questions(units, run.failed)
        if run.results:
            models.add(model)
    report.models = tuple(sorted(models)) or (model,)
    if report.failed:
        return report
    records = assemble(base, units, results)
    day = (today or date.today()).isoformat()
    publish(dest, records, meta_fields(target_name, results["words"], report.models, source_lang, day))
    report.written = dest.text_file
    return report
