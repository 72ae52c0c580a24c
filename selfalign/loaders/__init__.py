"""Loaders: every survey source becomes the same :class:`selfalign.survey.Survey`.

- :func:`load_survey` loads a survey by name (bundled or imported) or by folder path, with the languages
  ``selfalign translate`` wrote to the user's translations folder (:func:`user_translations_dir`).
- :mod:`selfalign.loaders.wvs_microdata`, :mod:`selfalign.loaders.global_opinions` and
  :mod:`selfalign.loaders.tidy` read other formats; ``selfalign surveys import`` writes them in the
  bundled format.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path

from selfalign.errors import SurveyFormatError, UnknownChoiceError
from selfalign.loaders.bundled import load_bundled, write_bundled
from selfalign.loaders.publish import NAME, check_name
from selfalign.paths import bundled_dir, user_data_dir, user_surveys_dir
from selfalign.survey import Survey

__all__ = [
    "available_surveys",
    "check_name",
    "load_bundled",
    "load_survey",
    "survey_name_of",
    "survey_path",
    "user_translations_dir",
    "write_bundled",
]


def user_translations_dir(survey_name: str | None = None) -> Path:
    """Where ``selfalign translate`` writes languages of read-only surveys: ``<user data>/translations/<name>``."""
    base = user_data_dir() / "translations"
    return base / survey_name if survey_name else base


def _search_dirs() -> list[Path]:
    return [user_surveys_dir(), bundled_dir("surveys")]


def available_surveys() -> dict[str, Path]:
    """Survey names and their folders: the user's imported surveys first, then the bundled ones.

    Only folders with a plain name (:func:`check_name`) and a ``survey.toml`` count: the dot-folders an
    interrupted import leaves behind are never listed.
    """
    found: dict[str, Path] = {}
    for base in reversed(_search_dirs()):
        try:
            children = sorted(base.iterdir()) if base.is_dir() else []
        except OSError:
            continue
        for child in children:
            if NAME.match(child.name) and ".." not in child.name and (child / "survey.toml").is_file():
                found[child.name] = child
    return dict(sorted(found.items()))


def survey_path(name_or_path: str | Path) -> Path:
    """The folder of a survey given by name or path."""
    candidate = Path(name_or_path).expanduser()
    if (candidate / "survey.toml").is_file():
        return candidate.resolve()
    surveys = available_surveys()
    if str(name_or_path) in surveys:
        return surveys[str(name_or_path)].resolve()
    raise UnknownChoiceError("survey", str(name_or_path), surveys, hint="or give the path of a survey folder")


def survey_name_of(folder: Path) -> str:
    """A survey folder's name: ``name`` in its survey.toml, else the folder's name."""
    try:
        meta = tomllib.loads((folder / "survey.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return folder.name
    name = meta.get("name")
    return name if isinstance(name, str) and NAME.match(name) and ".." not in name else folder.name


@lru_cache(maxsize=16)
def _load_cached(path: str, overlay: str | None, stamp: tuple) -> Survey:
    return load_bundled(path, overlay_dir=overlay)


def load_survey(name_or_path: str | Path = "wvs7", *, translations: bool = True) -> Survey:
    """Load a survey by name (``"wvs7"``, an imported survey) or folder path; cached per process.

    With ``translations`` the languages in :func:`user_translations_dir` for the survey's name are added
    (validated like the survey's own; an invalid one fails the whole load).
    """
    path = survey_path(name_or_path)
    try:
        stamp: list[object] = [max(p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file())]
        overlay = None
        if translations:
            folder = user_translations_dir(survey_name_of(path))
            if folder.is_dir():
                overlay = str(folder)
                stamp += sorted(
                    (p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if p.is_file()
                )
    except OSError as exc:
        raise SurveyFormatError(path, f"cannot read the survey folder ({exc.strerror or exc})") from None
    return _load_cached(str(path), overlay, tuple(stamp))
