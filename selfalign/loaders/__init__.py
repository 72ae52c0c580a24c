"""Loaders: every survey source becomes the same :class:`selfalign.survey.Survey`.

- :func:`load_survey` loads a survey by name (bundled or imported) or by folder path.
- :mod:`selfalign.loaders.wvs_microdata`, :mod:`selfalign.loaders.global_opinions` and
  :mod:`selfalign.loaders.tidy` read other formats; ``selfalign surveys import`` writes them in the
  bundled format.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from selfalign.errors import UnknownChoiceError
from selfalign.loaders.bundled import load_bundled, write_bundled
from selfalign.paths import bundled_dir, user_surveys_dir
from selfalign.survey import Survey

__all__ = ["available_surveys", "load_bundled", "load_survey", "survey_path", "write_bundled"]


def _search_dirs() -> list[Path]:
    return [user_surveys_dir(), bundled_dir("surveys")]


def available_surveys() -> dict[str, Path]:
    """Survey names and their folders: the user's imported surveys first, then the bundled ones."""
    found: dict[str, Path] = {}
    for base in reversed(_search_dirs()):
        if base.is_dir():
            for child in sorted(base.iterdir()):
                if (child / "survey.toml").is_file():
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


@lru_cache(maxsize=16)
def _load_cached(path: str, stamp: float) -> Survey:
    return load_bundled(path)


def load_survey(name_or_path: str | Path = "wvs7") -> Survey:
    """Load a survey by name (``"wvs7"``, an imported survey) or folder path; cached per process."""
    path = survey_path(name_or_path)
    stamp = max(p.stat().st_mtime for p in path.rglob("*") if p.is_file())
    return _load_cached(str(path), stamp)
