"""Experiment specs: a TOML file that names a grid of probes, validated before any model call.

A spec (see ``evals/README.md`` and the bundled ``evals/*.toml``)::

    name = "smoke"                    # run name (written to every row of the run table)
    description = "..."               # optional
    survey = "wvs7"                   # survey name or folder
    protocol = "binary"               # "binary" (the paper's agree/disagree statements) or "options"
    split = "test"                    # "test", "dev" or "all" questions of the seeded question split
    split_seed = 0
    test_fraction = 0.3
    seeds = [0]                       # seeds of random demonstration choices
    models = ["selfalign/gemma-3-270m"]   # model strings or aliases from the models config
    languages = ["en"]                # question languages; "native" = each country's native language
    demo_languages = ["same"]         # demonstration languages: "same", "native" or a language code
    limit = 15                        # optional: at most this many questions per country (topics round-robin)
    option_orders = ["surveyed"]      # optional perturbation axes (selfalign.perturbations): option orders
    answer_words = ["agree-disagree"] #   (surveyed, reversed, shift[:SEED], shuffle[:SEED]), answer words of the
    templates = ["default"]           #   binary protocol (agree-disagree, yes-no, true-false) and templates
    #                                     (default, list, interview); each row records its values

    [[grid]]                          # one or more grid tables; the run is the union of their cells
    programs = ["zero-shot", "persona", "self-align-chrf"]   # named programs or "compiled:NAME"
    # strategies = ["bm25"]           optional: shorthand for the programs "self-align-<strategy>"
    #                                 (random, topic, chrf, bm25, embedding, correlation)
    k = [5]                           # optional: number of demonstrations (default: each program's own)
    countries = ["NGA", "DEU"]        # ISO3 codes or English names, or "all"
    # languages = [...] / demo_languages = [...]   optional overrides of the top-level lists
    # option_orders = [...] / answer_words = [...] / templates = [...]   likewise (one grid per axis
    #                                 varies one thing at a time: the union of the grids is the run)

:func:`load_spec` reads a file or a bundled spec name (``"smoke"``, ``"paper"``) and :func:`validate_spec`
checks every name against what exists: an unknown key, program, strategy, country, language, model, protocol,
split, option order, answer words or template raises a one-line :class:`~selfalign.errors.SelfAlignError`
(an :class:`UnknownChoiceError` listing the valid choices for names), and so do answer words other than
``agree-disagree`` under the options protocol or in a language they are not written for, and a survey with
too few countries for a program using the ``correlation`` strategy. Validation never calls a model.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from selfalign import DEFAULT_MODEL, DEFAULT_SURVEY
from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.paths import bundled_dir
from selfalign.perturbations import DEFAULTS, check_option_order
from selfalign.prompts import DEFAULT_ANSWER_WORDS, answer_words, check_answer_words, check_template
from selfalign.splits import SPLIT_NAMES, split_questions
from selfalign.survey import Protocol, Survey

NATIVE = "native"
SAME = "same"
ALL = "all"

_TOP_KEYS = {
    "name",
    "description",
    "survey",
    "protocol",
    "split",
    "split_seed",
    "test_fraction",
    "seeds",
    "models",
    "languages",
    "demo_languages",
    "limit",
    "grid",
    "option_orders",
    "answer_words",
    "templates",
}
_AXIS_KEYS = ("option_orders", "answer_words", "templates")
_GRID_KEYS = {"programs", "strategies", "k", "countries", "languages", "demo_languages", *_AXIS_KEYS}


class SpecError(SelfAlignError, ValueError):
    """A spec that cannot be run: names the file and the problem."""


@dataclass(frozen=True)
class GridSpec:
    """One ``[[grid]]`` table: programs x k x countries (x optional language and perturbation overrides).

    ``k`` holds ``None`` for "the program's own k"; ``countries`` are resolved ISO3 codes after validation.
    """

    programs: tuple[str, ...]
    countries: tuple[str, ...]
    k: tuple[int | None, ...] = (None,)
    languages: tuple[str, ...] | None = None
    demo_languages: tuple[str, ...] | None = None
    option_orders: tuple[str, ...] | None = None
    answer_words: tuple[str, ...] | None = None
    templates: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ExperimentSpec:
    """A whole experiment: shared settings and the grid tables (see the module docstring)."""

    name: str
    grids: tuple[GridSpec, ...]
    survey: str = DEFAULT_SURVEY
    protocol: str = Protocol.BINARY.value
    split: str = "test"
    split_seed: int = 0
    test_fraction: float = 0.3
    seeds: tuple[int, ...] = (0,)
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    languages: tuple[str, ...] = ("en",)
    demo_languages: tuple[str, ...] = (SAME,)
    limit: int | None = None
    description: str = ""
    option_orders: tuple[str, ...] = (DEFAULTS["option_order"],)
    answer_words: tuple[str, ...] = (DEFAULTS["answer_words"],)
    templates: tuple[str, ...] = (DEFAULTS["template"],)
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (stored next to the run table)."""
        data = asdict(self)
        data.pop("source")
        return data

    def settings_hash(self, length: int = 10) -> str:
        """A short hash of every setting except name, description and source (names default run folders)."""
        data = self.to_dict()
        data.pop("name")
        data.pop("description")
        for key, column in zip(_AXIS_KEYS, DEFAULTS, strict=True):
            # unperturbed specs keep the hashes (and compare's run folders) they had before these axes existed
            if tuple(data[key]) == (DEFAULTS[column],):
                data.pop(key)
            for grid in data["grids"]:
                if grid.get(key) is None:
                    grid.pop(key, None)
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


# --- reading -----------------------------------------------------------------------------------------------


def evals_dir() -> Path:
    """The folder of the bundled specs (``evals/``)."""
    return bundled_dir("evals")


def bundled_specs() -> dict[str, Path]:
    """Bundled spec names and their files."""
    folder = evals_dir()
    return {p.stem: p for p in sorted(folder.glob("*.toml"))} if folder.is_dir() else {}


def spec_path(name_or_path: str | Path) -> Path:
    """The file of a spec given by path or bundled name; raises :class:`UnknownChoiceError` otherwise."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    bundled = bundled_specs()
    key = str(name_or_path)
    if key.endswith(".toml"):
        key = Path(key).stem
    if key in bundled:
        return bundled[key]
    raise UnknownChoiceError("spec", str(name_or_path), bundled, hint="or give the path of a spec file")


def load_spec(name_or_path: str | Path, *, validate: bool = True) -> ExperimentSpec:
    """Read a spec file (or bundled spec name) and, by default, validate it (see :func:`validate_spec`)."""
    from selfalign.loaders.csvfile import read_text

    path = spec_path(name_or_path)
    try:
        data = tomllib.loads(read_text(path))  # not UTF-8 or unreadable: a one-line error naming the file
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    spec = parse_spec(data, source=str(path), default_name=path.stem)
    return validate_spec(spec) if validate else spec


def _where(source: str) -> str:
    return f"{source}: " if source else "spec: "


def _str_list(value: Any, key: str, source: str, *, allow_all: bool = False) -> tuple[str, ...]:
    if allow_all and isinstance(value, str) and value.lower() == ALL:
        return (ALL,)
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        extra = ' or "all"' if allow_all else ""
        raise SpecError(f"{_where(source)}{key} must be a non-empty list of names{extra}, got {value!r}")
    return tuple(dict.fromkeys(v.strip() for v in value))


def _int(value: Any, key: str, source: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{_where(source)}{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _int_list(value: Any, key: str, source: str, *, minimum: int = 0) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SpecError(f"{_where(source)}{key} must be a non-empty list of integers, got {value!r}")
    return tuple(dict.fromkeys(_int(v, key, source, minimum=minimum) for v in value))


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str, source: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UnknownChoiceError(f"{where} key", unknown[0], allowed, hint=source or "spec")


def _strategy_program(strategy: str) -> str:
    from selfalign.retrieval import STRATEGIES

    if strategy not in STRATEGIES:
        raise UnknownChoiceError("strategy", strategy, STRATEGIES)
    return f"self-align-{strategy}"


def parse_spec(data: Mapping[str, Any], *, source: str = "", default_name: str = "run") -> ExperimentSpec:
    """Build an :class:`ExperimentSpec` from a parsed TOML table, checking its shape (not its names)."""
    _check_keys(data, _TOP_KEYS, "spec", source)
    grids_raw = data.get("grid")
    if isinstance(grids_raw, Mapping):
        grids_raw = [grids_raw]
    if not isinstance(grids_raw, list) or not grids_raw:
        raise SpecError(f"{_where(source)}needs at least one [[grid]] table with programs and countries")
    grids: list[GridSpec] = []
    for n, raw in enumerate(grids_raw, start=1):
        if not isinstance(raw, Mapping):
            raise SpecError(f"{_where(source)}grid {n} must be a table")
        _check_keys(raw, _GRID_KEYS, f"grid {n}", source)
        if "countries" not in raw:
            raise SpecError(f"{_where(source)}grid {n} needs countries")
        if "programs" not in raw and "strategies" not in raw:
            raise SpecError(f"{_where(source)}grid {n} needs programs (or strategies)")
        programs = _str_list(raw["programs"], f"grid {n} programs", source) if "programs" in raw else ()
        if "strategies" in raw:
            programs += tuple(
                _strategy_program(s) for s in _str_list(raw["strategies"], f"grid {n} strategies", source)
            )
        k: tuple[int | None, ...] = (None,)
        if "k" in raw:
            k = _int_list(raw["k"], f"grid {n} k", source)
        grids.append(
            GridSpec(
                programs=tuple(dict.fromkeys(programs)),
                countries=_str_list(raw["countries"], f"grid {n} countries", source, allow_all=True),
                k=k,
                languages=_str_list(raw["languages"], f"grid {n} languages", source) if "languages" in raw else None,
                demo_languages=(
                    _str_list(raw["demo_languages"], f"grid {n} demo_languages", source)
                    if "demo_languages" in raw
                    else None
                ),
                **{key: _str_list(raw[key], f"grid {n} {key}", source) for key in _AXIS_KEYS if key in raw},
            )
        )
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"{_where(source)}name must be a non-empty string")
    from selfalign.loaders.publish import check_name

    try:
        check_name(name.strip(), kind="run")  # the run folder is runs/<name>: never a path
    except SelfAlignError as exc:
        raise SpecError(f"{_where(source)}{exc}") from None
    fraction = data.get("test_fraction", 0.3)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise SpecError(f"{_where(source)}test_fraction must be a number between 0 and 1, got {fraction!r}")
    limit = data.get("limit")
    for key in ("survey", "protocol", "split", "description"):
        if key in data and not isinstance(data[key], str):
            raise SpecError(f"{_where(source)}{key} must be a string, got {data[key]!r}")
    return ExperimentSpec(
        name=name.strip(),
        grids=tuple(grids),
        survey=data.get("survey", DEFAULT_SURVEY),
        protocol=data.get("protocol", Protocol.BINARY.value),
        split=data.get("split", "test"),
        split_seed=_int(data.get("split_seed", 0), "split_seed", source),
        test_fraction=float(fraction),
        seeds=_int_list(data.get("seeds", [0]), "seeds", source),
        models=_str_list(data.get("models", [DEFAULT_MODEL]), "models", source),
        languages=_str_list(data.get("languages", ["en"]), "languages", source),
        demo_languages=_str_list(data.get("demo_languages", [SAME]), "demo_languages", source),
        limit=None if limit is None else _int(limit, "limit", source, minimum=1),
        description=str(data.get("description", "")),
        **{key: _str_list(data[key], key, source) for key in _AXIS_KEYS if key in data},
        source=source,
    )


# --- validation --------------------------------------------------------------------------------------------


def _check_languages(survey: Survey, values: Sequence[str], *, demo: bool) -> None:
    specials = (NATIVE, SAME) if demo else (NATIVE,)
    for value in values:
        if value in specials:
            continue
        if value not in survey.languages_info:
            raise UnknownChoiceError(
                "demonstration language" if demo else "language",
                value,
                [*survey.languages_info, *specials],
                hint=f"survey {survey.name}; add one with `selfalign translate`",
            )


def resolve_language(survey: Survey, value: str, country: str) -> str:
    """A spec's language value for one country: ``"native"`` is the country's own language."""
    return survey.native_language(country) if value == NATIVE else survey.resolve_language(value)


def _check_perturbations(spec: ExperimentSpec, grid: GridSpec, survey: Survey) -> tuple[str, ...]:
    """Check the grid's option orders, answer words and templates (names, the protocol, the answer words'
    languages for questions and demonstrations, "native" resolved per country); return the canonical orders."""
    orders = tuple(dict.fromkeys(check_option_order(o) for o in grid.option_orders or spec.option_orders))
    words = tuple(check_answer_words(w) for w in grid.answer_words or spec.answer_words)
    for name in grid.templates or spec.templates:
        check_template(name)
    perturbed = [w for w in words if w != DEFAULT_ANSWER_WORDS]
    if perturbed and spec.protocol != Protocol.BINARY.value:
        raise SpecError(
            f"{_where(spec.source)}answer words {perturbed[0]!r} apply to the binary protocol only "
            f"(protocol {spec.protocol!r}; use {DEFAULT_ANSWER_WORDS!r})"
        )
    if perturbed:
        values = [
            v for v in (*(grid.languages or spec.languages), *(grid.demo_languages or spec.demo_languages)) if v != SAME
        ]
        langs = {resolve_language(survey, v, c) for v in values for c in grid.countries}
        for name in perturbed:
            for lang in sorted(langs):
                answer_words(name, lang, survey.side_labels(lang))
    return orders


def _check_programs(grid: GridSpec, survey: Survey, models: Sequence[str]) -> None:
    from selfalign.association import check_countries
    from selfalign.programs import COMPILED_PREFIX, load_program

    for name in grid.programs:
        if name.startswith(COMPILED_PREFIX):
            for model in models:
                load_program(name, survey=survey, model=model)
            continue
        for k in grid.k:
            program = load_program(name, k=k)
            if any(getattr(part, "uses_value_structure", False) for part in program.parts):
                check_countries(survey)  # the value-structure strategy needs enough countries to correlate


def _check_k(grid: GridSpec, survey: Survey, spec: ExperimentSpec) -> None:
    """k can be at most the number of questions a demonstration can come from (the dev split, or every other
    question for split ``all``)."""
    biggest = max((k for k in grid.k if k is not None), default=0)
    if not biggest:
        return
    n = len(survey.questions_for(spec.protocol))
    if spec.split != "all":
        n = len(
            split_questions(survey, protocol=spec.protocol, seed=spec.split_seed, test_fraction=spec.test_fraction).dev
        )
    available = n - 1 if spec.split != "test" else n
    if biggest > available:
        where = "dev questions" if spec.split != "all" else "other questions"
        raise SpecError(
            f"{_where(spec.source)}k = {biggest} is more than the {available} {where} that demonstrations can come "
            f"from (protocol {spec.protocol}, split {spec.split}); use a smaller k"
        )


def validate_spec(spec: ExperimentSpec, survey: Survey | None = None) -> ExperimentSpec:
    """Check every name in ``spec`` and return it with countries resolved to ISO3 codes (``"all"`` expanded).

    Raises a one-line :class:`SelfAlignError` (:class:`UnknownChoiceError` for names) for the first problem:
    survey, protocol, split, model, language, demonstration language, country, option order, answer words,
    template, program or strategy. Loads the survey but calls no model. Option orders are returned in their
    canonical form (``"shift"`` -> ``"shift:0"``).
    """
    from selfalign.models.config import resolve_model

    if survey is None:
        from selfalign.loaders import load_survey

        survey = load_survey(spec.survey)
    if spec.protocol not in {p.value for p in Protocol}:
        raise UnknownChoiceError("protocol", spec.protocol, [p.value for p in Protocol])
    if spec.split not in SPLIT_NAMES:
        raise UnknownChoiceError("split", spec.split, SPLIT_NAMES)
    for model in spec.models:
        resolve_model(model)
    _check_languages(survey, spec.languages, demo=False)
    _check_languages(survey, spec.demo_languages, demo=True)
    grids: list[GridSpec] = []
    for grid in spec.grids:
        if grid.languages is not None:
            _check_languages(survey, grid.languages, demo=False)
        if grid.demo_languages is not None:
            _check_languages(survey, grid.demo_languages, demo=True)
        if grid.countries == (ALL,):
            countries = survey.countries
        else:
            countries = tuple(dict.fromkeys(survey.resolve_country(c) for c in grid.countries))
        grid = replace(grid, countries=countries)
        _check_k(grid, survey, spec)
        orders = _check_perturbations(spec, grid, survey)
        if grid.option_orders is not None:
            grid = replace(grid, option_orders=orders)
        _check_programs(grid, survey, spec.models)
        grids.append(grid)
    orders = tuple(dict.fromkeys(check_option_order(o) for o in spec.option_orders))
    return replace(spec, grids=tuple(grids), option_orders=orders)
