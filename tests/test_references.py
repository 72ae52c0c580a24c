"""Model-free references: the copying rules on hand-made cases, their summaries, and the compare table/report."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest

from selfalign.errors import SelfAlignError
from selfalign.metrics import bootstrap_ci, paired_difference
from selfalign.references import (
    COPY_SUMMARY,
    Copy,
    add_copy_columns,
    copy_binary,
    copy_options,
    shown_answers,
    summarize_copying,
)
from selfalign.survey import BinarySplit, CountryAnswers, Option, Question, ScaleKind, Survey


def ordinal(qid: str, n: int, *, binary: bool = True) -> Question:
    options = tuple(Option(str(i + 1), {"en": f"level {i + 1} of {n}"}) for i in range(n))
    split = BinarySplit({"en": f"{qid} holds."}, ("1",), tuple(str(i + 1) for i in range(1, n))) if binary else None
    return Question(qid, "T", ScaleKind.ORDINAL, options, {"en": f"{qid}?"}, binary=split)


def nominal(qid: str, labels: tuple[str, ...]) -> Question:
    options = tuple(Option(str(i + 1), {"en": label}) for i, label in enumerate(labels))
    return Question(qid, "T", ScaleKind.NOMINAL, options, {"en": f"{qid}?"})


def one_hot(question: Question, code: str, rest: float = 0.0) -> dict[str, float]:
    """Shares with ``1 - rest`` on ``code`` and ``rest`` spread over the other options."""
    others = [c for c in question.option_codes if c != code]
    return {c: (1 - rest) if c == code else rest / len(others) for c in question.option_codes}


@pytest.fixture(scope="module")
def hand() -> Survey:
    """T4 (ordinal, 4 options), O2/O3/O5 (ordinal), Y1/Y2 (Yes/No), AB (A/B); DEU answers each one way."""
    questions = [
        ordinal("T4", 4),
        ordinal("O2", 2),
        ordinal("O3", 3),
        ordinal("O5", 5),
        nominal("Y1", ("Yes", "No")),
        nominal("Y2", ("Yes", "No")),
        nominal("AB", ("A", "B")),
    ]
    by_id = {q.id: q for q in questions}
    majority = {"T4": "2", "O2": "1", "O3": "3", "O5": "1", "Y1": "2", "Y2": "1", "AB": "1"}
    answers = [CountryAnswers("DEU", qid, one_hot(by_id[qid], code, 0.3)) for qid, code in majority.items()]
    return Survey.build("hand", questions, answers)


# --- binary ---------------------------------------------------------------------------------------------------


def test_binary_copier_majority_tie_and_empty() -> None:
    assert copy_binary(["agree", "disagree", "agree"]) == Copy("agree", ("agree", "disagree"), (2 / 3, 1 / 3))
    assert copy_binary(["agree", "disagree"]).choice == "disagree"  # a tie: the one nearest the test question
    assert copy_binary(["disagree", "agree", "agree", "disagree"]).choice == "disagree"
    assert copy_binary(["disagree", "agree", "disagree", "agree"]).choice == "agree"
    assert copy_binary(["agree", None, None]).choice == "agree"  # what cannot be copied abstains
    empty = copy_binary([])
    assert empty.choice is None and empty.probs == (0.5, 0.5)


def test_copy_scores_with_the_projects_metrics() -> None:
    agree = copy_binary(["agree", "agree", "disagree"])
    assert agree.score([0.4, 0.6])[0] == 0.0
    assert agree.score([0.5, 0.5])[0] == 1.0  # a tie in the country's shares makes either side right
    assert agree.score([2 / 3, 1 / 3]) == (1.0, pytest.approx(1.0))
    assert copy_binary([]).score([0.3, 0.7])[0] == 0.5  # the uniform guess scores chance


# --- options ----------------------------------------------------------------------------------------------------


def test_ordinal_copier_maps_the_mean_position_to_the_nearest_option(hand: Survey) -> None:
    t4 = hand.question("T4")
    # positions 1.0 (O3 "3") and 0.0 (O5 "1"): mean 0.5, exactly between options 2 and 3 of T4
    copied = copy_options(hand, t4, [("O3", "3"), ("O5", "1")])
    assert copied.choice == "2"  # the nearer to the last ordinal demonstration (position 0)
    assert copied.probs == (0.5, 0.0, 0.0, 0.5)
    assert copy_options(hand, t4, [("O5", "1"), ("O3", "3")]).choice == "3"
    # O5 "3" is position 0.5: its vote is split between options 2 and 3, the answer is the earlier one
    middle = copy_options(hand, t4, [("O5", "3")])
    assert middle.choice == "2" and middle.probs == (0.0, 0.5, 0.5, 0.0)
    # mean of 1.0 (O2 "2") and 0.75 (O5 "4") and 0.5 (O3 "2"): 0.75, nearest T4 position 2/3 (option 3)
    assert copy_options(hand, t4, [("O2", "2"), ("O5", "4"), ("O3", "2")]).choice == "3"
    # nominal demonstrations abstain; nothing to copy: the uniform guess
    abstain = copy_options(hand, t4, [("Y1", "1"), ("AB", "2"), ("O3", None)])
    assert abstain.choice is None and abstain.probs == (0.25,) * 4


def test_nominal_copier_votes_by_option_within_the_same_option_set(hand: Survey) -> None:
    y1 = hand.question("Y1")
    copied = copy_options(hand, y1, [("Y2", "1"), ("AB", "1"), ("Y2", "2")])
    assert copied.choice == "2" and copied.probs == (0.5, 0.5)  # AB abstains; the tie goes to the last shown
    assert copy_options(hand, y1, [("Y2", "2"), ("Y2", "1"), ("AB", "2")]).choice == "1"
    assert copy_options(hand, y1, [("Y2", "1"), ("Y2", "1"), ("Y2", "2")]).probs == (2 / 3, 1 / 3)
    assert copy_options(hand, y1, [("AB", "1"), ("O3", "1")]).choice is None


def test_shown_answers_follow_the_answer_form_and_fixed_demonstrations(hand: Survey) -> None:
    ids = ["O3", "Y2", "T4"]
    assert shown_answers(hand, "DEU", "options", ids) == [("O3", "3"), ("Y2", "1"), ("T4", "2")]
    assert shown_answers(hand, "DEU", "options", ids, answer_form="distribution")[0] == ("O3", "3")
    assert [code for _, code in shown_answers(hand, "DEU", "options", ids, answer_form="side")] == [None] * 3
    # binary: the majority side (O3's "3" is on the disagree side; Y2 has no statement)
    assert shown_answers(hand, "DEU", "binary", ["O3", "O2", "Y2"]) == [
        ("O3", "disagree"),
        ("O2", "agree"),
        ("Y2", None),
    ]
    fixed = {"O3": "1", "O2": "disagree"}
    assert shown_answers(hand, "DEU", "options", ["O3"], fixed=fixed) == [("O3", "1")]
    assert shown_answers(hand, "DEU", "binary", ["O3", "O2"], fixed=fixed) == [("O3", "disagree"), ("O2", "disagree")]


# --- run tables ---------------------------------------------------------------------------------------------------


def _row(hand: Survey, program: str, protocol: str, qid: str, demo_ids: list[str], **extra: object) -> dict:
    question = hand.question(qid)
    answers = hand.distribution("DEU", qid)
    if protocol == "binary":
        codes = ["agree", "disagree"]
        assert question.binary is not None
        shares = dict(zip(codes, answers.side_shares(question.binary), strict=True))
    else:
        codes = list(question.option_codes)
        shares = {c: answers.share(c) for c in codes}
    row = {
        "program": program,
        "country": "DEU",
        "question_id": qid,
        "protocol": protocol,
        "demo_ids": json.dumps(demo_ids),
        "option_codes": json.dumps(codes),
        "country_shares": json.dumps(shares),
        "program_config": json.dumps({"parts": [{"part": "demonstrations", "answer_form": "majority"}]}),
        "ok": True,
        "agreement": 1.0,
    }
    row.update(extra)
    return row


def test_copy_columns_on_a_run_table(hand: Survey) -> None:
    fixed = json.dumps({"parts": [], "fixed_demos": [{"question_id": "O5", "answer_code": "5"}]})
    table = pd.DataFrame(
        [
            _row(hand, "zero-shot", "options", "T4", []),
            _row(hand, "a", "options", "T4", ["O3", "O5"]),  # positions 1, 0: option 2 (DEU's majority)
            _row(hand, "a", "options", "T4", ["O5", "O3"]),  # option 3
            _row(hand, "fixed", "options", "T4", ["O3", "O5"], program_config=fixed),  # O5 shows "5": option 4
            _row(hand, "b", "binary", "T4", ["O3", "O2", "O5"]),  # disagree, agree, agree: agree
            _row(hand, "b", "binary", "O3", ["T4"]),  # T4's side: disagree (DEU's is too)
        ]
    )
    out = add_copy_columns(table, hand)
    assert list(out["copy_choice"]) == ["", "2", "3", "4", "agree", "disagree"]
    assert math.isnan(out["copy_agreement"].iloc[0]) and math.isnan(out["copy_js_similarity"].iloc[0])
    assert list(out["copy_agreement"].iloc[1:]) == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert 0 < out["copy_js_similarity"].iloc[1] < 1
    with pytest.raises(SelfAlignError, match="option codes"):
        add_copy_columns(table.assign(option_codes=json.dumps(["1", "2"])).iloc[[1]], hand)


def test_summarize_copying_uses_the_projects_intervals_on_ok_rows(hand: Survey) -> None:
    rng = np.random.default_rng(5)
    rows = []
    for n in range(40):
        qid = ("T4", "O3", "O5", "O2")[n % 4]
        demos = [q for q in ("O3", "O5", "O2", "T4") if q != qid][: 1 + n % 3]
        rows.append(_row(hand, "p", "options", qid, demos, agreement=float(rng.integers(0, 2)), ok=n % 9 != 4))
    rows.append(_row(hand, "zero-shot", "options", "T4", []))
    table = add_copy_columns(pd.DataFrame(rows), hand)
    summary = summarize_copying(table, ["program"], n_boot=300, n_perm=300).set_index("program")
    assert list(summary.columns) == list(COPY_SUMMARY)
    good = table[(table["program"] == "p") & table["ok"]]
    mean, lo, hi = bootstrap_ci(good["copy_agreement"] * 100, good["question_id"], n_boot=300)
    assert summary.loc["p", "copy_n"] == len(good) == 36
    assert summary.loc["p", ["copy_agreement_mean", "copy_agreement_ci_low", "copy_agreement_ci_high"]].tolist() == [
        mean,
        lo,
        hi,
    ]
    diff = paired_difference(good["agreement"] * 100, good["copy_agreement"] * 100, good["question_id"], n_boot=300,
                             n_perm=300)  # fmt: skip
    assert summary.loc["p", "model_vs_copy"] == pytest.approx(diff.mean_diff)
    assert summary.loc["p", "model_vs_copy_p"] == diff.p_value
    assert summary.loc["zero-shot", "copy_n"] == 0 and math.isnan(summary.loc["zero-shot", "copy_agreement_mean"])
    with pytest.raises(SelfAlignError, match="need the survey"):
        summarize_copying(pd.DataFrame(rows), ["program"])


# --- the compare table and the report ------------------------------------------------------------------------


def _policy(body: dict, index: int):
    from selfalign.models.loopback import Reply

    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    p = 0.05 + 0.9 * int.from_bytes(digest[:4], "big") / 2**32
    return Reply("A", (("A", math.log(p)), ("B", math.log(1 - p))))


def test_compare_table_and_report_show_copying_the_demonstrations(tmp_path, monkeypatch, cli, wvs7) -> None:
    from selfalign.models.loopback import LoopbackServer
    from selfalign.runtable import load_run_table

    out = tmp_path / "run"
    with LoopbackServer(policy=_policy) as server:
        config = tmp_path / "models.toml"
        config.write_text(f'[models.loop]\nmodel = "openai/loopback"\napi_base = "{server.api_base}"\n')
        monkeypatch.setenv("SELFALIGN_CONFIG", str(config))
        result = cli("compare", "--model", "loop", "--countries", "NGA,DEU", "--limit", "6",
                     "--programs", "zero-shot,self-align-chrf,self-align-correlation-no-battery",
                     "--out", str(out), "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert result.exit_code == 0, result.output
    overall_table = result.output[result.output.rindex("Overall") :].splitlines()
    summary = pd.read_csv(out / "summary.csv")
    overall = summary[summary["scope"] == "overall"].set_index("variant")
    assert math.isnan(overall.loc["zero-shot", "copy_agreement_mean"])
    assert (
        not overall_table[next(i for i, x in enumerate(overall_table) if "zero-shot" in x) + 1]
        .strip()
        .startswith("copying")
    )
    table = load_run_table(out)
    for variant in ("self-align-chrf k=5", "self-align-correlation-no-battery k=5"):
        program = variant.split(" ")[0]
        rows = table[table["program"] == program]
        votes = []  # the binary copier by hand: k = 5, so the majority of the shown sides
        for country, majority, ids in zip(rows["country"], rows["country_majority"], rows["demo_ids"], strict=True):
            sides = [wvs7.majority_side(country, q) for q in json.loads(ids)]
            votes.append(("agree" if sides.count("agree") >= 3 else "disagree") == majority)
        assert overall.loc[variant, "copy_agreement_mean"] == pytest.approx(100 * np.mean(votes))
        r = overall.loc[variant]
        cell = f"{r.copy_agreement_mean:.1f} [{r.copy_agreement_ci_low:.1f}, {r.copy_agreement_ci_high:.1f}]"
        at = next(i for i, x in enumerate(overall_table) if x.strip().startswith(variant))
        reference = overall_table[at + 1]  # the row under the program's
        assert reference.strip().startswith("copying its demos, no model") and cell in reference
        assert f"{r.copy_js_similarity_mean:.3f}" in reference and f" {len(rows)} " in reference
        assert overall.loc[variant, "copy_n"] == len(rows)
    result = cli("report", str(out))
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "copying demos, no model %" in md and "model vs copying (pp)" in md
    chrf = overall.loc["self-align-chrf k=5"]
    assert f"{chrf.copy_agreement_mean:.1f} [{chrf.copy_agreement_ci_low:.1f}, {chrf.copy_agreement_ci_high:.1f}]" in md
