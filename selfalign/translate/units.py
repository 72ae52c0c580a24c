"""What a survey translation is made of: one request ("unit") per question, shared label set and answer words."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from selfalign.survey import Survey

LABEL_CHUNK = 40  # longer label sets (e.g. party lists) are sent in chunks of this many labels

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


def language_name(code: str) -> str:
    """An English name for a language code (``"pt-BR"`` -> ``"Portuguese (BR)"``), else the code itself."""
    base, _, region = code.partition("-")
    name = LANGUAGE_NAMES.get(base.lower())
    if name is None:
        return code
    return f"{name} ({region})" if region else name


def sha(data: object) -> str:
    """A short, stable hash of JSON-ready data."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


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
        digest = sha({"src": source_lang, "tgt": target_lang, "kind": kind, "payload": payload, "context": context})
        units.append(Unit(key, kind, payload, tuple(questions), digest, context))

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
            set_id = sha(labels)[:12]
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
