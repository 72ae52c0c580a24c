"""Where selfalign finds its bundled data (surveys, programs, specs) and the user's own files."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def bundled_dir(kind: str) -> Path:
    """The folder of a bundled resource kind ("surveys", "programs", "evals").

    In a wheel they ship inside the package (``selfalign/_bundled/<kind>``); in a source checkout or an
    editable install they are the top-level folders of the repository.
    """
    inside = _PACKAGE_DIR / "_bundled" / kind
    if inside.is_dir():
        return inside
    return _PACKAGE_DIR.parent / kind


def user_data_dir() -> Path:
    """The user's own data folder: ``$SELFALIGN_HOME`` or ``~/.local/share/selfalign``."""
    home = os.environ.get("SELFALIGN_HOME")
    if home:
        return Path(home).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "selfalign"


def user_surveys_dir() -> Path:
    """Where ``selfalign surveys import`` writes surveys by default."""
    return user_data_dir() / "surveys"


def user_programs_dir() -> Path:
    """Where compiled programs are saved when the bundled ``programs/compiled`` is not writable."""
    return user_data_dir() / "programs"
