"""The run table: one row per probe (:data:`COLUMNS`), its columns from a model's answer, and its files."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from selfalign.errors import SelfAlignError
from selfalign.metrics import probe_metrics
from selfalign.models.types import AnswerDistribution
from selfalign.perturbations import DEFAULTS, PERTURBATION_COLUMNS
from selfalign.survey import Protocol, ScaleKind

TABLE_PARQUET = "runs.parquet"
TABLE_CSV = "runs.csv"

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
    *PERTURBATION_COLUMNS,
    "question_id",
    "topic",
    "scale",
    "option_codes",
    "options_shown",
    "order_shown",
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
"""Columns of the run table. JSON columns: ``program_config``, ``option_codes`` (the survey's order),
``options_shown`` (the label shown for each of those codes, in the same order), ``order_shown`` (the codes in
the order the prompt showed them), ``probs`` and ``country_shares`` (objects code -> value, in the survey's
option order whatever the order shown; binary protocol: ``agree`` and ``disagree``, the country's side shares
renormalised over both sides), ``demo_ids``. ``option_order``, ``answer_words`` and ``template`` are the row's
perturbation (:mod:`selfalign.perturbations`; rows of older runs, without them, were unperturbed). ``k`` is
the k of the grid cell the row is reported under (the program's own k when the grid gives none); ``n_demos``
the number of demonstrations actually shown. ``wasserstein_similarity`` is NaN for nominal questions under the options
protocol and for failed rows; the binary protocol's agree/disagree pair counts as a two-point scale."""


# --- rows ----------------------------------------------------------------------------------------------------


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def model_fields(base: dict[str, Any], dist: AnswerDistribution) -> dict[str, Any]:
    """The model-output and metric columns of a row from its answer distribution."""
    codes: list[str] = json.loads(base["option_codes"])
    shown: list[str] = json.loads(base.get("order_shown") or base["option_codes"])  # dist.probs are in this order
    ok = dist.ok and len(dist.probs) == len(codes) and sorted(shown) == sorted(codes)
    error = dist.error
    if error is None and dist.invalid:
        error = f"invalid answer: {dist.raw_answer!r}" if dist.raw_answer is not None else "invalid answer"
    if error is None and not ok:
        error = f"model returned {len(dist.probs)} probabilities for {len(codes)} options"
    metrics = {"agreement": math.nan, "js_similarity": math.nan, "wasserstein_similarity": math.nan}
    choice = None
    probs: dict[str, float] = {}
    if ok:
        by_code = dict(zip(shown, map(float, dist.probs), strict=True))
        probs = {c: by_code[c] for c in codes}  # metrics work on codes in the survey's order, never on positions
        shares = json.loads(base["country_shares"])
        ordinal = base["protocol"] == Protocol.BINARY.value or base["scale"] == ScaleKind.ORDINAL.value
        try:
            metrics = probe_metrics(list(probs.values()), [shares[c] for c in codes], ordinal)
        except ValueError as exc:
            ok, error = False, f"cannot score: {exc}"
        best = dist.argmax
        choice = shown[best] if best is not None else None
    return {
        "probs": json.dumps(probs) if ok else None,
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


def failed_fields(error: str) -> dict[str, Any]:
    """The model-output and metric columns of a row whose probe failed before any answer."""
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


MODEL_FIELDS: tuple[str, ...] = tuple(failed_fields(""))
"""The columns a model's answer fills (:func:`model_fields`, :func:`failed_fields`); the rest are planned."""


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def finish_row(base: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """A finished row: its planned values, model fields and the time, in :data:`COLUMNS` order."""
    row = {**base, **fields, "finished_at": now()}
    return {c: row.get(c) for c in COLUMNS}


def rows_to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A run table with :data:`COLUMNS` and stable dtypes."""
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    for col in PERTURBATION_COLUMNS:  # rows logged by older runs were unperturbed
        frame[col] = frame[col].astype(object).where(frame[col].notna(), DEFAULTS[col])
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
    tmp_parquet, tmp_csv = unique_tmp(parquet), unique_tmp(csv)
    try:
        frame.to_parquet(tmp_parquet, index=False)
        frame.to_csv(tmp_csv, index=False)
        os.replace(tmp_parquet, parquet)
        os.replace(tmp_csv, csv)
    finally:
        tmp_parquet.unlink(missing_ok=True)
        tmp_csv.unlink(missing_ok=True)
    return parquet, csv


def unique_tmp(path: Path) -> Path:
    """A temporary file name beside ``path`` that no other process uses (``.<name>.<pid>.<random>.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def load_run_table(path: str | Path) -> pd.DataFrame:
    """A stored run table: a run folder (``runs.parquet``, else ``runs.csv``) or a table file.

    Tables written before the perturbation columns existed get them with their unperturbed values, so such a
    table pairs with a newer one in :func:`selfalign.metrics.compare_to_baseline` (concatenated run folders).
    """
    target = Path(path)
    if target.is_dir():
        candidates = [target / TABLE_PARQUET, target / TABLE_CSV]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise SelfAlignError(f"{target}: no {TABLE_PARQUET} or {TABLE_CSV} (run `selfalign eval` first)")
        target = found
    if not target.is_file():
        raise SelfAlignError(f"{target}: no such run table")
    try:
        frame = pd.read_parquet(target) if target.suffix == ".parquet" else pd.read_csv(target)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        kind = "Parquet" if target.suffix == ".parquet" else "CSV"
        message = " ".join(str(exc).split())[:200]
        raise SelfAlignError(f"{target}: not a readable {kind} run table ({type(exc).__name__}: {message})") from None
    missing = [c for c in ("program", "question_id", "ok", "agreement") if c not in frame.columns]
    if missing:
        raise SelfAlignError(f"{target}: not a run table (missing columns {missing})")
    for col in PERTURBATION_COLUMNS:  # tables of older runs lack them: their probes were unperturbed
        if col not in frame.columns:
            frame[col] = DEFAULTS[col]
        elif frame[col].isna().any():
            frame[col] = frame[col].astype(object).where(frame[col].notna(), DEFAULTS[col])
    return frame
