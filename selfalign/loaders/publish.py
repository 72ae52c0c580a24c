"""Safe names and atomic publishing of survey folders.

A survey is written into a staging folder beside its destination (``.<name>.staging-<pid>-<token>``) and
renamed into place only when complete and loadable. Replacing (``--force``) is allowed only for a folder
that is a survey of the same name (it has ``survey.toml`` naming it); the old folder is renamed aside
(``.<name>.replaced-<pid>-<token>``) and deleted once the new one is in place. A process killed part way
leaves only such dot-folders, which listings ignore and the next write into the same parent folder cleans
up: a staging folder is deleted (only if it holds nothing but survey files), a set-aside survey is put back
if its destination is missing, else deleted.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

from selfalign.errors import SelfAlignError, SurveyFormatError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_LEFTOVER = re.compile(
    r"^\.(?P<name>[A-Za-z0-9][A-Za-z0-9._+-]*)\.(?P<kind>staging|replaced)-(?P<pid>\d+)-[0-9a-f]{8}$"
)
_SURVEY_FILES = {"survey.toml", "questions.jsonl", "answers.csv", "countries.csv", "text"}
MARKER = "survey.toml"


def check_name(name: str, kind: str = "survey") -> str:
    """Return ``name`` if it is a safe folder name, else raise a one-line :class:`SelfAlignError`.

    Safe: 1-100 characters, letters, digits, ``.``, ``_``, ``+`` and ``-``, not starting with a dot or dash,
    no ``..`` (so never a path, a hidden folder or a way out of the parent folder).
    """
    text = str(name)
    if not text.strip():
        raise SelfAlignError(f"the {kind} name is empty; give one such as 'goqa' or 'wvs7-mine'")
    if "/" in text or "\\" in text or ".." in text or not NAME.match(text):
        raise SelfAlignError(
            f"{kind} name {text!r} is not a plain name: use 1-100 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit, without '..' or path separators"
        )
    return text


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def _only_survey_files(folder: Path) -> bool:
    try:
        for entry in folder.iterdir():
            if entry.name not in _SURVEY_FILES or entry.is_symlink():
                return False
            if entry.name == "text":
                if not entry.is_dir() or any(not p.name.endswith(".jsonl") or p.is_dir() for p in entry.iterdir()):
                    return False
            elif not entry.is_file():
                return False
    except OSError:
        return False
    return True


def leftovers(parent: Path) -> list[tuple[Path, str, str]]:
    """Staging and set-aside folders in ``parent`` whose writing process is gone: (path, kind, name)."""
    found = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _pid_alive(int(match["pid"])):
            found.append((entry, match["kind"], match["name"]))
    return found


def clean_leftovers(parent: Path) -> list[str]:
    """Clean up after killed writes in ``parent`` (see the module docstring); returns what was done."""
    done = []
    for path, kind, name in leftovers(parent):
        target = parent / name
        try:
            if kind == "replaced" and not target.exists() and (path / MARKER).is_file():
                os.replace(path, target)
                done.append(f"restored {target} (a replacement was interrupted)")
            elif _only_survey_files(path):
                shutil.rmtree(path)
                done.append(f"removed {path} (left by an interrupted import)")
        except OSError:
            continue
    return done


def survey_name_in(folder: Path) -> str | None:
    """The name a survey folder's ``survey.toml`` gives (its folder name if none), or None if not a survey."""
    marker = folder / MARKER
    if folder.is_symlink() or not folder.is_dir() or not marker.is_file():
        return None
    try:
        meta = tomllib.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    name = meta.get("name", folder.name)
    return name if isinstance(name, str) else None


def _write_problem(target: Path, exc: OSError) -> SurveyFormatError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"not allowed to write there ({reason})"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST) and exc.filename:
        reason = f"{exc.filename} is a file, not a folder"
    return SurveyFormatError(target, f"cannot write the survey: {reason}; nothing was changed")


def check_target(target: Path, *, overwrite: bool = False, also_named: str | None = None) -> str:
    """Check that a survey may be written to ``target`` (see :func:`publish`); returns its name."""
    name = check_name(target.name)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise SurveyFormatError(target, "already exists (--force replaces it)")
        existing = survey_name_in(target)
        if existing is None:
            raise SurveyFormatError(
                target, "exists and is not a survey folder (no readable survey.toml); refusing to replace it"
            )
        if existing not in (name, also_named):
            raise SurveyFormatError(target, f"is a survey named {existing!r}, not {name!r}; refusing to replace it")
    return name


def publish(
    target: Path, write: Callable[[Path], None], *, overwrite: bool = False, also_named: str | None = None
) -> Path:
    """Create ``target`` atomically: ``write(staging)`` fills a staging folder, which is then renamed into place.

    ``overwrite`` replaces an existing ``target`` only if it is a survey folder of the same name (or named
    ``also_named``, the name of the survey being written). Any failure
    (including a full disk or a read-only folder) leaves ``target`` as it was and removes the staging folder.
    """
    name = check_target(target, overwrite=overwrite, also_named=also_named)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_problem(target, exc) from None
    if not parent.is_dir():
        raise SurveyFormatError(target, f"cannot write the survey: {parent} is a file, not a folder")
    clean_leftovers(parent)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    staging = parent / f".{name}.staging-{token}"
    try:
        staging.mkdir()
    except OSError as exc:
        raise _write_problem(target, exc) from None
    try:
        write(staging)
        if target.exists():
            aside = parent / f".{name}.replaced-{token}"
            os.replace(target, aside)
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(aside, target)
                raise
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _write_problem(target, exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
