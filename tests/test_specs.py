"""Tests of selfalign.specs and the runner's planning: validation before any model call, grid expansion,
demonstration pools that never leak tested answers, and identical prompts computed once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.plan import limit_questions, plan_run, render_rows
from selfalign.specs import bundled_specs, load_spec, parse_spec, validate_spec
from selfalign.splits import split_questions


def _spec(**overrides):
    grid = overrides.pop("grid", [{"programs": ["zero-shot"], "countries": ["NGA"]}])
    return parse_spec({"name": "t", "grid": grid, **overrides})


def test_bundled_specs_validate_and_have_the_papers_shape(wvs7) -> None:
    assert {"smoke", "paper"} <= set(bundled_specs())
    paper = load_spec("paper")
    assert paper.protocol == "binary" and paper.split == "test"
    main, curve = paper.grids
    assert set(main.programs) == {"zero-shot", "persona", "self-align-random", "self-align-topic", "self-align-chrf"}
    assert main.k == (5,) and len(main.countries) == 57 == len(wvs7.countries)
    assert curve.programs == ("self-align-chrf",) and curve.k == (1, 3, 5, 10) and len(curve.countries) == 8
    smoke = load_spec("smoke")
    assert smoke.limit is not None


@pytest.mark.parametrize(
    ("overrides", "kind", "value"),
    [
        ({"grid": [{"programs": ["self-align-chrff"], "countries": ["NGA"]}]}, "program", "self-align-chrff"),
        ({"grid": [{"strategies": ["chrf++"], "countries": ["NGA"]}]}, "strategy", "chrf++"),
        ({"grid": [{"programs": ["zero-shot"], "countries": ["Germny"]}]}, "country", "Germny"),
        ({"languages": ["xx"]}, "language", "xx"),
        ({"demo_languages": ["yy"]}, "demonstration language", "yy"),
        ({"models": ["selfalign/gemma-3-2b"]}, "model", "selfalign/gemma-3-2b"),
        ({"protocol": "bin"}, "protocol", "bin"),
        ({"split": "tst"}, "split", "tst"),
        ({"seedz": [1]}, "spec key", "seedz"),
        ({"grid": [{"programs": ["zero-shot"], "countries": ["NGA"], "kk": [1]}]}, "grid 1 key", "kk"),
    ],
)
def test_unknown_names_raise_one_line_errors_listing_choices(wvs7, overrides, kind, value) -> None:
    with pytest.raises(UnknownChoiceError) as info:
        validate_spec(_spec(**overrides), wvs7)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"unknown {kind} {value!r}")
    assert "closest:" in message or "valid:" in message


@pytest.mark.parametrize(
    "data",
    [
        {"name": "t"},
        {"name": "t", "grid": [{"countries": ["NGA"]}]},
        {"name": "t", "grid": [{"programs": ["zero-shot"]}]},
        {"name": "t", "grid": [{"programs": [], "countries": ["NGA"]}]},
        {"name": "t", "grid": [{"programs": ["zero-shot"], "countries": ["NGA"], "k": [-1]}]},
        {"name": "t", "grid": [{"programs": ["zero-shot"], "countries": ["NGA"]}], "test_fraction": 1.5},
        {"name": "t", "grid": [{"programs": ["zero-shot"], "countries": ["NGA"]}], "limit": 0},
        {"name": "t", "grid": [{"programs": ["zero-shot"], "countries": ["NGA"]}], "seeds": ["a"]},
    ],
)
def test_malformed_specs_are_rejected(data) -> None:
    with pytest.raises(SelfAlignError) as info:
        parse_spec(data)
    assert "\n" not in str(info.value)


def test_spec_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n", encoding="utf-8")
    with pytest.raises(SelfAlignError, match=r"bad\.toml"):
        load_spec(bad)
    with pytest.raises(UnknownChoiceError, match=r"unknown spec 'nope'; .*smoke"):
        load_spec("nope")


def test_all_countries_strategies_shorthand_and_names_resolve(wvs7) -> None:
    spec = validate_spec(_spec(grid=[{"programs": ["zero-shot"], "strategies": ["bm25"], "countries": "all"}]), wvs7)
    assert spec.grids[0].countries == wvs7.countries
    assert spec.grids[0].programs == ("zero-shot", "self-align-bm25")
    named = validate_spec(_spec(grid=[{"programs": ["zero-shot"], "countries": ["germany", "nga"]}]), wvs7)
    assert named.grids[0].countries == ("DEU", "NGA")


def test_settings_hash_ignores_name_but_not_settings() -> None:
    a, b = _spec(), parse_spec({"name": "other", "grid": [{"programs": ["zero-shot"], "countries": ["NGA"]}]})
    assert a.settings_hash() == b.settings_hash()
    assert a.settings_hash() != _spec(split_seed=1).settings_hash()


def test_limit_takes_questions_round_robin_over_topics(wvs7) -> None:
    ids = split_questions(wvs7, protocol="binary").test
    chosen = limit_questions(ids, wvs7, 13)
    assert len(chosen) == 13
    assert len({wvs7.question(q).topic for q in chosen}) == min(13, len({wvs7.question(q).topic for q in ids}))
    assert chosen == [q for q in ids if q in chosen]  # survey order kept
    assert limit_questions(ids, wvs7, None) == list(ids)


def test_plan_expands_the_union_of_grid_cells_once(wvs7) -> None:
    spec = _spec(
        limit=6,
        grid=[
            {"programs": ["zero-shot", "self-align-chrf"], "k": [5], "countries": ["NGA", "DEU"]},
            {"programs": ["self-align-chrf"], "k": [1, 5], "countries": ["DEU"]},
        ],
    )
    plan = plan_run(spec, wvs7)
    keys = [r.key for r in plan.rows]
    assert len(keys) == len(set(keys))
    cells = {(r.base["country"], r.base["program"], r.base["k"]) for r in plan.rows}
    assert cells == {
        ("NGA", "zero-shot", 5),
        ("NGA", "self-align-chrf", 5),
        ("DEU", "zero-shot", 5),
        ("DEU", "self-align-chrf", 5),
        ("DEU", "self-align-chrf", 1),
    }
    assert len(plan.rows) == 5 * 6


def test_test_split_demonstrations_come_from_dev_only(wvs7) -> None:
    spec = _spec(
        limit=10, grid=[{"programs": ["self-align-chrf", "self-align-random"], "k": [5], "countries": ["JPN"]}]
    )
    plan = plan_run(spec, wvs7)
    render_rows(plan, plan.rows)
    test_ids, dev_ids = set(plan.split.test), set(plan.split.dev)
    for row in plan.rows:
        assert row.prepare_error is None
        assert row.base["question_id"] in test_ids
        demos = json.loads(row.base["demo_ids"])
        assert len(demos) == 5 == row.base["n_demos"]
        assert set(demos) <= dev_ids and not set(demos) & test_ids


def test_dev_split_never_shows_the_question_itself(wvs7) -> None:
    spec = _spec(split="dev", limit=10, grid=[{"programs": ["self-align-chrf"], "k": [5], "countries": ["EGY"]}])
    plan = plan_run(spec, wvs7)
    render_rows(plan, plan.rows)
    for row in plan.rows:
        demos = json.loads(row.base["demo_ids"])
        assert row.base["question_id"] not in demos
        assert set(demos) <= set(plan.split.dev)


def test_demonstration_free_probes_share_one_prompt_across_k_and_countries(wvs7) -> None:
    spec = _spec(limit=5, grid=[{"programs": ["zero-shot", "persona"], "k": [1, 3, 5], "countries": ["NGA", "DEU"]}])
    plan = plan_run(spec, wvs7)
    render_rows(plan, plan.rows)
    assert len(plan.rows) == 2 * 3 * 2 * 5  # one logical row per grid cell
    zero = {r.base["prompt_sha256"] for r in plan.rows if r.base["program"] == "zero-shot"}
    persona = {r.base["prompt_sha256"] for r in plan.rows if r.base["program"] == "persona"}
    assert len(zero) == 5  # same question, no demonstrations, no persona: one prompt for every k and country
    assert len(persona) == 2 * 5  # the persona names the country
    assert {r.base["k"] for r in plan.rows} == {1, 3, 5}


def test_binary_rows_carry_renormalised_side_shares(wvs7) -> None:
    plan = plan_run(_spec(limit=8), wvs7)
    for row in plan.rows:
        question = wvs7.question(row.base["question_id"])
        shares = json.loads(row.base["country_shares"])
        agree, disagree = wvs7.distribution("NGA", question.id).side_shares(question.binary)
        assert shares == pytest.approx({"agree": agree, "disagree": disagree})
        assert row.base["country_majority"] == wvs7.majority_side("NGA", question.id)
