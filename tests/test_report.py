"""Tests of selfalign.report: reports render from a stored run table alone, numbers match the metrics module,
the HTML is self-contained, and failures are counted but never scored."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from selfalign.metrics import compare_to_baseline, summarize
from selfalign.models.loopback import LoopbackServer, Reply
from selfalign.report import analysis_table, fmt_ci, render_report, summary_frame
from selfalign.runner import run_spec
from selfalign.runtable import TABLE_CSV, TABLE_PARQUET, load_run_table
from selfalign.specs import parse_spec

COUNTRIES = ["NGA", "DEU", "JPN"]


def _policy(body: dict, index: int) -> Reply:
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    p = 0.05 + 0.9 * int.from_bytes(digest[:4], "big") / 2**32
    return Reply("A", (("A", math.log(p)), ("B", math.log(1 - p))))


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small run (3 countries, zero-shot, persona, chrF++ at k 1 and 3 on two countries) against a loopback
    server; only the Parquet run table is kept."""
    base = tmp_path_factory.mktemp("report")
    with LoopbackServer(policy=_policy, faults=[400, 400, 400]) as server:
        config = base / "models.toml"
        config.write_text(f'[models.loop]\nmodel = "openai/loopback"\napi_base = "{server.api_base}"\n')
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SELFALIGN_CONFIG", str(config))
            spec = parse_spec(
                {
                    "name": "report-test",
                    "models": ["loop"],
                    "limit": 8,
                    "grid": [
                        {"programs": ["zero-shot", "persona", "self-align-chrf"], "k": [3], "countries": COUNTRIES},
                        {"programs": ["self-align-chrf"], "k": [1, 3], "countries": ["NGA", "DEU"]},
                    ],
                }
            )  # fmt: skip
            run_spec(spec, base / "run", cache_dir=base / "cache", concurrency=4, progress=False)
    keep = base / "stored"
    keep.mkdir()
    shutil.copy(base / "run" / TABLE_PARQUET, keep / TABLE_PARQUET)
    shutil.rmtree(base / "run")
    shutil.rmtree(base / "cache")
    return keep


def test_report_renders_from_the_stored_table_alone(stored_run: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in stored_run.iterdir()) == [TABLE_PARQUET]
    md_path, html_path = render_report(stored_run, tmp_path / "out")
    md = md_path.read_text(encoding="utf-8")
    for heading in ("## Overall", "## Where it helps", "## Per country", "## Per topic", "## Agreement against k",
                    "## Failed probes", "## Plots"):  # fmt: skip
        assert heading in md
    for png in ("country_gains.png", "topic_heatmap.png", "agreement_vs_k.png"):
        data = (tmp_path / "out" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and f"]({png})" in md
    html = html_path.read_text(encoding="utf-8")
    images = re.findall(r"src='([^']*)'", html)
    assert len(images) == 3 and all(src.startswith("data:image/png;base64,") for src in images)
    assert base64.b64decode(images[0].split(",", 1)[1]).startswith(b"\x89PNG")
    assert "http://" not in html and "https://" not in html and "<link" not in html and "<script" not in html


def test_report_numbers_match_the_metrics_module(stored_run: Path, tmp_path: Path) -> None:
    table = load_run_table(stored_run)
    md_path, _ = render_report(stored_run, tmp_path)
    md = md_path.read_text(encoding="utf-8")
    frame = analysis_table(table)
    overall = summarize(frame.assign(program=frame["variant"]), ["program"])
    for row in overall.to_dict("records"):
        cell = fmt_ci(row["agreement_mean"], row["agreement_ci_low"], row["agreement_ci_high"])
        assert re.search(rf"\| {re.escape(row['program'])} \|.*\| {re.escape(cell)} \|", md), row["program"]
    # zero-shot rows are not repeated per k or demonstration language in the comparison
    assert len(frame[frame["variant"] == "zero-shot"]) == len(table[table["program"] == "zero-shot"])
    diffs = compare_to_baseline(frame.assign(program=frame["variant"]), "zero-shot")
    chrf = diffs.set_index("program").loc["self-align-chrf k=3"]
    assert f"{chrf['mean_diff']:+.1f} [{chrf['ci_low']:+.1f}, {chrf['ci_high']:+.1f}]" in md


def test_failures_are_counted_and_left_out(stored_run: Path) -> None:
    table = load_run_table(stored_run)
    failed = table[~table["ok"]]
    assert len(failed) >= 3 and failed["agreement"].isna().all()
    summary = summary_frame(table, n_boot=200, n_perm=200)
    overall = summary[summary["scope"] == "overall"]
    assert overall["n_failed"].sum() == len(analysis_table(table).query("~ok"))
    for row in overall.to_dict("records"):
        frame = analysis_table(table)
        part = frame[frame["variant"] == row["variant"]]
        assert row["n_ok"] == int(part["ok"].sum())
        assert row["agreement_mean"] == pytest.approx(100 * part.loc[part["ok"], "agreement"].mean())


def test_report_from_csv_and_the_cli(stored_run: Path, tmp_path: Path, cli) -> None:
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    load_run_table(stored_run).to_csv(csv_dir / TABLE_CSV, index=False)
    result = cli("report", str(csv_dir))
    assert result.exit_code == 0, result.output
    assert (csv_dir / "report.md").exists() and (csv_dir / "report.html").exists()
    summary = pd.read_csv(csv_dir / "summary.csv")
    assert {"overall", "country"} == set(summary["scope"])
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = cli("report", str(empty))
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and len(bad.output.strip().splitlines()) == 1
