"""Compiled programs on disk: ``<folder>/<name>/program.json`` (DSPy's save format) and ``meta.json``.

``program.json`` is ``AlignmentProgram.save`` output: the predictor's instructions and fixed demonstrations.
``meta.json`` holds everything else: the parts (demonstration selection, learned ranking), the survey,
countries, model and protocol the program was compiled for, the split, the search space, the dev and test
scores, the calls spent. Programs live in the bundled ``programs/compiled`` folder (a source checkout) and
in the user's folder (:func:`selfalign.paths.user_programs_dir`); a user program shadows a bundled one of
the same name. Saving is atomic: a temporary folder beside the target, renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.paths import bundled_dir, user_programs_dir
from selfalign.programs.modules import AlignmentProgram
from selfalign.programs.parts import part_from_config
from selfalign.survey import Survey

PROGRAM_FILE = "program.json"
META_FILE = "meta.json"
FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,119}$")


def bundled_compiled_dir() -> Path:
    """``programs/compiled`` of the checkout or the installed package."""
    return bundled_dir("programs") / "compiled"


def _writable(folder: Path) -> bool:
    probe = folder if folder.exists() else folder.parent
    return probe.exists() and os.access(probe, os.W_OK)


def default_save_dir() -> Path:
    """Where ``selfalign optimize`` saves: the bundled folder when writable, else the user's folder."""
    bundled = bundled_compiled_dir()
    return bundled if _writable(bundled) else user_programs_dir()


def check_name(name: str) -> str:
    """A compiled program's name must be a plain folder name."""
    if not _NAME.match(name or ""):
        raise SelfAlignError(
            f"invalid compiled program name {name!r}: use letters, digits, '.', '_', '+' and '-' (at most 120)"
        )
    return name


def _program_dirs() -> list[Path]:
    return [bundled_compiled_dir(), user_programs_dir()]  # later folders shadow earlier ones


def _read_meta(folder: Path) -> dict[str, Any] | None:
    meta_path = folder / META_FILE
    if not (meta_path.is_file() and (folder / PROGRAM_FILE).is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and "config" in meta else None


def compiled_programs() -> dict[str, dict[str, Any]]:
    """Compiled programs by name: their metadata, with ``path`` (the folder) added."""
    found: dict[str, dict[str, Any]] = {}
    for root in _program_dirs():
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            meta = _read_meta(folder)
            if meta is not None:
                found[folder.name] = {**meta, "path": str(folder)}
    return dict(sorted(found.items()))


def find_compiled(name: str) -> Path:
    """The folder of a compiled program given by name (or by a folder path)."""
    path = Path(name).expanduser()
    if (os.sep in name or name.startswith(".")) and _read_meta(path) is not None:
        return path
    programs = compiled_programs()
    if name not in programs:
        raise UnknownChoiceError("compiled program", name, programs, hint="see `selfalign programs`")
    return Path(programs[name]["path"])


def check_compatible(meta: dict[str, Any], survey: Survey | str | None, model: str | None) -> None:
    """Raise :class:`SelfAlignError` when the program was compiled for another survey or model."""
    name = meta.get("name", "?")
    if survey is not None:
        wanted = survey.name if isinstance(survey, Survey) else str(survey)
        if wanted != meta.get("survey"):
            raise SelfAlignError(
                f"compiled program {name} was compiled for survey {meta.get('survey')}, not {wanted}; "
                f"run `selfalign optimize --survey {wanted}` to compile one for it"
            )
        if isinstance(survey, Survey):
            known = survey.questions_by_id
            wanted_ids = [q for part in meta["config"]["parts"] for q in part.get("ranking", ())]
            wanted_ids += [str(d.get("question_id")) for d in meta["config"].get("fixed_demos", ())]
            missing = [q for q in wanted_ids if q not in known]
            if missing:
                raise SelfAlignError(
                    f"compiled program {name} refers to questions {missing[:5]} that survey {survey.name} lacks"
                )
            if any(part.get("part") == "learned_demonstrations" for part in meta["config"]["parts"]):
                from selfalign.association import check_countries

                check_countries(survey, f"compiled program {name} (learned selection) needs")
    if model is not None and model != meta.get("model"):
        raise SelfAlignError(
            f"compiled program {name} was compiled for model {meta.get('model')}, not {model}; "
            f"run `selfalign optimize --model {model}` to compile one for it"
        )


def build_compiled(meta: dict[str, Any], folder: Path | None = None) -> AlignmentProgram:
    """The program of a compiled program's metadata, with its DSPy state loaded from ``folder``."""
    config = meta["config"]
    program = AlignmentProgram(
        [part_from_config(dict(p)) for p in config["parts"]],
        name=f"compiled:{meta['name']}",
        description=str(meta.get("description", "")),
    )
    if folder is not None:
        program.load(str(folder / PROGRAM_FILE))
    return program


def load_compiled(name: str, survey: Survey | str | None = None, model: str | None = None) -> AlignmentProgram:
    """A compiled program by name (``selfalign optimize --name``) or folder path.

    ``survey`` (name or object) and ``model``, when given, must be those it was compiled for; otherwise a
    :class:`SelfAlignError` says which was used.
    """
    folder = find_compiled(name)
    meta = _read_meta(folder)
    if meta is None:  # pragma: no cover - find_compiled checked it
        raise SelfAlignError(f"compiled program {name}: {folder} has no readable {META_FILE}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise SelfAlignError(f"compiled program {name} was written by a newer selfalign; upgrade to load it")
    check_compatible(meta, survey, model)
    return build_compiled(meta, folder)


def save_compiled(program: AlignmentProgram, meta: dict[str, Any], folder: Path) -> Path:
    """Write ``program.json`` and ``meta.json`` into ``folder`` atomically (replacing an older one)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        program.save(str(tmp / PROGRAM_FILE))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.old.{os.getpid()}"
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
