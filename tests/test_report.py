"""Tests of selfalign.report: reports render from a stored run table alone, numbers match the metrics module,
the HTML is self-contained, failures are counted but never scored, and the per-probe view carries every row
(the browser side is tested in test_report_browser.py)."""

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
from report_fixtures import TRICKY, synthetic_run

from selfalign.metrics import compare_to_baseline, summarize
from selfalign.models.loopback import LoopbackServer, Reply
from selfalign.perturbations import DEFAULTS, PERTURBATION_COLUMNS
from selfalign.probe_view import NOT_STORED, decode_payload, probe_payload
from selfalign.prompt_store import PROMPTS_FILE, read_prompts, store_prompts
from selfalign.report import analysis_table, build_report, fmt_ci, render_report, summary_frame, to_html
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
    server; only the Parquet run table is kept (as in a run folder written before prompts were stored). A copy
    with the stored prompts is kept beside it, in ``../with-prompts``."""
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
    (base / "with-prompts").mkdir()
    for name in (TABLE_PARQUET, PROMPTS_FILE):
        shutil.copy(base / "run" / name, base / "with-prompts" / name)
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
    assert "http://" not in html and "https://" not in html and "<link" not in html
    scripts = re.findall(r"<script([^>]*)>", html)  # the probe data and the inline script, nothing fetched
    assert scripts == [' type="application/octet-stream" id="pv-data"', ""]


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


def _payload(html: str) -> dict:
    match = re.search(r'<script type="application/octet-stream" id="pv-data">([^<]*)</script>', html)
    assert match, "no probe data in the page"
    return decode_payload(match.group(1))


def _column(payload: dict, name: str) -> list:
    col = payload["cols"][name]
    if isinstance(col, list):
        return col
    return [None if i < 0 else col["values"][i] for i in col["idx"]]


def test_the_probe_view_carries_every_row_and_its_prompt(stored_run: Path, tmp_path: Path) -> None:
    run = stored_run.parent / "with-prompts"
    table = load_run_table(run)
    stored = read_prompts(run)
    _, html_path = render_report(run, tmp_path)
    payload = _payload(html_path.read_text(encoding="utf-8"))
    assert payload["n"] == len(table) and payload["prompts_stored"]
    assert len(payload["prompts"]) == table["prompt_sha256"].nunique() == len(stored)
    for name in ("country", "program", "question_id", "topic", "method", "model_choice", "country_majority"):
        expected = [None if pd.isna(v) else v for v in table[name]]
        assert _column(payload, name) == expected, name
    assert _column(payload, "ok") == [int(v) for v in table["ok"]]
    for i, row in enumerate(table.to_dict("records")):
        codes = json.loads(row["option_codes"])
        assert _column(payload, "option_codes")[i] == codes
        shares = json.loads(row["country_shares"])
        assert _column(payload, "country_shares")[i] == [round(shares[c], 4) for c in codes]
        if row["ok"]:
            probs = json.loads(row["probs"])
            assert payload["cols"]["probs"][i] == [round(probs[c], 4) for c in codes]
        else:
            assert payload["cols"]["probs"][i] is None and _column(payload, "error")[i] == row["error"]
        text, continuations, messages, labels, options, demos = payload["prompts"][payload["prompt"][i]]
        entry = stored[row["prompt_sha256"]]
        assert text == entry.prompt.text and tuple(continuations) == entry.prompt.continuations
        assert [dict(role=r, content=c) for r, c in messages] == list(entry.prompt.messages)
        assert tuple(labels) == entry.prompt.labels and tuple(options) == entry.prompt.options
        assert [d[0] for d in demos] == json.loads(row["demo_ids"])


def test_a_run_folder_without_stored_prompts_still_renders(stored_run: Path, tmp_path: Path) -> None:
    table = load_run_table(stored_run)
    _, html_path = render_report(stored_run, tmp_path)
    html = html_path.read_text(encoding="utf-8")
    assert NOT_STORED in html
    payload = _payload(html)
    assert payload["n"] == len(table) and not payload["prompts_stored"] and payload["prompts"] == []
    assert set(payload["prompt"]) == {-1} and payload["not_stored"] == NOT_STORED
    assert _column(payload, "demo_ids")[-1] == json.loads(table["demo_ids"].iloc[-1])  # ids still listed


@pytest.mark.slow
def test_the_report_of_a_25000_row_run_stays_under_20_mb(tmp_path: Path) -> None:
    table, prompts = synthetic_run(25_000, 7_800)
    assert 550 <= sum(len(p.prompt.text) for p in prompts.values()) / len(prompts) <= 750
    store_prompts(tmp_path, ((sha, p.prompt, p.demonstrations) for sha, p in prompts.items()))
    # what render_report does, with fewer bootstrap draws (the intervals' cost, not the page's, dominates)
    report = build_report(table, n_boot=50, n_perm=50)
    html = to_html(report, probe_payload(table, read_prompts(tmp_path)))
    size = len(html.encode("utf-8"))
    print(f"report.html for 25,000 rows and 7,800 prompts: {size / 1e6:.2f} MB")
    assert size < 20e6
    assert len(report.figures) >= 2 and len(re.findall("<img", html)) == len(report.figures)
    payload = _payload(html)
    assert payload["n"] == 25_000 and len(payload["prompts"]) == 7_800
    # no text of the data can end a script element: prompts travel compressed and base64-encoded
    assert TRICKY not in html and html.count("</script>") == 2
    assert any(TRICKY in p[0] for p in payload["prompts"])


def test_distributions_keep_the_option_order_whatever_the_codes() -> None:
    # JavaScript objects put integer-like keys first, in numeric order: the view gets lists in option order
    codes = ["10", "2", "-1"]
    row = {
        "country": "NGA",
        "program": "zero-shot",
        "ok": True,
        "option_codes": json.dumps(codes),
        "probs": json.dumps({"10": 0.5, "2": 0.3, "-1": 0.2}),
        "country_shares": json.dumps({"10": 0.1, "2": 0.6, "-1": 0.3}),
        "prompt_sha256": None,
    }
    failed = {**row, "ok": False, "probs": None, "error": "model error: 'quoted' <b>"}
    payload = probe_payload(pd.DataFrame([row, failed]), {})
    assert payload["cols"]["probs"] == [[0.5, 0.3, 0.2], None]
    assert _column(payload, "country_shares") == [[0.1, 0.6, 0.3]] * 2
    assert _column(payload, "error") == [None, "model error: 'quoted' <b>"] and payload["prompt"] == [-1, -1]
    assert _column(payload, "k") == [None, None]  # a column the table lacks is empty, not an error


def test_a_table_from_before_the_perturbation_columns_pairs_with_a_newer_one(stored_run: Path, tmp_path: Path) -> None:
    table = load_run_table(stored_run)
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    old = table[table["program"] == "zero-shot"].drop(columns=list(PERTURBATION_COLUMNS))
    old.to_parquet(old_dir / TABLE_PARQUET, index=False)
    loaded = load_run_table(old_dir)
    assert {c: set(loaded[c]) for c in PERTURBATION_COLUMNS} == {c: {DEFAULTS[c]} for c in PERTURBATION_COLUMNS}
    new = table[table["program"] == "self-align-chrf"]
    both = pd.concat([loaded, new], ignore_index=True)
    result = compare_to_baseline(both, "zero-shot").iloc[0]
    expected = compare_to_baseline(table[table["program"].isin(["zero-shot", "self-align-chrf"])], "zero-shot")
    assert result["n_pairs"] == expected.iloc[0]["n_pairs"] > 0
    assert result["mean_diff"] == pytest.approx(expected.iloc[0]["mean_diff"])
