"""Tests of selfalign.prompt_store: a run folder keeps every prompt as sent (once each, in a valid gzip file that
survives a torn write) and the demonstrations it showed, written by the real runner against a loopback server."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import dspy
import pandas as pd
import pytest

from selfalign.models.loopback import LoopbackServer, Reply
from selfalign.plan import prompt_sha256
from selfalign.programs import Probe, ProgramContext, SelfAlign
from selfalign.prompt_store import (
    PROMPTS_FILE,
    PromptStore,
    ShownDemo,
    StoredPrompt,
    read_prompts,
    shown_demonstrations,
    store_prompts,
)
from selfalign.prompts import Item, ShownDemonstration, render
from selfalign.runner import run_spec
from selfalign.runtable import load_run_table
from selfalign.specs import parse_spec


def _prompt(i: int) -> tuple[str, object, tuple[ShownDemo, ...]]:
    demo = ShownDemonstration(Item(f"Demo statement {i} & <b>", ("agree", "disagree"), "en", True), "agree")
    statement = f'Statement {i}: "</script>" كلمة 中文 \u2028 line separator'
    prompt = render(Item(statement, ("agree", "disagree"), "en", True), demonstrations=[demo])
    return prompt_sha256(prompt), prompt, (ShownDemo(f"Q{i}", demo.item.text, demo.answer),)


def _lines(path: Path) -> list[dict]:
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text[:-1].split("\n")]


def test_prompts_are_stored_once_each_in_a_plain_multi_member_gzip_file(tmp_path: Path) -> None:
    entries = [_prompt(i) for i in range(7)]
    with PromptStore(tmp_path, batch=3) as store:
        for sha, prompt, demos in entries + entries[:4]:  # repeats are not written again
            store.add(sha, prompt, demos)
    assert store.written == 7
    lines = _lines(tmp_path / PROMPTS_FILE)  # the stdlib (like zcat) reads every member
    assert [line["sha256"] for line in lines] == [e[0] for e in entries]
    stored = read_prompts(tmp_path)
    for sha, prompt, demos in entries:
        assert stored[sha] == StoredPrompt(sha, prompt, demos)
        assert prompt_sha256(stored[sha].prompt) == sha
    assert store_prompts(tmp_path, entries) == 0
    assert len(_lines(tmp_path / PROMPTS_FILE)) == 7


def test_nothing_to_store_creates_no_file_and_an_older_run_reads_as_empty(tmp_path: Path) -> None:
    assert store_prompts(tmp_path, []) == 0
    assert not (tmp_path / PROMPTS_FILE).exists()
    assert read_prompts(tmp_path) == {}
    assert read_prompts(tmp_path / "runs.parquet") == {}


def test_a_torn_last_member_is_skipped_then_cut_off_and_its_prompts_written_again(tmp_path: Path) -> None:
    entries = [_prompt(i) for i in range(5)]
    path = tmp_path / PROMPTS_FILE
    with PromptStore(tmp_path, batch=2) as store:
        for entry in entries[:4]:
            store.add(*entry)
        last = path.stat().st_size  # two members written; the fifth prompt goes into a third on close
        store.add(*entries[4])
    whole = path.read_bytes()
    path.write_bytes(whole[: last + (len(whole) - last) // 2])  # a kill in the middle of the last write
    assert set(read_prompts(tmp_path)) == {e[0] for e in entries[:4]}
    with PromptStore(tmp_path) as store:
        assert path.stat().st_size == last  # the torn bytes are gone before anything is appended
        assert len(store) == 4
        for entry in entries:
            store.add(*entry)
    assert [line["sha256"] for line in _lines(path)] == [e[0] for e in entries]


def test_fixed_and_retrieved_demonstrations_are_listed_in_prompt_order(wvs7) -> None:
    program = SelfAlign(strategy="chrf", k=2)
    program.answer.demos = [dspy.Example(question_id="Q1", answer_code="disagree")]
    context = ProgramContext.for_survey(wvs7)
    prepared = program.prepare(Probe("Q164", "NGA"), context)
    shown = shown_demonstrations(prepared)
    assert [d.question_id for d in shown] == ["Q1", *(d.question_id for d in prepared.demonstrations)]
    assert len(shown) == 3 and shown[0].answer == "disagree"
    assert shown[0].text == wvs7.question("Q1").binary.statement("en")
    positions = [prepared.prompt.text.index(f"{d.text}") for d in shown]
    assert positions == sorted(positions)
    for d in shown:
        assert f'{d.text}"\nOptions: agree / disagree\nAnswer: {d.answer}' in prepared.prompt.text


# --- through the runner ----------------------------------------------------------------------------------------


def _policy(body: dict, index: int) -> Reply:
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    p = 0.05 + 0.9 * int.from_bytes(digest[:4], "big") / 2**32
    return Reply("A", (("A", math.log(p)), ("B", math.log(1 - p))))


def _spec(limit: int):
    return parse_spec(
        {
            "name": "store-test",
            "models": ["loop"],
            "limit": limit,
            "languages": ["en", "native"],
            "grid": [{"programs": ["zero-shot", "self-align-chrf"], "k": [1, 3], "countries": ["NGA", "EGY"]}],
        }
    )


@pytest.fixture()
def loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with LoopbackServer(policy=_policy) as server:
        config = tmp_path / "models.toml"
        config.write_text(f'[models.loop]\nmodel = "openai/loopback"\napi_base = "{server.api_base}"\n')
        monkeypatch.setenv("SELFALIGN_CONFIG", str(config))
        yield server


def _check_store(run: Path, table: pd.DataFrame) -> dict[str, StoredPrompt]:
    lines = _lines(run / PROMPTS_FILE)
    assert len(lines) == len({line["sha256"] for line in lines}), "a prompt was stored twice"
    stored = read_prompts(run)
    assert set(table["prompt_sha256"]) <= set(stored), "a row's prompt is missing"
    for row in table.to_dict("records"):
        entry = stored[row["prompt_sha256"]]
        assert prompt_sha256(entry.prompt) == row["prompt_sha256"]  # stored exactly as hashed, i.e. as sent
        assert [d.question_id for d in entry.demonstrations] == json.loads(row["demo_ids"])
        assert list(entry.prompt.options) == json.loads(row["options_shown"])
        text = entry.prompt.text
        for demo in entry.demonstrations:  # the statement, then (in this language's words) the answer shown
            assert text.index(demo.answer, text.index(demo.text)) > text.index(demo.text)
    return stored


def test_a_run_stores_its_prompts_as_sent_and_a_resumed_run_neither_duplicates_nor_loses_any(
    tmp_path: Path, loop: LoopbackServer
) -> None:
    loop.faults = [400] * 4  # four prompts fail for good (rows sharing them too): retried, re-rendered on resume
    run = tmp_path / "run"
    first = run_spec(_spec(3), run, cache_dir=tmp_path / "cache", concurrency=2, progress=False)
    assert first.n_failed >= 4
    stored = _check_store(run, first.table)
    sent = {json.dumps(body["messages"], sort_keys=True) for body in loop.requests}
    assert sent == {json.dumps([dict(m) for m in s.prompt.messages], sort_keys=True) for s in stored.values()}
    assert any(any("\u0600" <= ch <= "\u06ff" for ch in s.prompt.text) for s in stored.values())  # Egypt, Arabic
    assert any(not s.demonstrations for s in stored.values()) and any(s.demonstrations for s in stored.values())

    path = run / PROMPTS_FILE
    size = path.stat().st_size
    torn = gzip.compress(b'{"sha256": "not-finished", "text": "')
    path.write_bytes(path.read_bytes() + torn[: len(torn) // 2])  # as if a later run was killed mid-write
    resumed = run_spec(_spec(5), run, cache_dir=tmp_path / "cache", concurrency=2, progress=False)
    assert resumed.n_failed == 0 and resumed.n_resumed == len(first.table) - first.n_failed
    assert len(resumed.table) > len(first.table)
    again = _check_store(run, load_run_table(run))
    assert set(stored) <= set(again) and "not-finished" not in again and path.stat().st_size > size
