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
  Prompts go to ``ModelClient.score_many`` in chunks (:func:`chunk_size`), in the order of
  ``ModelClient.order`` (by transcript, so that consecutive prompts share prefixes the embedded model can
  reuse; clients without it: by transcript);
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
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from selfalign.errors import SelfAlignError
from selfalign.models.types import AnswerDistribution
from selfalign.plan import PlannedRow, RunPlan, plan_run, render_rows
from selfalign.prompt_store import store_prompts
from selfalign.runlock import RunLock
from selfalign.runlog import LOG_FILE, RunLog, read_log
from selfalign.runtable import (
    MODEL_FIELDS,
    TABLE_PARQUET,
    failed_fields,
    finish_row,
    model_fields,
    now,
    rows_to_frame,
    unique_tmp,
    write_table,
)
from selfalign.specs import ExperimentSpec

RUN_META = "run.json"
CHUNK_MIN = 8
CHUNK_PER_SLOT = 32
_SETTING_FIELDS = ("survey", "protocol", "split", "split_seed", "program_config")


class RunInterrupted(SelfAlignError):
    """A run stopped by Ctrl-C; the table was written and the run can be resumed."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        super().__init__(
            f"interrupted after {result.n_done} of {result.n_total} probes; run the same command again to resume"
        )


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


def default_client_factory(
    cache_dir: str | Path | None = None, concurrency: int | None = None, settings: dict[str, Any] | None = None
) -> ClientFactory:
    """A factory of the shared :class:`selfalign.models.ModelClient` of a model, with an optional cache folder,
    concurrency and other client settings (the client a ``dspy_lm`` with the same settings uses)."""

    def make(model: str) -> Any:
        from selfalign.models.client import shared_client

        given = {k: v for k, v in (settings or {}).items() if v is not None}
        if concurrency is not None:
            given["max_concurrency"] = concurrency
        return shared_client(model, cache_dir=cache_dir, **given)

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


def _stats_since(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What a (shared) client counted during this run: the counters' increase."""
    out: dict[str, Any] = {}
    for name, value in after.items():
        old = before.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and isinstance(old, int | float):
            out[name] = value - old
        else:
            out[name] = value
    return out


def _same_settings(logged: dict[str, Any], base: dict[str, Any]) -> bool:
    return all(str(logged.get(f)) == str(base.get(f)) for f in _SETTING_FIELDS)


def run_spec(
    spec: ExperimentSpec,
    out_dir: str | Path,
    *,
    client_factory: ClientFactory | None = None,
    cache_dir: str | Path | None = None,
    concurrency: int | None = None,
    client_settings: dict[str, Any] | None = None,
    progress: bool = True,
    console: Any = None,
) -> RunResult:
    """Run (or resume) ``spec`` into ``out_dir`` and return the final table (see the module docstring).

    Validates the spec before anything else. ``client_factory(model)`` returns an object with
    ``score_many(prompts, on_result=...)`` (default: the model's shared :class:`selfalign.models.ModelClient`
    with ``cache_dir``, ``concurrency`` and ``client_settings``, e.g. ``api_base``, ``timeout_s``,
    ``max_retries``); prompts go in the order of its ``order(prompts)`` where it has one, else by
    transcript. One process at a time writes a run folder: a second one gets
    :class:`~selfalign.runlock.RunFolderInUse`. Ctrl-C writes the table from the log and raises
    :class:`RunInterrupted`.
    """
    started = time.monotonic()
    out = Path(out_dir)
    plan = plan_run(spec)
    factory = client_factory or default_client_factory(cache_dir, concurrency, client_settings)
    with RunLock(out):
        return _execute(plan, out, factory, started, progress, console)


def _execute(
    plan: RunPlan, out: Path, factory: ClientFactory, started: float, progress: bool, console: Any
) -> RunResult:
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
    # the prompts of the rows about to run, once per prompt_sha256, fsynced before any model call for them
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
                log.append(finish_row(row.base, failed_fields(row.prepare_error or "prompt not built")))
                continue
            sha = row.base["prompt_sha256"]
            previous = answered.get((row.base["model"], sha))
            if previous is not None:
                fields = {f: previous.get(f) for f in MODEL_FIELDS}
                fields.update(cached=True)
                log.append(finish_row(row.base, fields))
                n_reused += 1
                continue
            units.setdefault(row.base["model"], {}).setdefault(sha, []).append(row)
        n_unique = sum(len(u) for u in units.values())
        with _progress(progress, console, plan.n_rows, plan.n_rows - sum(
            len(rows) for u in units.values() for rows in u.values()
        )) as advance:  # fmt: skip
            for model, by_prompt in units.items():
                # in the client's order (by transcript: consecutive prompts share the longest prefixes, which
                # the embedded model reuses from its KV cache); results are logged as they come, the table
                # keeps plan order
                groups = list(by_prompt.values())
                client = factory(model)
                order = getattr(client, "order", None)
                if order is not None:
                    groups = [groups[i] for i in order([g[0].prompt for g in groups])]
                else:
                    groups.sort(key=lambda g: g[0].prompt.text)
                prompts = [g[0].prompt for g in groups]
                before = _stats_dict(client)
                size = chunk_size(client)

                try:
                    for start in range(0, len(prompts), size):
                        chunk = groups[start : start + size]

                        def on_result(i: int, dist: AnswerDistribution, chunk: list[list[PlannedRow]] = chunk) -> None:
                            for row in chunk[i]:
                                log.append(finish_row(row.base, model_fields(row.base, dist)))
                            calls[0] += 1
                            advance(len(chunk[i]))

                        client.score_many(prompts[start : start + size], on_result=on_result)
                finally:
                    stats[model] = _stats_since(before, _stats_dict(client))
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
        "written_at": now(),
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
    tmp = unique_tmp(out / RUN_META)
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
