"""Runs from the command line: one writer per run folder, failures that end a run, model options (compare and
optimize), tables in pipes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from models_fixtures import loopback  # noqa: F401  (fixture)

from selfalign.cli import cli
from selfalign.runlock import LOCK_FILE, RunLock

REPO = Path(__file__).resolve().parent.parent
LOOP = ["--model", "openai/loopback", "--countries", "NGA", "--limit", "4", "--programs", "zero-shot,self-align-chrf"]


def _compare(*args: str) -> object:
    return CliRunner().invoke(cli, ["compare", *args], catch_exceptions=False)


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_a_second_writer_is_refused_and_changes_nothing(loopback, tmp_path: Path) -> None:  # noqa: F811
    server = loopback()
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time; from selfalign.runlock import RunLock; RunLock({str(out)!r}).acquire(); "
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = _compare(*LOOP, "--api-base", server.api_base, "--out", str(out), "--cache-dir", str(tmp_path / "c"))
        assert result.exit_code == 2
        (line,) = _error_lines(result.output)
        assert f"run folder {out} is in use by another selfalign process (pid {holder.pid})" in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE] and server.request_count == 0
    finally:
        holder.kill()
        holder.wait()
    result = _compare(*LOOP, "--api-base", server.api_base, "--out", str(out), "--cache-dir", str(tmp_path / "c"))
    assert result.exit_code == 0, result.output  # the lock went with its holder
    assert server.request_count == 8


def test_four_processes_on_one_folder_pay_for_each_call_once(loopback, tmp_path: Path) -> None:  # noqa: F811
    server = loopback(delay_s=0.2)
    out, cache = tmp_path / "run", tmp_path / "cache"
    command = [sys.executable, "-m", "selfalign", "compare", *LOOP, "--api-base", server.api_base, "--out", str(out),
               "--cache-dir", str(cache)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)]
    time.sleep(1.5)  # the first one holds the folder while its calls are slow
    procs += [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in "abc"
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2, 2, 2], results
    for code, _, err in results:
        if code == 2:
            assert len(_error_lines(err)) == 1 and "is in use by another selfalign process" in err
            assert "Traceback" not in err
    assert server.request_count == 8  # every distinct prompt once
    assert len((out / "runs.jsonl").read_text().splitlines()) == 8
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_run_whose_every_probe_failed_exits_1(loopback, tmp_path: Path) -> None:  # noqa: F811
    server = loopback(faults=[500] * 50)
    started = time.monotonic()
    result = _compare(*LOOP, "--api-base", server.api_base, "--retries", "0", "--out", str(tmp_path / "run"),
                      "--cache-dir", str(tmp_path / "c"))  # fmt: skip
    assert result.exit_code == 1
    (line,) = _error_lines(result.output)
    assert line.startswith("error: all 8 probes failed (first error:") and "500" in line
    assert server.request_count == 8  # --retries 0: one request a probe
    assert (tmp_path / "run" / "runs.parquet").is_file()  # the table is kept
    assert time.monotonic() - started < 60


def test_timeout_is_the_one_given(loopback, tmp_path: Path) -> None:  # noqa: F811
    server = loopback(faults=["hang"] * 20, hang_s=30)
    started = time.monotonic()
    options = ["--limit", "1", "--programs", "zero-shot", "--api-base", server.api_base, "--timeout", "1"]
    options += ["--retries", "1", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")]
    result = _compare(*LOOP[:4], *options)
    assert result.exit_code == 1 and "probes failed" in result.output
    assert server.request_count == 2  # one try and one retry
    assert time.monotonic() - started < 20  # not the default 60 s x 4 tries


def test_optimize_takes_the_model_options(loopback, tmp_path: Path) -> None:  # noqa: F811
    server = loopback(faults=["hang"] * 4, hang_s=60)
    started = time.monotonic()
    args = ["optimize", "--country", "NGA", "--model", "openai/loopback", "--api-base", server.api_base]
    args += ["--timeout", "1", "--retries", "0", "--budget", "10", "--dev-limit", "10", "--no-test", "--quiet"]
    args += ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert server.request_count == 10  # one request a probe: --retries 0 (the default 3 would retry the 4 hung ones)
    assert time.monotonic() - started < 40  # the hang (60 s) was cut at --timeout 1, not the default 60 s
    saved = tmp_path / "out" / "NGA-loopback-binary"
    assert (saved / "program.json").is_file() and (saved / "meta.json").is_file()
    assert f"--model openai/loopback --api-base {server.api_base}" in result.output  # the compare line reaches it


def test_the_default_compare_includes_value_structure(loopback, tmp_path: Path) -> None:  # noqa: F811
    server = loopback()
    args = ["--model", "openai/loopback", "--api-base", server.api_base, "--limit", "2"]  # default programs
    result = _compare(*args, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c"))
    assert result.exit_code == 0, result.output
    overall = result.output.split("Overall", 1)[1].splitlines()
    shown = [line.split()[0] for line in overall if line.strip().startswith(("zero-shot", "persona", "self-align"))]
    assert sorted(shown) == ["persona", "self-align-chrf", "self-align-concordance", "self-align-random", "zero-shot"]
    copies = [line for line in overall if line.strip().startswith("copying its demos, no model ")]
    assert len(copies) == 3  # a model-free reference under each demonstration program
    assert server.request_count <= 30  # 5 programs x 3 countries x 2 questions, the same prompts asked once


def test_tables_in_a_pipe_keep_every_column(loopback, tmp_path: Path) -> None:  # noqa: F811
    server = loopback()
    programs = "zero-shot,self-align-correlation-no-battery,persona-self-align-chrf"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfalign",
            "compare",
            *LOOP[:6],
            "--programs",
            programs,
            "--api-base",
            server.api_base,
            "--out",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for header in ("agreement % [95% CI]", "JS similarity", "vs zero-shot, pp [95% CI]"):
        assert header in out
    rows = [line for line in out.splitlines() if "self-align-correlation-no-battery" in line]
    assert rows and all("…" not in line for line in out.splitlines())  # nothing cropped
    assert any("[" in line and "]" in line for line in rows)  # the interval is there in full


def test_run_lock_is_reentrant_after_release(tmp_path: Path) -> None:
    lock = RunLock(tmp_path).acquire()
    with pytest.raises(Exception, match="is in use"):
        RunLock(tmp_path).acquire()
    lock.release()
    with RunLock(tmp_path):
        pass


def test_retry_invalid_asks_again_the_probes_whose_cached_answer_was_off_format(loopback, tmp_path: Path) -> None:  # noqa: F811
    from selfalign.models.loopback import Reply, default_policy

    broken = [True]

    def policy(body: dict, i: int) -> Reply:
        return Reply("Hmm", (("Hmm", -0.01),)) if broken[0] else default_policy(body, i)

    server = loopback(policy=policy)
    run = [*LOOP, "--api-base", server.api_base, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")]
    first = _compare(*run)
    assert first.exit_code == 1 and "all 8 probes failed" in first.output and server.request_count == 8
    broken[0] = False  # the server is fixed; the off-format answers are in the cache
    kept = _compare(*run)
    assert kept.exit_code == 1 and server.request_count == 8  # by default the cached answers stand
    fixed = _compare(*run, "--retry-invalid")
    assert fixed.exit_code == 0, fixed.output
    assert server.request_count == 16  # each off-format probe asked once more
    assert _compare(*run).exit_code == 0 and server.request_count == 16  # the new answers replaced the old ones
