"""The experiment runner: a validated spec becomes one row per probe in a resumable run table.

A run expands its :class:`~selfalign.specs.ExperimentSpec` into *logical rows*, one per grid cell and
question: model x country x language x demonstration language x program x k x seed x question of the split
that the country answered and the protocol supports (the union of the grid tables; a cell listed twice is
one row). Demonstrations come from a pool that never contains the answers being tested:

- split ``test``: the pool is the dev split, so no test question's answer is shown as a demonstration;
- split ``dev``: the pool is the dev split minus the question itself (the retriever never shows the test
  question);
- split ``all``: no pool restriction (every other question).

Identical work is done once. Each row is rendered by its program; rows with the same model and the same
rendered prompt (e.g. a zero-shot probe, which does not depend on k, demonstration language or seed) share one
model call, and every row keeps its own grid cell (its ``k``, ``seed``, ``demo_language``) in the table.

The run folder holds:

- ``runs.jsonl``: the append-only log. Each finished row is appended as one JSON line from the model
  client's ``on_result`` callback (flushed per row, so a killed process loses at most the probes in flight;
  fsynced every :data:`FSYNC_INTERVAL_S` seconds at most and at the end, which bounds what a power cut takes).
  Prompts go to ``ModelClient.score_many`` in chunks (:func:`chunk_size`), sorted by transcript so that
  consecutive prompts share prefixes the embedded model can reuse;
- ``runs.parquet`` and ``runs.csv``: the run table (:data:`COLUMNS`), rewritten from the log at the end of
  every run, also an interrupted one;
- ``run.json``: the spec, the split, counts and the model clients' statistics;
- ``prompts.jsonl.gz``: every distinct prompt as sent and the demonstrations it shows, stored before the model
  calls (:mod:`selfalign.prompt_store`).

Resuming: run the same spec into the same folder. Rows logged with ``ok`` true (and the same program
configuration and survey settings) are kept and not recomputed; rows that failed are retried and the new
line replaces the old one (the last line for a row wins). A pending row whose prompt was already answered by
the same model in the log reuses that answer without a call. So a resumed run repeats no model call and loses
no row.

A probe that failed (model error, an invalid answer, or a prompt that could not be built) is a row with
``ok`` false, NaN metrics and the error text; the run goes on and the summaries count it as failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock
from typing import Any

import pandas as pd

from selfalign.errors import SelfAlignError
from selfalign.metrics import probe_metrics
from selfalign.models.types import AnswerDistribution, RenderedPrompt
from selfalign.prompt_store import shown_demonstrations, store_prompts
from selfalign.specs import NATIVE, SAME, ExperimentSpec, validate_spec
from selfalign.splits import QuestionSplit, split_questions
from selfalign.survey import Protocol, ScaleKind, Survey

LOG_FILE = "runs.jsonl"
TABLE_PARQUET = "runs.parquet"
TABLE_CSV = "runs.csv"
RUN_META = "run.json"
FSYNC_INTERVAL_S = 1.0
CHUNK_MIN = 8
CHUNK_PER_SLOT = 32

KEY_COLUMNS: tuple[str, ...] = (
    "model",
    "country",
    "language",
    "demo_language",
    "program",
    "k",
    "seed",
    "question_id",
)
"""The columns that identify a row within a run."""

COLUMNS: tuple[str, ...] = (
    "run",
    "model",
    "survey",
    "protocol",
    "split",
    "split_seed",
    "country",
    "language",
    "demo_language",
    "program",
    "program_config",
    "k",
    "n_demos",
    "seed",
    "question_id",
    "topic",
    "scale",
    "option_codes",
    "options_shown",
    "probs",
    "country_shares",
    "model_choice",
    "country_majority",
    "demo_ids",
    "method",
    "off_option_mass",
    "invalid",
    "error",
    "ok",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_s",
    "cached",
    "prompt_sha256",
    "agreement",
    "js_similarity",
    "wasserstein_similarity",
    "finished_at",
)
"""Columns of the run table. JSON columns: ``program_config``, ``option_codes``, ``options_shown``,
``probs`` and ``country_shares`` (objects code -> value, in option order; binary protocol: ``agree`` and
``disagree``, the country's side shares renormalised over both sides), ``demo_ids``. ``k`` is the k of the
grid cell the row is reported under (the program's own k when the grid gives none); ``n_demos`` the number
of demonstrations actually shown. ``wasserstein_similarity`` is NaN for nominal questions under the options
protocol and for failed rows; the binary protocol's agree/disagree pair counts as a two-point scale."""

_MODEL_FIELDS = (
    "probs",
    "model_choice",
    "method",
    "off_option_mass",
    "invalid",
    "error",
    "ok",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_s",
    "cached",
    "agreement",
    "js_similarity",
    "wasserstein_similarity",
)
_SETTING_FIELDS = ("survey", "protocol", "split", "split_seed", "program_config")


class RunInterrupted(SelfAlignError):
    """A run stopped by Ctrl-C; the table was written and the run can be resumed."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        super().__init__(
            f"interrupted after {result.n_done} of {result.n_total} probes; run the same command again to resume"
        )


# --- planning ----------------------------------------------------------------------------------------------


@dataclass
class PlannedRow:
    """One logical row: its identity, settings and (once rendered) its prompt."""

    key: str
    base: dict[str, Any]
    program: Any = field(default=None, repr=False)
    prompt: RenderedPrompt | None = None
    prepare_error: str | None = None
    shown: tuple[Any, ...] = ()  # prompt store hook (issue 16): the demonstrations shown, in prompt order


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
    return json.dumps([values[c] for c in KEY_COLUMNS], ensure_ascii=False)


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


def _resolve_language(survey: Survey, value: str, country: str) -> str:
    return survey.native_language(country) if value == NATIVE else survey.resolve_language(value)


def _resolve_demo_language(survey: Survey, value: str, country: str, lang: str) -> str:
    if value == SAME:
        return lang
    return _resolve_language(survey, value, country)


def _pool(spec: ExperimentSpec, split: QuestionSplit) -> frozenset[str] | None:
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
                langs = dict.fromkeys(_resolve_language(survey, v, country) for v in grid.languages or spec.languages)
                for lang in langs:
                    demo_values = grid.demo_languages or spec.demo_languages
                    demo_langs = dict.fromkeys(_resolve_demo_language(survey, v, country, lang) for v in demo_values)
                    for demo_lang in demo_langs:
                        for name in grid.programs:
                            for k in grid.k:
                                program = _program(plan, name, k, model, load_program)
                                reported_k = k if k is not None else program.k
                                config = json.dumps(program.config(), sort_keys=True, ensure_ascii=False)
                                for seed in spec.seeds:
                                    for qid in questions_of[country]:
                                        base = _base_row(
                                            spec, survey, model, country, lang, demo_lang, name, config,
                                            reported_k, seed, qid,
                                        )  # fmt: skip
                                        key = row_key(base)
                                        if key in seen:
                                            continue
                                        seen.add(key)
                                        plan.rows.append(PlannedRow(key, base, program))
    return plan


def _program(plan: RunPlan, name: str, k: int | None, model: str, loader: Callable[..., Any]) -> Any:
    from selfalign.programs import COMPILED_PREFIX

    cache_key = (name, k, model if name.startswith(COMPILED_PREFIX) else "")
    if cache_key not in plan._programs:
        if name.startswith(COMPILED_PREFIX):
            plan._programs[cache_key] = loader(name, survey=plan.survey, model=model)
        else:
            plan._programs[cache_key] = loader(name, k=k)
    return plan._programs[cache_key]


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
    answers = survey.distribution(country, qid)
    if spec.protocol == Protocol.BINARY.value:
        assert question.binary is not None
        codes: tuple[str, ...] = ("agree", "disagree")
        shares = dict(zip(codes, answers.side_shares(question.binary), strict=True))
        majority = "agree" if shares["agree"] >= shares["disagree"] else "disagree"
    else:
        codes = question.option_codes
        shares = {c: answers.share(c) for c in codes}
        majority = answers.majority_option
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
        "country_shares": json.dumps(shares, ensure_ascii=False),
        "country_majority": majority,
        "demo_ids": None,
    }


def render_rows(plan: RunPlan, rows: Iterable[PlannedRow]) -> None:
    """Render the prompts of ``rows`` in place (a row whose prompt cannot be built gets ``prepare_error``)."""
    from selfalign.programs import Probe, ProgramContext

    context = ProgramContext(plan.survey, _pool(plan.spec, plan.split))
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
        )
        try:
            prepared = program.prepare(probe, context)
        except SelfAlignError as exc:
            row.prepare_error = f"prompt not built: {exc}"
            continue
        if list(prepared.option_codes) != json.loads(b["option_codes"]):
            row.prepare_error = f"program returned option codes {list(prepared.option_codes)}"
            continue
        fixed = [d.get("question_id") for d in getattr(program.answer, "demos", [])]
        demo_ids = [q for q in fixed if q and q != b["question_id"]] + [d.question_id for d in prepared.demonstrations]
        row.prompt = prepared.prompt
        row.shown = shown_demonstrations(program, prepared, context.survey)  # prompt store hook (issue 16)
        b["options_shown"] = json.dumps(list(prepared.prompt.options), ensure_ascii=False)
        b["demo_ids"] = json.dumps(demo_ids)
        b["n_demos"] = len(demo_ids)
        b["prompt_sha256"] = prompt_sha256(prepared.prompt)


# --- rows ----------------------------------------------------------------------------------------------------


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def model_fields(base: dict[str, Any], dist: AnswerDistribution) -> dict[str, Any]:
    """The model-output and metric columns of a row from its answer distribution."""
    codes: list[str] = json.loads(base["option_codes"])
    ok = dist.ok and len(dist.probs) == len(codes)
    error = dist.error
    if error is None and dist.invalid:
        error = f"invalid answer: {dist.raw_answer!r}" if dist.raw_answer is not None else "invalid answer"
    if error is None and not ok:
        error = f"model returned {len(dist.probs)} probabilities for {len(codes)} options"
    metrics = {"agreement": math.nan, "js_similarity": math.nan, "wasserstein_similarity": math.nan}
    choice = None
    if ok:
        shares = json.loads(base["country_shares"])
        ordinal = base["protocol"] == Protocol.BINARY.value or base["scale"] == ScaleKind.ORDINAL.value
        try:
            metrics = probe_metrics(list(dist.probs), [shares[c] for c in codes], ordinal)
        except ValueError as exc:
            ok, error = False, f"cannot score: {exc}"
        best = dist.argmax
        choice = codes[best] if best is not None else None
    return {
        "probs": json.dumps(dict(zip(codes, map(float, dist.probs), strict=True))) if ok else None,
        "model_choice": choice if ok else None,
        "method": str(dist.method.value if hasattr(dist.method, "value") else dist.method),
        "off_option_mass": float(dist.off_option_mass),
        "invalid": bool(dist.invalid),
        "error": error if not ok else None,
        "ok": bool(ok),
        "prompt_tokens": int(dist.prompt_tokens or 0),
        "completion_tokens": int(dist.completion_tokens or 0),
        "cost_usd": _nan_if_none(dist.cost_usd),
        "latency_s": float(dist.latency_s or 0.0),
        "cached": bool(dist.cached),
        **(metrics if ok else {m: math.nan for m in metrics}),
    }


def _failed_fields(error: str) -> dict[str, Any]:
    return {
        "probs": None,
        "model_choice": None,
        "method": None,
        "off_option_mass": math.nan,
        "invalid": False,
        "error": error,
        "ok": False,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": math.nan,
        "latency_s": 0.0,
        "cached": False,
        "agreement": math.nan,
        "js_similarity": math.nan,
        "wasserstein_similarity": math.nan,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _finish(base: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    row = {**base, **fields, "finished_at": _now()}
    return {c: row.get(c) for c in COLUMNS}


# --- the log ---------------------------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class RunLog:
    """The append-only JSONL log of a run folder: one line per finished row, safe to call from threads."""

    def __init__(self, path: Path, fsync_interval_s: float = FSYNC_INTERVAL_S) -> None:
        self.path = path
        self.fsync_interval_s = fsync_interval_s
        self._lock = Lock()
        self._synced_at = time.monotonic()
        self.written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
        self._file = path.open("a", encoding="utf-8")
        if needs_newline:  # a line cut short by a kill: end it so the next row starts cleanly
            self._file.write("\n")
            self._file.flush()

    def append(self, row: dict[str, Any]) -> None:
        """Append one row and flush it; fsync when ``fsync_interval_s`` has passed since the last fsync."""
        line = json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=False, allow_nan=False)
        with self._lock:
            if self._file.closed:  # a result arriving after an interrupt: it is in the model cache, not the log
                return
            self._file.write(line + "\n")
            self._file.flush()
            self.written += 1
            now = time.monotonic()
            if now - self._synced_at >= self.fsync_interval_s:
                os.fsync(self._file.fileno())
                self._synced_at = now

    def close(self) -> None:
        """Flush, fsync and close."""
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def read_log(path: Path) -> dict[str, dict[str, Any]]:
    """The logged rows by row key; the last line of a key wins. Lines that do not parse (a row cut short by a
    kill) are skipped."""
    rows: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return rows
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
                key = row_key(row)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            rows[key] = row
    return rows


# --- tables ------------------------------------------------------------------------------------------------------


def rows_to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A run table with :data:`COLUMNS` and stable dtypes."""
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    for col in ("split_seed", "k", "n_demos", "seed", "prompt_tokens", "completion_tokens"):
        frame[col] = pd.to_numeric(frame[col]).fillna(0).astype("int64")
    for col in ("off_option_mass", "cost_usd", "latency_s", "agreement", "js_similarity", "wasserstein_similarity"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in ("invalid", "ok", "cached"):
        frame[col] = frame[col].fillna(False).astype(bool)
    for col in COLUMNS:
        if frame[col].dtype == object:
            frame[col] = frame[col].astype("string")
    return frame


def write_table(frame: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """Write ``runs.parquet`` and ``runs.csv`` atomically; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet, csv = out_dir / TABLE_PARQUET, out_dir / TABLE_CSV
    tmp_parquet, tmp_csv = parquet.with_suffix(".parquet.tmp"), csv.with_suffix(".csv.tmp")
    frame.to_parquet(tmp_parquet, index=False)
    frame.to_csv(tmp_csv, index=False)
    os.replace(tmp_parquet, parquet)
    os.replace(tmp_csv, csv)
    return parquet, csv


def load_run_table(path: str | Path) -> pd.DataFrame:
    """A stored run table: a run folder (``runs.parquet``, else ``runs.csv``) or a table file."""
    target = Path(path)
    if target.is_dir():
        candidates = [target / TABLE_PARQUET, target / TABLE_CSV]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise SelfAlignError(f"{target}: no {TABLE_PARQUET} or {TABLE_CSV} (run `selfalign eval` first)")
        target = found
    if not target.is_file():
        raise SelfAlignError(f"{target}: no such run table")
    frame = pd.read_parquet(target) if target.suffix == ".parquet" else pd.read_csv(target)
    missing = [c for c in ("program", "question_id", "ok", "agreement") if c not in frame.columns]
    if missing:
        raise SelfAlignError(f"{target}: not a run table (missing columns {missing})")
    return frame


# --- running -----------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What a run did: the final table and counts."""

    out_dir: Path
    table: pd.DataFrame
    n_total: int
    n_done: int
    n_failed: int
    n_resumed: int
    n_reused: int
    n_model_calls: int
    n_unique_prompts: int
    wall_s: float
    interrupted: bool = False
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def table_path(self) -> Path:
        """The Parquet run table."""
        return self.out_dir / TABLE_PARQUET


ClientFactory = Callable[[str], Any]


def default_client_factory(cache_dir: str | Path | None = None, concurrency: int | None = None) -> ClientFactory:
    """A factory of :class:`selfalign.models.ModelClient` with an optional cache folder and concurrency."""

    def make(model: str) -> Any:
        from selfalign import models

        kwargs: dict[str, Any] = {}
        if cache_dir is not None:
            kwargs["cache"] = models.open_cache(cache_dir)
        if concurrency is not None:
            kwargs["max_concurrency"] = concurrency
        return models.ModelClient(model, **kwargs)

    return make


def _stats_dict(client: Any) -> dict[str, Any]:
    stats = getattr(client, "stats", None)
    if stats is None:
        return {}
    if hasattr(stats, "as_dict"):
        return dict(stats.as_dict())
    if hasattr(stats, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(stats)
    if isinstance(stats, dict):
        return dict(stats)
    return {k: v for k, v in vars(stats).items() if not k.startswith("_")}


def _same_settings(logged: dict[str, Any], base: dict[str, Any]) -> bool:
    return all(str(logged.get(f)) == str(base.get(f)) for f in _SETTING_FIELDS)


def run_spec(
    spec: ExperimentSpec,
    out_dir: str | Path,
    *,
    client_factory: ClientFactory | None = None,
    cache_dir: str | Path | None = None,
    concurrency: int | None = None,
    progress: bool = True,
    console: Any = None,
) -> RunResult:
    """Run (or resume) ``spec`` into ``out_dir`` and return the final table (see the module docstring).

    Validates the spec before anything else. ``client_factory(model)`` returns an object with
    ``score_many(prompts, on_result=...)`` (default: :class:`selfalign.models.ModelClient`, with ``cache_dir``
    and ``concurrency``). Ctrl-C writes the table from the log and raises :class:`RunInterrupted`.
    """
    started = time.monotonic()
    out = Path(out_dir)
    plan = plan_run(spec)
    spec = plan.spec
    factory = client_factory or default_client_factory(cache_dir, concurrency)
    out.mkdir(parents=True, exist_ok=True)
    logged = read_log(out / LOG_FILE)

    done: set[str] = set()
    pending: list[PlannedRow] = []
    for row in plan.rows:
        old = logged.get(row.key)
        if old is not None and old.get("ok") and _same_settings(old, row.base):
            done.add(row.key)
        else:
            pending.append(row)
    render_rows(plan, pending)
    # prompt store hook (issue 16): the prompts of the rows about to run, once per prompt_sha256, fsynced
    store_prompts(out, [(r.base["prompt_sha256"], r.prompt, r.shown) for r in pending if r.prompt is not None])
    answered: dict[tuple[str, str], dict[str, Any]] = {}
    for old in logged.values():
        if old.get("ok") and old.get("prompt_sha256"):
            answered.setdefault((old["model"], old["prompt_sha256"]), old)

    n_resumed = len(done)
    n_reused = 0
    n_unique = 0
    calls = [0]
    units: dict[str, dict[str, list[PlannedRow]]] = {}
    log = RunLog(out / LOG_FILE)
    stats: dict[str, Any] = {}
    interrupted = False
    try:
        for row in pending:
            if row.prompt is None:
                log.append(_finish(row.base, _failed_fields(row.prepare_error or "prompt not built")))
                continue
            sha = row.base["prompt_sha256"]
            previous = answered.get((row.base["model"], sha))
            if previous is not None:
                fields = {f: previous.get(f) for f in _MODEL_FIELDS}
                fields.update(cached=True)
                log.append(_finish(row.base, fields))
                n_reused += 1
                continue
            units.setdefault(row.base["model"], {}).setdefault(sha, []).append(row)
        n_unique = sum(len(u) for u in units.values())
        with _progress(progress, console, plan.n_rows, plan.n_rows - sum(
            len(rows) for u in units.values() for rows in u.values()
        )) as advance:  # fmt: skip
            for model, by_prompt in units.items():
                # sorted by transcript: consecutive prompts share the longest prefixes, which the embedded model
                # reuses from its KV cache (results are logged as they come; the table keeps plan order)
                groups = sorted(by_prompt.values(), key=lambda g: g[0].prompt.text)
                prompts = [g[0].prompt for g in groups]
                client = factory(model)
                size = chunk_size(client)

                try:
                    for start in range(0, len(prompts), size):
                        chunk = groups[start : start + size]

                        def on_result(i: int, dist: AnswerDistribution, chunk: list[list[PlannedRow]] = chunk) -> None:
                            for row in chunk[i]:
                                log.append(_finish(row.base, model_fields(row.base, dist)))
                            calls[0] += 1
                            advance(len(chunk[i]))

                        client.score_many(prompts[start : start + size], on_result=on_result)
                finally:
                    stats[model] = _stats_dict(client)
                    with contextlib.suppress(Exception):
                        client.close()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        log.close()
    result = _finalise(plan, out, started, n_resumed, n_reused, calls[0], n_unique, stats, interrupted)
    if interrupted:
        raise RunInterrupted(result)
    return result


def chunk_size(client: Any) -> int:
    """Prompts handed to one ``score_many`` call: 32 per call in flight, so that the tail of each chunk (when
    fewer calls than slots are left) costs little; an interrupt cancels the chunk's queued calls."""
    return max(CHUNK_MIN, CHUNK_PER_SLOT * int(getattr(client, "max_concurrency", 1) or 1))


@contextlib.contextmanager
def _progress(enabled: bool, console: Any, total: int, completed: int) -> Any:
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("probes"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("running", total=total, completed=completed)
        yield lambda n: bar.advance(task, n)


def _finalise(
    plan: RunPlan,
    out: Path,
    started: float,
    n_resumed: int,
    n_reused: int,
    n_calls: int,
    n_unique: int,
    stats: dict[str, Any],
    interrupted: bool,
) -> RunResult:
    logged = read_log(out / LOG_FILE)
    rows = [logged[r.key] for r in plan.rows if r.key in logged]
    frame = rows_to_frame(rows)
    write_table(frame, out)
    n_failed = int((~frame["ok"]).sum())
    wall = time.monotonic() - started
    meta = {
        "spec": plan.spec.to_dict(),
        "spec_source": plan.spec.source,
        "split": plan.split.to_dict(),
        "written_at": _now(),
        "rows_planned": plan.n_rows,
        "rows_in_table": len(frame),
        "rows_failed": n_failed,
        "rows_resumed": n_resumed,
        "rows_reused": n_reused,
        "prompts_scored": n_calls,
        "interrupted": interrupted,
        "wall_s": round(wall, 3),
        "client_stats": stats,
        "logged_rows_not_in_spec": len(set(logged) - {r.key for r in plan.rows}),
    }
    tmp = out / (RUN_META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, out / RUN_META)
    return RunResult(
        out_dir=out,
        table=frame,
        n_total=plan.n_rows,
        n_done=len(frame),
        n_failed=n_failed,
        n_resumed=n_resumed,
        n_reused=n_reused,
        n_model_calls=n_calls,
        n_unique_prompts=n_unique,
        wall_s=wall,
        interrupted=interrupted,
        stats=stats,
    )
