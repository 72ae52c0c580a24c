"""Where a translation goes, what earlier runs saved, and publishing the finished language file.

Where the result goes (:func:`choose_destination`): into the survey folder (``text/<lang>.jsonl`` and a
``[languages.<lang>]`` table in ``survey.toml``) when the folder is writable and not shipped inside an
installed package; otherwise into the user's translations folder
(``<user data>/translations/<survey>/<lang>.jsonl`` + ``<lang>.meta.toml``), which
:func:`selfalign.loaders.load_survey` merges as extra languages. ``out`` writes into a survey folder of its
own (a copy of the survey is made there first).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import sysconfig
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from selfalign.errors import SelfAlignError, SurveyFormatError
from selfalign.loaders import load_bundled, survey_name_of, user_translations_dir
from selfalign.loaders.bundled import OVERLAY_META_SUFFIX, _toml_value, _write_toml
from selfalign.survey import Survey
from selfalign.translate.units import LABEL_CHUNK, Unit

PARTIAL_SUFFIX = ".partial.jsonl"
NOT_REVIEWED = "not reviewed"


@dataclass(frozen=True)
class Destination:
    """Where one language of a survey is written.

    ``kind="survey"``: ``<folder>/text/<lang>.jsonl`` plus a ``[languages.<lang>]`` table in the folder's
    ``survey.toml``. ``kind="overlay"``: ``<folder>/<lang>.jsonl`` plus ``<folder>/<lang>.meta.toml``, where
    ``folder`` is the user's translations folder of the survey. Progress goes to ``partial_file`` beside.
    """

    kind: Literal["survey", "overlay"]
    folder: Path
    survey_folder: Path
    lang: str

    @property
    def text_file(self) -> Path:
        """The finished language file."""
        if self.kind == "survey":
            return self.folder / "text" / f"{self.lang}.jsonl"
        return self.folder / f"{self.lang}.jsonl"

    @property
    def meta_file(self) -> Path:
        """The file that records the language's name, answer words and provenance."""
        if self.kind == "survey":
            return self.folder / "survey.toml"
        return self.folder / f"{self.lang}{OVERLAY_META_SUFFIX}"

    @property
    def partial_file(self) -> Path:
        """Units finished so far (removed once the language file is written)."""
        return self.text_file.with_name(f"{self.lang}{PARTIAL_SUFFIX}")


def inside_installed_package(folder: Path) -> bool:
    import selfalign

    roots = [Path(selfalign.__file__).resolve().parent]
    for name in ("purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.append(Path(path).resolve())
    with suppress(AttributeError):  # some virtualenv layouts lack it
        roots += [Path(p).resolve() for p in site.getsitepackages()]
    resolved = folder.resolve()
    return any(resolved.is_relative_to(root) for root in roots)


def _writable(folder: Path) -> bool:
    targets = [folder, folder / "survey.toml", folder / "text"]
    return all(os.access(p, os.W_OK) for p in targets if p.exists()) and (folder / "text").is_dir()


def choose_destination(survey_folder: Path, lang: str, out: str | Path | None = None) -> Destination:
    """Where ``selfalign translate`` writes ``lang`` of the survey in ``survey_folder`` (see the module doc).

    ``out`` names a survey folder to write into; when it does not exist yet, :func:`translate_survey` makes
    a copy of the survey there first. Nothing is written here.
    """
    if out is not None:
        target = Path(out).expanduser().resolve()
        if not (target / "survey.toml").is_file() and target.exists() and any(target.iterdir()):
            raise SelfAlignError(f"{target}: exists and is not a survey folder (choose a new or survey folder)")
        return Destination("survey", target, target, lang)
    if _writable(survey_folder) and not inside_installed_package(survey_folder):
        return Destination("survey", survey_folder, survey_folder, lang)
    overlay = user_translations_dir(survey_name_of(survey_folder))
    return Destination("overlay", overlay, survey_folder, lang)


@dataclass
class Saved:
    """Work from earlier runs: partial-file entries by unit key, earlier failures, and a finished file."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {"sha", "model", "result"}
    failed: set[str] = field(default_factory=set)
    final: dict[str, dict[str, Any]] = field(default_factory=dict)  # question id -> record
    final_meta: dict[str, Any] = field(default_factory=dict)


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # e.g. a line cut short by an interrupted run
                continue
            if isinstance(record, dict):
                yield record


def existing_meta(dest: Destination) -> dict[str, Any]:
    if not dest.meta_file.exists():
        return {}
    try:
        data = tomllib.loads(dest.meta_file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SurveyFormatError(dest.meta_file, f"not valid TOML ({exc})") from None
    if dest.kind == "survey":
        return dict((data.get("languages") or {}).get(dest.lang) or {})
    return data


def load_saved(dest: Destination, units: Sequence[Unit]) -> Saved:
    saved = Saved()
    sha_of = {u.key: u.sha for u in units}
    for record in _read_lines(dest.partial_file):
        key = record.get("key")
        if key not in sha_of or record.get("sha") != sha_of[key]:
            continue  # another source text or language pair: translate again
        if "result" in record:
            saved.done[key] = record
            saved.failed.discard(key)
        elif "failed" in record and key not in saved.done:
            saved.failed.add(key)
    meta = existing_meta(dest)
    if meta:
        saved.final_meta = meta
        for record in _read_lines(dest.text_file):
            if "id" in record:
                saved.final[str(record["id"])] = record
    return saved


def from_final(unit: Unit, survey: Survey, saved: Saved) -> dict[str, Any] | None:
    """The unit's result taken from an earlier finished (possibly reviewed) file, if it has it."""
    if unit.kind == "words":
        agree, disagree = saved.final_meta.get("agree"), saved.final_meta.get("disagree")
        if isinstance(agree, str) and agree.strip() and isinstance(disagree, str) and disagree.strip():
            return {"agree": agree, "disagree": disagree}
        return None
    for qid in unit.questions:
        record = saved.final.get(qid)
        question = survey.questions_by_id[qid]
        labels = record.get("options") if record else None
        if not isinstance(labels, dict) or list(map(str, labels)) != list(question.option_codes):
            continue
        if any(not isinstance(v, str) or not v.strip() for v in labels.values()):
            continue
        values = [str(v) for v in labels.values()]
        if unit.kind == "labels":
            part = int(unit.key.rsplit(":", 1)[1])
            return {"options": values[part * LABEL_CHUNK : part * LABEL_CHUNK + unit.n_options]}
        text = record.get("question") if record else None
        statement = record.get("statement") if record else None
        if not isinstance(text, str) or not text.strip():
            return None
        result: dict[str, Any] = {"question": text}
        if "statement" in unit.payload:
            if not isinstance(statement, str) or not statement.strip():
                return None
            result["statement"] = statement
        if "options" in unit.payload:
            result["options"] = values
        return result
    return None


def assemble(survey: Survey, units: Sequence[Unit], results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    by_question: dict[str, list[Unit]] = {}
    for unit in units:
        if unit.kind == "labels":
            for qid in unit.questions:
                by_question.setdefault(qid, []).append(unit)
    records = []
    for q in survey.questions:
        own = results[f"question:{q.id}"]
        if "options" in own:
            labels = list(own["options"])
        else:
            parts = sorted(by_question[q.id], key=lambda u: int(u.key.rsplit(":", 1)[1]))
            labels = [label for u in parts for label in results[u.key]["options"]]
        records.append(
            {
                "id": q.id,
                "question": own["question"],
                "options": dict(zip(q.option_codes, labels, strict=True)),
                "statement": own.get("statement") if q.binary is not None else None,
            }
        )
    return records


@contextmanager
def _publishing(files: dict[Path, str]) -> Iterator[None]:
    """Write ``files`` atomically (each via a temporary file), undoing all of them if the block raises."""
    backups: dict[Path, Path | None] = {}
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            backup = None
            if path.exists():
                backup = path.with_name(f".{path.name}.bak")
                shutil.copy2(path, backup)
            backups[path] = backup
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(content, encoding="utf-8")
            os.replace(tmp, path)
        yield
    except BaseException:
        for path, backup in backups.items():
            if backup is not None:
                os.replace(backup, path)
            else:
                path.unlink(missing_ok=True)
        raise
    for backup in backups.values():
        if backup is not None:
            backup.unlink(missing_ok=True)


def meta_fields(name: str, words: dict[str, Any], models: Sequence[str], source_lang: str, day: str) -> dict:
    """The language's entry in ``survey.toml`` (or its overlay meta file): name, answer words, provenance."""
    return {
        "name": name,
        "agree": words["agree"],
        "disagree": words["disagree"],
        "produced": f"machine-translated by {', '.join(models)} from {source_lang} on {day}",
        "checked": NOT_REVIEWED,
        "machine_translated": True,
        "source_lang": source_lang,
        "models": list(models),
    }


def _survey_toml(dest: Destination, fields: dict[str, Any]) -> str:
    text = dest.meta_file.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    if dest.lang in (data.get("languages") or {}):
        data["languages"][dest.lang] = fields
        path = dest.meta_file.with_name(".survey.toml.render")
        try:
            _write_toml(data, path)
            return path.read_text(encoding="utf-8")
        finally:
            path.unlink(missing_ok=True)
    table = "\n".join(f"{k} = {_toml_value(v)}" for k, v in fields.items())
    return text.rstrip("\n") + f"\n\n[languages.{dest.lang}]\n{table}\n"


def publish(dest: Destination, records: list[dict[str, Any]], fields: dict[str, Any]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if dest.kind == "survey":
        files = {dest.text_file: text, dest.meta_file: _survey_toml(dest, fields)}
    else:
        meta = "".join(f"{k} = {_toml_value(v)}\n" for k, v in fields.items())
        files = {dest.text_file: text, dest.meta_file: meta}
    with _publishing(files):
        overlay = dest.folder if dest.kind == "overlay" else None
        survey = load_bundled(dest.survey_folder, overlay_dir=overlay)  # validate before keeping it
        if dest.lang not in survey.languages_info:
            raise SurveyFormatError(dest.meta_file, f"language {dest.lang} did not load")
    dest.partial_file.unlink(missing_ok=True)


def check_target(folder: Path, dest: Destination, survey_name: str) -> None:
    meta = tomllib.loads((folder / "survey.toml").read_text(encoding="utf-8"))
    own = (meta.get("languages") or {}).get(dest.lang)
    if own is None:
        return
    if not own.get("machine_translated", False):
        raise SelfAlignError(
            f"survey {survey_name} already has language {dest.lang!r} ({own.get('name', dest.lang)}, "
            "not machine-translated)"
        )
    if dest.kind == "overlay":
        raise SelfAlignError(
            f"survey {survey_name} already has a machine translation into {dest.lang!r} in its read-only folder "
            f"{folder}; pass --out DIR to work on a copy of the survey"
        )
