"""Tests of selfalign.runner and the compare/eval CLI against a real OpenAI-compatible server on 127.0.0.1.

The loopback server (selfalign.models.loopback) answers every chat request with log-probabilities for the
labels A and B derived from a hash of the messages, so answers differ between prompts and are reproducible;
it counts and records every request, which is how these tests prove what was (not) called.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from selfalign.metrics import probe_metrics, summarize
from selfalign.models import routes
from selfalign.models.loopback import LoopbackServer, Reply
from selfalign.plan import plan_run, render_rows, row_key
from selfalign.runlog import LOG_FILE, read_log
from selfalign.runner import run_spec
from selfalign.runtable import load_run_table
from selfalign.specs import load_spec

ALIAS = "loop"
CLI = [sys.executable, "-c", "from selfalign.cli import main; main()"]


def hashed_policy(body: dict, index: int) -> Reply:
    """P(A) from a hash of the messages: reproducible, different between prompts, never a tie."""
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    p = 0.05 + 0.9 * int.from_bytes(digest[:4], "big") / 2**32
    return Reply("A" if p >= 0.5 else "B", (("A", math.log(p)), ("B", math.log(1 - p))))


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """A loopback server, with a route registry of the test's own so that shared clients bound to another
    test's server (the alias ``loop`` is used by several test files) never answer here."""
    monkeypatch.setattr(routes, "_routes", {})
    with LoopbackServer(policy=hashed_policy) as srv:
        yield srv


@pytest.fixture()
def env(tmp_path: Path, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A models config with the alias ``loop`` for the server, set for this process and its children."""
    config = tmp_path / "models.toml"
    config.write_text(
        f'[models.{ALIAS}]\nmodel = "openai/loopback"\napi_base = "{server.api_base}"\nsupports_logprobs = true\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("SELFALIGN_CONFIG", str(config))
    monkeypatch.setenv("SELFALIGN_CACHE_DIR", str(tmp_path / "cache"))
    return {**os.environ, "SELFALIGN_CONFIG": str(config), "SELFALIGN_CACHE_DIR": str(tmp_path / "cache")}


def write_spec(path: Path, *, countries: str = '["NGA", "DEU"]', limit: int = 20, programs: str | None = None) -> Path:
    programs = programs or '["zero-shot", "persona", "self-align-chrf"]'
    path.write_text(
        f'name = "loop-test"\nmodels = ["{ALIAS}"]\nlimit = {limit}\n\n'
        f"[[grid]]\nprograms = {programs}\nk = [5]\ncountries = {countries}\n",
        encoding="utf-8",
    )
    return path


def prompt_index(spec_path: Path) -> tuple[dict[str, str], set[str]]:
    """Map the JSON of each planned prompt's chat messages to its prompt hash; and every row key."""
    plan = plan_run(load_spec(spec_path))
    render_rows(plan, plan.rows)
    by_messages = {json.dumps(list(r.prompt.messages), sort_keys=True): r.base["prompt_sha256"] for r in plan.rows}
    return by_messages, {r.key for r in plan.rows}


def requested(server: LoopbackServer, start: int, by_messages: dict[str, str]) -> list[str]:
    return [by_messages[json.dumps(body["messages"], sort_keys=True)] for body in server.requests[start:]]


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and sum(1 for _ in path.open(encoding="utf-8")) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early (rc {proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} rows logged after {timeout} s")


def test_killed_run_resumes_with_no_duplicate_no_missing_row_and_no_repeated_call(tmp_path, server, env) -> None:
    spec = write_spec(tmp_path / "spec.toml")
    by_messages, keys = prompt_index(spec)
    unique = set(by_messages.values())
    out = tmp_path / "run"
    args = [*CLI, "eval", str(spec), "--out", str(out), "--concurrency", "2"]
    server.delay_s = 0.1  # slow enough that the kill lands mid-run even on a loaded machine
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lines(out / LOG_FILE, 25, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first_calls = server.request_count
    logged = read_log(out / LOG_FILE)
    assert 25 <= len(logged) < len(keys), "the kill should land mid-run"
    logged_prompts = {row["prompt_sha256"] for row in logged.values()}
    assert not (out / "runs.parquet").exists()

    server.delay_s = 0.0
    resumed = run_spec(load_spec(spec), out, concurrency=2, progress=False)  # the same run, resumed in-process
    assert resumed.n_resumed == sum(1 for row in logged.values() if row["ok"])
    second = requested(server, first_calls, by_messages)
    assert not set(second) & logged_prompts, "a prompt answered before the kill was sent again"
    assert len(second) == len(set(second)) <= len(unique - logged_prompts)
    assert set(second) | logged_prompts == unique

    table = load_run_table(out)
    table_keys = [row_key({**r, "k": int(r["k"]), "seed": int(r["seed"])}) for r in table.to_dict("records")]
    assert len(table_keys) == len(set(table_keys)) == len(keys)
    assert set(table_keys) == keys
    assert table["ok"].all()
    for row in logged.values():  # rows from before the kill are kept as they were
        match = table[(table["question_id"] == row["question_id"]) & (table["program"] == row["program"])
                      & (table["country"] == row["country"])]  # fmt: skip
        assert json.loads(match["probs"].iloc[0]) == json.loads(row["probs"])

    before = server.request_count
    again = run_spec(load_spec(spec), out, progress=False)
    assert server.request_count == before and again.n_resumed == len(keys)  # everything done: no call at all
    pd.testing.assert_frame_equal(again.table, table)


def test_ctrl_c_writes_the_table_and_exits_130(tmp_path, server, env) -> None:
    spec = write_spec(tmp_path / "spec.toml", limit=30)
    out = tmp_path / "run"
    server.delay_s = 0.05
    proc = subprocess.Popen(
        [*CLI, "eval", str(spec), "--out", str(out), "--concurrency", "1"],
        env={**env, "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # a shell without job control starts background commands with SIGINT ignored, and the child would
        # inherit that (the test suite run as `make test &`): give it the default, as a terminal's Ctrl-C finds it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for_lines(out / LOG_FILE, 10, proc)
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's traceback goes to stderr
        _, stderr = proc.communicate(timeout=30)
        raise AssertionError(f"no exit 60 s after SIGINT:\n{stderr}") from None
    assert proc.returncode == 130, stderr
    table = load_run_table(out)
    _, keys = prompt_index(spec)
    assert 10 <= len(table) < len(keys)
    line = stderr.strip().splitlines()[-1]
    assert line == f"interrupted after {len(table)} of {len(keys)} probes; run the same command again to resume"


def test_identical_prompts_are_scored_once_and_rows_recompute_their_metrics(tmp_path, server, env) -> None:
    spec = load_spec(write_spec(tmp_path / "spec.toml", limit=6))
    spec = type(spec)(**{**spec.__dict__, "grids": (spec.grids[0].__class__(
        programs=("zero-shot", "self-align-chrf"), countries=("NGA", "DEU", "JPN"), k=(1, 5)),)})  # fmt: skip
    result = run_spec(spec, tmp_path / "run", progress=False)
    table = result.table
    assert len(table) == 2 * 3 * 2 * 6  # one row per grid cell
    assert server.request_count == table["prompt_sha256"].nunique() == result.n_model_calls
    zero = table[table["program"] == "zero-shot"]
    assert zero["prompt_sha256"].nunique() == 6  # not per k, not per country
    assert (zero.groupby("question_id")["probs"].nunique() == 1).all()
    for row in table.to_dict("records"):
        codes = json.loads(row["option_codes"])
        probs, shares = json.loads(row["probs"]), json.loads(row["country_shares"])
        assert list(probs) == list(shares) == codes == ["agree", "disagree"]
        expected = probe_metrics([probs[c] for c in codes], [shares[c] for c in codes], ordinal=True)
        assert row["agreement"] == expected["agreement"]
        assert row["js_similarity"] == pytest.approx(expected["js_similarity"])
        assert row["model_choice"] == max(codes, key=lambda c: probs[c])
    text = (tmp_path / "run" / "runs.csv").read_text(encoding="utf-8")
    assert "api_key" not in text and "no-key" not in text


def test_failed_probes_are_counted_and_excluded_from_metrics(tmp_path, server, env) -> None:
    server.faults = [400] * 7  # not retried: the first 7 calls fail for good
    spec = load_spec(write_spec(tmp_path / "spec.toml", countries='["NGA"]', limit=10))
    result = run_spec(spec, tmp_path / "run", concurrency=1, progress=False)
    table = result.table
    failed = table[~table["ok"]]
    assert len(failed) >= 7 and result.n_failed == len(failed)
    assert failed["error"].str.contains("400").all()
    assert failed[["agreement", "js_similarity", "wasserstein_similarity"]].isna().all().all()
    summary = summarize(table, ["program"])
    for row in summary.to_dict("records"):
        part = table[table["program"] == row["program"]]
        assert row["n_failed"] == int((~part["ok"]).sum())
        assert row["agreement_mean"] == pytest.approx(100 * part.loc[part["ok"], "agreement"].mean())
    # the next run retries the failed rows (the server answers now) and replaces them
    calls = server.request_count
    again = run_spec(spec, tmp_path / "run", concurrency=1, progress=False)
    assert again.n_failed == 0 and again.table["ok"].all()
    assert server.request_count - calls == failed["prompt_sha256"].nunique()
    assert len(again.table) == len(table)


def test_a_line_cut_short_by_a_kill_is_ignored_and_redone(tmp_path, server, env) -> None:
    spec = load_spec(write_spec(tmp_path / "spec.toml", countries='["NGA"]', limit=5))
    run_spec(spec, tmp_path / "run", progress=False)
    log = tmp_path / "run" / LOG_FILE
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    log.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2], encoding="utf-8")
    result = run_spec(spec, tmp_path / "run", progress=False)
    assert len(result.table) == len(lines) and result.table["ok"].all()
    assert result.n_resumed == len(lines) - 1
    assert all(json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()[len(lines) :])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--programs", "zero-shot,self-align-chrff"], "unknown program 'self-align-chrff'"),
        (["--countries", "NGA,Germny"], "unknown country 'Germny'"),
        (["--lang", "xx"], "unknown language 'xx'"),
        (["--model", "selfalign/gemma-2b"], "unknown model 'selfalign/gemma-2b'"),
        (["--protocol", "both"], "unknown protocol 'both'"),
    ],
)
def test_bad_flags_exit_2_with_one_line_and_no_model_call(cli, tmp_path, server, env, args, expected) -> None:
    base = ["compare", "--model", ALIAS, "--out", str(tmp_path / "run")]
    result = cli(*base, *args) if "--model" not in args else cli("compare", "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}")
    assert server.request_count == 0 and not (tmp_path / "run").exists()


def test_bad_spec_exits_2_with_no_model_call(cli, tmp_path, server, env) -> None:
    spec = write_spec(tmp_path / "spec.toml", countries='["NGA", "Atlantis"]')
    result = cli("eval", str(spec), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: unknown country 'Atlantis'")
    assert len(result.output.strip().splitlines()) == 1
    assert server.request_count == 0


def test_compare_prints_tables_and_writes_the_summary(cli, tmp_path, server, env) -> None:
    out = tmp_path / "cmp"
    result = cli(
        "compare", "--model", ALIAS, "--countries", "NGA,JPN", "--programs", "zero-shot,persona,self-align-topic",
        "--limit", "8", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Overall" in result.output and "NGA" in result.output and "JPN" in result.output
    summary = pd.read_csv(out / "summary.csv")
    overall = summary[summary["scope"] == "overall"].set_index("variant")
    assert set(overall.index) == {"zero-shot", "persona", "self-align-topic k=5"}
    assert overall.loc["persona", "n_probes"] == 16 and math.isnan(overall.loc["zero-shot", "diff_vs_zero_shot"])
    assert str(out / "summary.csv") in result.output
    table = load_run_table(out)
    for variant, row in overall.iterrows():
        program = variant.split(" k=")[0]
        ok = table[(table["program"] == program) & table["ok"]]
        assert row["agreement_mean"] == pytest.approx(100 * ok["agreement"].mean())
