"""Machine translation of a survey into another language, through the model layer (``selfalign translate``).

:func:`translate_survey` translates a survey's question wordings, binary statements, option labels and the
binary protocol's answer words ("agree" / "disagree") from a source language into a new language with any
model (:meth:`selfalign.models.ModelClient.complete`, cached), and writes a reviewable language file marked
machine-translated, which then loads as another language of the survey.

Work is split into requests ("units"), each one JSON object sent to the model and expected back with the
same keys, translated:

- one per question: ``{"question", "statement", "options"}`` (``options`` only when the question's label set
  is its own);
- one per label set shared by several questions (or per chunk of :data:`LABEL_CHUNK` labels of a long one),
  translated once and reused, with the first question using it as untranslated context;
- one for the answer words.

An off-format reply is retried once with a correction turn; a unit that still fails fails the questions that
need it and the others go on. Every finished unit is appended to a partial file as it arrives, so an
interrupted or partly failed run loses nothing: a re-run translates only what is missing (units that failed
before are asked again without the cache), and a complete translation makes no model call at all.

Where the result goes (:func:`choose_destination`): into the survey folder (``text/<lang>.jsonl`` and a
``[languages.<lang>]`` table in ``survey.toml``) when the folder is writable and not shipped inside an
installed package; otherwise into the user's translations folder
(``<user data>/translations/<survey>/<lang>.jsonl`` + ``<lang>.meta.toml``), which
:func:`selfalign.loaders.load_survey` merges as extra languages. ``out`` writes into a survey folder of its
own (a copy of the survey is made there first).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import sysconfig
import tomllib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from selfalign.errors import ModelError, SelfAlignError, SurveyFormatError
from selfalign.loaders import load_bundled, survey_name_of, survey_path, user_translations_dir
from selfalign.loaders.bundled import LANGUAGE_CODE, OVERLAY_META_SUFFIX, _toml_value, _write_toml
from selfalign.survey import Survey

LABEL_CHUNK = 40  # longer label sets (e.g. party lists) are sent in chunks of this many labels
PARTIAL_SUFFIX = ".partial.jsonl"
NOT_REVIEWED = "not reviewed"
ANSWER_WORDS = "answer words"  # the key of report.failed when the agree/disagree words failed
MAX_TOKENS_CAP = 8192

LANGUAGE_NAMES: dict[str, str] = {
    "af": "Afrikaans",
    "am": "Amharic",
    "ar": "Arabic",
    "az": "Azerbaijani",
    "be": "Belarusian",
    "bg": "Bulgarian",
    "bn": "Bengali",
    "bs": "Bosnian",
    "ca": "Catalan",
    "cs": "Czech",
    "cy": "Welsh",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "eu": "Basque",
    "fa": "Persian",
    "fi": "Finnish",
    "fil": "Filipino",
    "fr": "French",
    "ga": "Irish",
    "gl": "Galician",
    "gu": "Gujarati",
    "ha": "Hausa",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "hu": "Hungarian",
    "hy": "Armenian",
    "id": "Indonesian",
    "ig": "Igbo",
    "is": "Icelandic",
    "it": "Italian",
    "ja": "Japanese",
    "ka": "Georgian",
    "kk": "Kazakh",
    "km": "Khmer",
    "kn": "Kannada",
    "ko": "Korean",
    "ky": "Kyrgyz",
    "lo": "Lao",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "mk": "Macedonian",
    "ml": "Malayalam",
    "mn": "Mongolian",
    "mr": "Marathi",
    "ms": "Malay",
    "my": "Burmese",
    "ne": "Nepali",
    "nl": "Dutch",
    "no": "Norwegian",
    "pa": "Punjabi",
    "pl": "Polish",
    "ps": "Pashto",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "si": "Sinhala",
    "sk": "Slovak",
    "sl": "Slovenian",
    "so": "Somali",
    "sq": "Albanian",
    "sr": "Serbian",
    "sv": "Swedish",
    "sw": "Swahili",
    "ta": "Tamil",
    "te": "Telugu",
    "tg": "Tajik",
    "th": "Thai",
    "tl": "Tagalog",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "uz": "Uzbek",
    "vi": "Vietnamese",
    "yo": "Yoruba",
    "zh": "Chinese (Simplified)",
    "zu": "Zulu",
}

UnitKind = Literal["words", "labels", "question"]


class TranslationError(SelfAlignError):
    """A translation that could not be completed: names the questions that failed and where progress is."""


class OffFormatReply(ValueError):
    """A model reply that is not the requested JSON object; the message says what is wrong."""


def language_name(code: str) -> str:
    """An English name for a language code (``"pt-BR"`` -> ``"Portuguese (BR)"``), else the code itself."""
    base, _, region = code.partition("-")
    name = LANGUAGE_NAMES.get(base.lower())
    if name is None:
        return code
    return f"{name} ({region})" if region else name


def _sha(data: object) -> str:
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --- units -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One translation request: ``payload`` is sent as JSON and expected back with the same keys.

    ``context`` (label sets only) is the question the labels belong to, shown but not translated;
    ``questions`` are the ids whose translation needs this unit; ``sha`` identifies the source text and the
    language pair, so that work saved by an earlier run is reused only for the same source.
    """

    key: str
    kind: UnitKind
    payload: dict[str, Any]
    questions: tuple[str, ...]
    sha: str
    context: str | None = None

    @property
    def n_options(self) -> int:
        """How many option labels the reply must hold (0 when the unit has none)."""
        return len(self.payload.get("options") or ())


def build_units(survey: Survey, source_lang: str, target_lang: str) -> list[Unit]:
    """The requests that translate ``survey`` from ``source_lang`` into ``target_lang``, in survey order."""
    agree, disagree = survey.side_labels(source_lang)
    units: list[Unit] = []

    def add(key: str, kind: UnitKind, payload: dict[str, Any], questions: Sequence[str], context: str | None) -> None:
        sha = _sha({"src": source_lang, "tgt": target_lang, "kind": kind, "payload": payload, "context": context})
        units.append(Unit(key, kind, payload, tuple(questions), sha, context))

    add("words", "words", {"agree": agree, "disagree": disagree}, [q.id for q in survey.questions if q.binary], None)
    users: dict[tuple[str, ...], list[str]] = {}
    for q in survey.questions:
        users.setdefault(q.option_labels(source_lang), []).append(q.id)
    shared = {labels for labels, ids in users.items() if len(ids) > 1 or len(labels) > LABEL_CHUNK}
    done_sets: set[tuple[str, ...]] = set()
    for q in survey.questions:
        labels = q.option_labels(source_lang)
        if labels in shared and labels not in done_sets:
            done_sets.add(labels)
            set_id = _sha(labels)[:12]
            for part, start in enumerate(range(0, len(labels), LABEL_CHUNK)):
                chunk = list(labels[start : start + LABEL_CHUNK])
                add(f"labels:{set_id}:{part}", "labels", {"options": chunk}, users[labels], q.text(source_lang))
        payload: dict[str, Any] = {"question": q.text(source_lang)}
        if q.binary is not None:
            payload["statement"] = q.binary.statement(source_lang)
        if labels not in shared:
            payload["options"] = list(labels)
        add(f"question:{q.id}", "question", payload, [q.id], None)
    return units


# --- prompts and replies -------------------------------------------------------------------------------
_ROLES = {
    "question": (
        "'question' is a survey question, 'statement' (if present) a first-person statement that respondents "
        "agree or disagree with, and 'options' (if present) the question's answer options in order."
    ),
    "labels": (
        "'options' are the answer options, in order, of the survey question given in 'context'. Use the "
        "context to choose words and grammatical forms, but translate only 'options' and leave 'context' out "
        "of your reply."
    ),
    "words": (
        "'agree' and 'disagree' are the short answers a respondent gives to agree or to disagree with a "
        "statement (e.g. 'I agree'); keep them short."
    ),
}


def messages_for(unit: Unit, source_name: str, target_name: str, target_code: str) -> list[dict[str, str]]:
    """The chat messages that ask the model to translate ``unit``."""
    keys = ", ".join(f"'{k}'" for k in unit.payload)
    system = (
        "You are a professional translator of social-science survey questionnaires. Translate from "
        f"{source_name} into {target_name} (language code {target_code}). Write natural, neutral "
        f"{target_name}, as a native speaker would in a printed survey, keeping the exact meaning, the scale "
        f"direction and any negation. You receive a JSON object; {_ROLES[unit.kind]} Translate the values "
        f"of {keys}, keep the keys and the number and order of list items, keep numbers and proper names as "
        "they are, and reply with the translated JSON object only, without any explanation."
    )
    body = dict(unit.payload)
    if unit.context is not None:
        body = {"context": unit.context, **body}
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": json.dumps(body, ensure_ascii=False, indent=1)},
    ]


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        if stripped.rstrip().endswith("```"):
            stripped = stripped.rstrip()[:-3]
    return stripped.strip()


def parse_reply(text: str, unit: Unit) -> dict[str, Any]:
    """The translated fields of ``unit`` from a model reply; raises :class:`OffFormatReply` saying what is wrong.

    Accepts the JSON object alone, in a code fence, or surrounded by text (the first object that parses is
    used); ``options`` may come back as a list or as an object with one entry per option. A question or the
    answer words sent back unchanged count as off-format (not translated).
    """
    body = _strip_fences(text)
    data = _first_object(body)
    result: dict[str, Any] = {}
    for key, source in unit.payload.items():
        value = data.get(key)
        if key == "options":
            if isinstance(value, dict):
                value = list(value.values())
            if not isinstance(value, list) or len(value) != len(source):
                got = len(value) if isinstance(value, list) else "no"
                raise OffFormatReply(f"'options' must list {len(source)} labels, got {got}")
            if any(not isinstance(v, str) or not v.strip() for v in value):
                raise OffFormatReply("an option label is empty or not a string")
            result[key] = [v.strip() for v in value]
        else:
            if not isinstance(value, str) or not value.strip():
                raise OffFormatReply(f"'{key}' is missing or empty")
            result[key] = value.strip()
    # a wording that comes back as it was sent was not translated (labels may be names, left as they are)
    if unit.kind != "labels" and all(_same(result[k], v) for k, v in unit.payload.items() if isinstance(v, str)):
        raise OffFormatReply("the reply repeats the source text untranslated")
    return result


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _first_object(body: str) -> dict[str, Any]:
    """The first JSON object in ``body`` (text before or after it is ignored)."""
    decoder = json.JSONDecoder()
    start = body.find("{")
    if start < 0:
        raise OffFormatReply("the reply holds no JSON object")
    problem = ""
    while start >= 0:
        try:
            data, _ = decoder.raw_decode(body, start)
        except json.JSONDecodeError as exc:
            problem = problem or exc.msg
        else:
            if isinstance(data, dict):
                return data
        start = body.find("{", start + 1)
    raise OffFormatReply(f"the reply is not valid JSON ({problem})")


def correction_turn(raw: str, problem: str, unit: Unit) -> list[dict[str, str]]:
    """The turns appended for the one retry of an off-format reply."""
    keys = ", ".join(f"'{k}'" for k in unit.payload)
    need = f" and exactly {unit.n_options} option labels" if unit.n_options else ""
    return [
        {"role": "assistant", "content": raw},
        {
            "role": "user",
            "content": f"That reply could not be used: {problem}. Reply again with only the JSON object, with "
            f"the keys {keys}{need}.",
        },
    ]


# --- where translations go -----------------------------------------------------------------------------
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


def _inside_installed_package(folder: Path) -> bool:
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
    if _writable(survey_folder) and not _inside_installed_package(survey_folder):
        return Destination("survey", survey_folder, survey_folder, lang)
    overlay = user_translations_dir(survey_name_of(survey_folder))
    return Destination("overlay", overlay, survey_folder, lang)


# --- saved work -------------------------------------------------------------------------------------------
@dataclass
class _Saved:
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


def _existing_meta(dest: Destination) -> dict[str, Any]:
    if not dest.meta_file.exists():
        return {}
    try:
        data = tomllib.loads(dest.meta_file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SurveyFormatError(dest.meta_file, f"not valid TOML ({exc})") from None
    if dest.kind == "survey":
        return dict((data.get("languages") or {}).get(dest.lang) or {})
    return data


def _load_saved(dest: Destination, units: Sequence[Unit]) -> _Saved:
    saved = _Saved()
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
    meta = _existing_meta(dest)
    if meta:
        saved.final_meta = meta
        for record in _read_lines(dest.text_file):
            if "id" in record:
                saved.final[str(record["id"])] = record
    return saved


def _from_final(unit: Unit, survey: Survey, saved: _Saved) -> dict[str, Any] | None:
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


# --- running -------------------------------------------------------------------------------------------
@dataclass
class TranslationReport:
    """What :func:`translate_survey` did.

    ``written`` is the finished language file, or None when some questions failed (``failed`` maps their
    ids to the reason; the rest is kept in ``destination.partial_file``). ``calls`` counts requests that
    reached the model (retries included), ``cache_hits`` replies served from the model cache, ``reused``
    units taken from earlier runs' files without asking the model.
    """

    survey: str
    lang: str
    name: str
    destination: Destination
    units: int
    translated: int = 0
    reused: int = 0
    calls: int = 0
    cache_hits: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    written: Path | None = None
    models: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether the language file was written."""
        return self.written is not None


def _translate_unit(client: Any, unit: Unit, source_name: str, target_name: str, target_code: str) -> dict[str, Any]:
    """Ask the model for one unit; one retry with a correction turn on an off-format reply."""
    messages = messages_for(unit, source_name, target_name, target_code)
    size = sum(len(m["content"]) for m in messages[1:])
    max_tokens = min(MAX_TOKENS_CAP, 256 + 2 * size)
    raw = client.complete(messages, max_tokens=max_tokens, temperature=0.0)
    try:
        return parse_reply(raw, unit)
    except OffFormatReply as first:
        retry = messages + correction_turn(raw, str(first), unit)
        raw = client.complete(retry, max_tokens=max_tokens, temperature=0.0)
        try:
            return parse_reply(raw, unit)
        except OffFormatReply as second:
            raise OffFormatReply(f"off-format reply twice ({second})") from None


def _assemble(survey: Survey, units: Sequence[Unit], results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
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


def _meta_fields(name: str, words: dict[str, Any], models: Sequence[str], source_lang: str, day: str) -> dict:
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


def _publish(dest: Destination, records: list[dict[str, Any]], fields: dict[str, Any]) -> None:
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


ProgressFn = Callable[[int, int, Unit, str | None], None]


def _check_target(folder: Path, dest: Destination, survey_name: str) -> None:
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


@dataclass
class _Run:
    """The outcome of asking the model for the missing units."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    cache_hits: int = 0


def _run_units(
    todo: Sequence[Unit],
    retry_fresh: set[str],
    model: str,
    api_base: str | None,
    cache_dir: str | Path | None,
    concurrency: int,
    partial_file: Path,
    names: tuple[str, str, str],
    progress: ProgressFn | None,
) -> _Run:
    """Translate ``todo`` with ``concurrency`` requests in flight, appending each outcome to ``partial_file``.

    Units in ``retry_fresh`` (they failed in an earlier run) are asked without the model cache.
    """
    from selfalign.models.client import ModelClient

    run = _Run()
    cached = ModelClient(model, api_base=api_base, cache=cache_dir if cache_dir is not None else None)
    fresh = ModelClient(model, api_base=api_base, cache=False)
    partial_file.parent.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="translate")
    try:
        with partial_file.open("a", encoding="utf-8") as log:
            futures = {
                pool.submit(_translate_unit, fresh if u.key in retry_fresh else cached, u, *names): u for u in todo
            }
            for done, future in enumerate(as_completed(futures), start=1):
                unit = futures[future]
                error: str | None = None
                entry: dict[str, Any] = {"key": unit.key, "sha": unit.sha, "model": model}
                try:
                    entry["result"] = run.results[unit.key] = future.result()
                except (OffFormatReply, ModelError) as exc:
                    entry["failed"] = run.failed[unit.key] = error = str(exc)
                log.write(json.dumps(entry, ensure_ascii=False) + "\n")
                log.flush()
                if progress is not None:
                    progress(done, len(todo), unit, error)
    finally:  # on an interruption, drop what has not started; what finished is in the partial file
        pool.shutdown(wait=True, cancel_futures=True)
        run.calls = cached.stats.calls + fresh.stats.calls
        run.cache_hits = cached.stats.cache_hits
    return run


def _failed_questions(units: Sequence[Unit], failed: dict[str, str]) -> dict[str, str]:
    by_question: dict[str, str] = {}
    for unit in units:
        if unit.key not in failed:
            continue
        if unit.kind == "words":
            by_question.setdefault(ANSWER_WORDS, failed[unit.key])
            continue
        reason = f"shared option labels: {failed[unit.key]}" if unit.kind == "labels" else failed[unit.key]
        for qid in unit.questions:
            by_question.setdefault(qid, reason)
    return by_question


def translate_survey(
    survey: str | Path,
    lang: str,
    model: str,
    *,
    api_base: str | None = None,
    source_lang: str = "en",
    name: str | None = None,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    concurrency: int = 4,
    progress: ProgressFn | None = None,
    today: date | None = None,
) -> TranslationReport:
    """Translate ``survey`` into ``lang`` with ``model`` and write it as a machine-translated language.

    Returns a :class:`TranslationReport`; when some units fail the finished part is kept in the partial
    file and ``report.failed`` names the questions (the CLI turns that into an error). ``progress(done,
    total, unit, error)`` is called after each unit the model was asked for. A language whose finished file
    already covers everything is left as it is (a reviewer's edits stay).
    """
    if not LANGUAGE_CODE.match(lang):
        raise SelfAlignError(f"{lang!r} is not a language code (e.g. fr, pt-BR, zh)")
    if concurrency < 1:
        raise SelfAlignError(f"concurrency must be at least 1, not {concurrency}")
    source_folder = survey_path(survey)
    dest = choose_destination(source_folder, lang, out)
    copy_needed = not (dest.survey_folder / "survey.toml").is_file()
    folder = source_folder if copy_needed else dest.survey_folder
    survey_name = survey_name_of(folder)
    _check_target(folder, dest, survey_name)
    overlay = user_translations_dir(survey_name) if dest.kind == "overlay" else None
    base = load_bundled(folder, overlay_dir=overlay, skip_languages={lang})
    source_lang = base.resolve_language(source_lang)
    if source_lang == lang:
        raise SelfAlignError(f"the source and target language are both {lang!r}")
    target_name = name or str(_existing_meta(dest).get("name") or "") or language_name(lang)
    source_name = base.languages_info[source_lang].name

    units = build_units(base, source_lang, lang)
    saved = _load_saved(dest, units)
    report = TranslationReport(survey_name, lang, target_name, dest, len(units))
    results: dict[str, dict[str, Any]] = {}
    models: set[str] = set()
    from_final = 0
    todo: list[Unit] = []
    for unit in units:
        earlier = _from_final(unit, base, saved)
        if earlier is not None:
            results[unit.key] = earlier
            models.update(saved.final_meta.get("models") or [])
            from_final += 1
        elif unit.key in saved.done:
            results[unit.key] = saved.done[unit.key]["result"]
            models.add(str(saved.done[unit.key].get("model", model)))
        else:
            todo.append(unit)
    report.reused = len(results)
    if from_final == len(units) and (name is None or name == saved.final_meta.get("name")):
        report.models = tuple(sorted(models)) or tuple(saved.final_meta.get("models") or ())
        report.written = dest.text_file
        return report

    if copy_needed:
        shutil.copytree(
            source_folder, dest.survey_folder, ignore=shutil.ignore_patterns(f"*{PARTIAL_SUFFIX}"), dirs_exist_ok=True
        )
    if todo:
        run = _run_units(
            todo,
            saved.failed,
            model,
            api_base,
            cache_dir,
            concurrency,
            dest.partial_file,
            (source_name, target_name, lang),
            progress,
        )
        results.update(run.results)
        report.translated, report.calls, report.cache_hits = len(run.results), run.calls, run.cache_hits
        report.failed = _failed_questions(units, run.failed)
        if run.results:
            models.add(model)
    report.models = tuple(sorted(models)) or (model,)
    if report.failed:
        return report
    records = _assemble(base, units, results)
    day = (today or date.today()).isoformat()
    _publish(dest, records, _meta_fields(target_name, results["words"], report.models, source_lang, day))
    report.written = dest.text_file
    return report
