"""Rendering a probe (question, options, persona, demonstrations) for base and chat models, per language.

The same content is rendered twice (see :class:`selfalign.models.types.RenderedPrompt`):

- a plain transcript for base models (the embedded Gemma 3 270M), ending in the answer cue (``Answer:``) so
  that each option's text is scored as the continuation;
- chat messages for chat models, with options labelled A, B, C... and demonstrations as earlier turns.

A *template* is the scaffolding around question, options and answer (:data:`TEMPLATE_NAMES`):

- ``default``: ``Question: ...`` / ``Options: a / b / c`` / ``Answer:`` (the project's prompt since the start);
- ``list``: the same words, the options one per line (``- a``; chat: ``(A) a``);
- ``interview``: an interview transcript, ``Interviewer: ... (a, b or c)`` / ``Respondent:``, with its own
  instruction line.

Every template's words exist in every bundled language, so that a probe in Arabic is Arabic throughout (a
language without them is shown the English words, as before). A binary statement is introduced by the question
that fits the answer words shown: "Do you agree or disagree with ...?" for the survey's agree/disagree words,
"Is the following statement true for you?" for yes/no, "... true or false?" for true/false
(:data:`ANSWER_WORDS`, :func:`answer_word_set`). Demonstrations are rendered with the test question's template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.models.types import LETTERS, RenderedPrompt

DEFAULT_TEMPLATE = "default"
TEMPLATE_NAMES: tuple[str, ...] = (DEFAULT_TEMPLATE, "list", "interview")
"""The prompt templates (see the module docstring); ``default`` is the project's original prompt."""


@dataclass(frozen=True)
class Scaffolding:
    """Scaffolding words of a prompt in one language (those of every template but the interview's own)."""

    question: str
    options: str
    answer: str
    statement_question: str  # the question that introduces a binary statement; {statement} is replaced
    persona: str  # {country} is replaced
    instruction: str
    chat_answer_hint: str  # asks a chat model to reply with the option's letter
    separator: str = " / "


SCAFFOLDING: dict[str, Scaffolding] = {
    "en": Scaffolding(
        "Question",
        "Options",
        "Answer",
        'Do you agree or disagree with the following statement? "{statement}"',
        "The answers are given by an average person from {country}.",
        "Answers to a values survey.",
        "Reply with the letter of one option only.",
    ),
    "de": Scaffolding(
        "Frage",
        "Antwortmöglichkeiten",
        "Antwort",
        "Stimmen Sie der folgenden Aussage zu oder nicht? „{statement}“",
        "Die Antworten gibt eine durchschnittliche Person aus {country}.",
        "Antworten auf eine Werteumfrage.",
        "Antworten Sie nur mit dem Buchstaben einer Antwortmöglichkeit.",
    ),
    "es": Scaffolding(
        "Pregunta",
        "Opciones",
        "Respuesta",
        "¿Está de acuerdo o en desacuerdo con la siguiente afirmación? «{statement}»",
        "Las respuestas las da una persona promedio de {country}.",
        "Respuestas a una encuesta de valores.",
        "Responda solo con la letra de una opción.",
    ),
    "pt": Scaffolding(
        "Pergunta",
        "Opções",
        "Resposta",
        "Você concorda ou discorda da seguinte afirmação? “{statement}”",
        "As respostas são dadas por uma pessoa média de {country}.",
        "Respostas a uma pesquisa sobre valores.",
        "Responda apenas com a letra de uma opção.",
    ),
    "ru": Scaffolding(
        "Вопрос",
        "Варианты",
        "Ответ",
        "Вы согласны или не согласны со следующим утверждением? «{statement}»",
        "Отвечает типичный житель страны: {country}.",
        "Ответы на опрос о ценностях.",
        "Ответьте только буквой одного варианта.",
    ),
    "zh": Scaffolding(
        "问题",
        "选项",
        "回答",
        "您同意还是不同意以下说法？“{statement}”",
        "回答者是一位来自{country}的普通人。",
        "价值观调查的回答。",
        "只回答一个选项的字母。",
        separator=" / ",
    ),
    "ja": Scaffolding(
        "質問",
        "選択肢",
        "回答",
        "次の意見に賛成ですか、反対ですか。「{statement}」",
        "回答者は{country}の平均的な人です。",
        "価値観に関する調査への回答。",
        "選択肢の記号を一つだけ答えてください。",
    ),
    "ar": Scaffolding(
        "السؤال",
        "الخيارات",
        "الإجابة",
        "هل توافق أو لا توافق على العبارة التالية؟ «{statement}»",
        "يجيب شخص عادي من {country}.",
        "إجابات على استطلاع للقيم.",
        "أجب بحرف خيار واحد فقط.",
    ),
    "hi": Scaffolding(
        "प्रश्न",
        "विकल्प",
        "उत्तर",
        "क्या आप निम्नलिखित कथन से सहमत हैं या असहमत? “{statement}”",
        "उत्तर {country} का एक औसत व्यक्ति दे रहा है।",
        "मूल्यों के एक सर्वेक्षण के उत्तर।",
        "केवल एक विकल्प के अक्षर से उत्तर दें।",
    ),
    "tr": Scaffolding(
        "Soru",
        "Seçenekler",
        "Cevap",
        "Aşağıdaki ifadeye katılıyor musunuz, katılmıyor musunuz? “{statement}”",
        "Cevapları {country} ülkesinden ortalama bir kişi veriyor.",
        "Bir değerler anketine verilen cevaplar.",
        "Yalnızca bir seçeneğin harfiyle cevap verin.",
    ),
    "sw": Scaffolding(
        "Swali",
        "Chaguo",
        "Jibu",
        "Je, unakubali au hukubaliani na kauli ifuatayo? “{statement}”",
        "Majibu yanatolewa na mtu wa kawaida kutoka {country}.",
        "Majibu ya utafiti kuhusu maadili.",
        "Jibu kwa herufi ya chaguo moja tu.",
    ),
}


@dataclass(frozen=True)
class InterviewWords:
    """The words of the ``interview`` template in one language."""

    interviewer: str
    respondent: str
    instruction: str
    list_separator: str  # between options shown inline, before the last one
    last_separator: str  # before the last option ("a, b or c")
    brackets: tuple[str, str] = (" (", ")")


INTERVIEW: dict[str, InterviewWords] = {
    "en": InterviewWords("Interviewer", "Respondent", "An interview for a values survey.", ", ", " or "),
    "de": InterviewWords("Interviewer", "Befragte Person", "Ein Interview für eine Werteumfrage.", ", ", " oder "),
    "es": InterviewWords(
        "Entrevistador", "Persona entrevistada", "Una entrevista para una encuesta de valores.", ", ", " o "
    ),
    "pt": InterviewWords(
        "Entrevistador", "Pessoa entrevistada", "Uma entrevista para uma pesquisa sobre valores.", ", ", " ou "
    ),
    "ru": InterviewWords("Интервьюер", "Респондент", "Интервью для опроса о ценностях.", ", ", " или "),
    "zh": InterviewWords("采访者", "受访者", "一次价值观调查的访谈。", "、", "或", ("（", "）")),
    "ja": InterviewWords(
        "インタビュアー", "回答者", "価値観に関する調査のインタビュー。", "、", "、または", ("（", "）")
    ),
    "ar": InterviewWords("المحاور", "المجيب", "مقابلة لاستطلاع عن القيم.", "، ", " أو "),
    "hi": InterviewWords("साक्षात्कारकर्ता", "उत्तरदाता", "मूल्यों के एक सर्वेक्षण के लिए साक्षात्कार।", ", ", " या "),
    "tr": InterviewWords("Görüşmeci", "Katılımcı", "Bir değerler anketi için görüşme.", ", ", " veya "),
    "sw": InterviewWords("Mhojaji", "Mhojiwa", "Mahojiano ya utafiti kuhusu maadili.", ", ", " au "),
}


DEFAULT_ANSWER_WORDS = "agree-disagree"
ANSWER_WORD_SETS: tuple[str, ...] = (DEFAULT_ANSWER_WORDS, "yes-no", "true-false")
"""The answer-word sets of the binary protocol: the survey's own agree/disagree words (its ``[languages.*]``
table), yes/no and true/false."""


@dataclass(frozen=True)
class AnswerWords:
    """A pair of answer words for a binary statement in one language, and the question that introduces the
    statement with them ({statement} is replaced). ``positive`` stands for the survey's "agree" side."""

    positive: str
    negative: str
    statement_question: str


ANSWER_WORDS: dict[str, dict[str, AnswerWords]] = {
    "yes-no": {
        "en": AnswerWords("yes", "no", 'Is the following statement true for you? "{statement}"'),
        "de": AnswerWords("ja", "nein", "Trifft die folgende Aussage auf Sie zu? „{statement}“"),
        "es": AnswerWords("sí", "no", "¿La siguiente afirmación es cierta en su caso? «{statement}»"),
        "pt": AnswerWords("sim", "não", "A seguinte afirmação é verdadeira para você? “{statement}”"),
        "ru": AnswerWords("да", "нет", "Верно ли следующее утверждение в вашем случае? «{statement}»"),
        "zh": AnswerWords("是", "否", "以下说法是否符合您的情况？“{statement}”"),
        "ja": AnswerWords("はい", "いいえ", "次の文はあなたに当てはまりますか。「{statement}」"),
        "ar": AnswerWords("نعم", "لا", "هل تنطبق عليك العبارة التالية؟ «{statement}»"),
        "hi": AnswerWords("हाँ", "नहीं", "क्या निम्नलिखित कथन आप पर लागू होता है? “{statement}”"),
        "tr": AnswerWords("evet", "hayır", "Aşağıdaki ifade sizin için geçerli mi? “{statement}”"),
        "sw": AnswerWords("ndiyo", "hapana", "Je, kauli ifuatayo ni kweli kwako? “{statement}”"),
    },
    "true-false": {
        "en": AnswerWords("true", "false", 'In your view, is the following statement true or false? "{statement}"'),
        "de": AnswerWords(
            "wahr", "falsch", "Ist die folgende Aussage Ihrer Meinung nach wahr oder falsch? „{statement}“"
        ),
        "es": AnswerWords("verdadero", "falso", "En su opinión, ¿es verdadero o falso lo siguiente? «{statement}»"),
        "pt": AnswerWords("verdadeiro", "falso", "Na sua opinião, o que se segue é verdadeiro ou falso? “{statement}”"),
        "ru": AnswerWords(
            "верно", "неверно", "По вашему мнению, следующее утверждение верно или неверно? «{statement}»"
        ),
        "zh": AnswerWords("正确", "错误", "您认为以下说法正确还是错误？“{statement}”"),
        "ja": AnswerWords("正しい", "間違い", "あなたの考えでは、次の文は正しいですか、間違いですか。「{statement}」"),
        "ar": AnswerWords("صحيح", "خطأ", "في رأيك، هل ما يلي صحيح أم خطأ؟ «{statement}»"),
        "hi": AnswerWords("सही", "गलत", "आपकी राय में, निम्नलिखित कथन सही है या गलत? “{statement}”"),
        "tr": AnswerWords("doğru", "yanlış", "Size göre aşağıdaki ifade doğru mu, yanlış mı? “{statement}”"),
        "sw": AnswerWords(
            "kweli", "si kweli", "Kwa maoni yako, je, kauli ifuatayo ni kweli au si kweli? “{statement}”"
        ),
    },
}
"""The yes/no and true/false words per bundled language (the agree/disagree words are the survey's own)."""


# Country names in the country's own language, for personas in that language.
NATIVE_COUNTRY_NAMES: dict[str, dict[str, str]] = {
    "de": {"DEU": "Deutschland"},
    "es": {
        "ARG": "Argentina",
        "BOL": "Bolivia",
        "CHL": "Chile",
        "COL": "Colombia",
        "ECU": "Ecuador",
        "GTM": "Guatemala",
        "MEX": "México",
        "NIC": "Nicaragua",
        "PRI": "Puerto Rico",
        "URY": "Uruguay",
        "VEN": "Venezuela",
        "AND": "Andorra",
    },
    "pt": {"BRA": "Brasil"},
    "ru": {"RUS": "Россия", "KAZ": "Казахстан", "KGZ": "Кыргызстан", "UKR": "Украина", "TJK": "Таджикистан"},
    "zh": {"CHN": "中国", "TWN": "台湾", "MAC": "澳门", "SGP": "新加坡"},
    "ja": {"JPN": "日本"},
    "ar": {"EGY": "مصر", "IRQ": "العراق", "JOR": "الأردن", "LBY": "ليبيا", "MAR": "المغرب", "TUN": "تونس"},
    "hi": {"IND": "भारत"},
    "tr": {"TUR": "Türkiye"},
    "sw": {"KEN": "Kenya"},
}


def scaffolding(lang: str) -> Scaffolding:
    """The scaffolding words of ``lang`` (English for a language without them)."""
    return SCAFFOLDING.get(lang, SCAFFOLDING["en"])


def check_template(name: str) -> str:
    """``name`` if it is a template, else :class:`UnknownChoiceError` listing the templates."""
    if name not in TEMPLATE_NAMES:
        raise UnknownChoiceError("template", name, TEMPLATE_NAMES, list_all=True)
    return name


def check_answer_words(name: str) -> str:
    """``name`` if it is an answer-word set, else :class:`UnknownChoiceError` listing the sets."""
    if name not in ANSWER_WORD_SETS:
        raise UnknownChoiceError("answer words", name, ANSWER_WORD_SETS, list_all=True)
    return name


def answer_words(name: str, lang: str, survey_words: tuple[str, str]) -> tuple[str, str]:
    """The (positive, negative) words of set ``name`` in ``lang``; ``agree-disagree`` gives ``survey_words``
    (the survey's own). A set without words for ``lang`` (a translated language) is a one-line error."""
    if check_answer_words(name) == DEFAULT_ANSWER_WORDS:
        return survey_words
    by_lang = ANSWER_WORDS[name]
    if lang not in by_lang:
        raise SelfAlignError(
            f"answer words {name!r} are not written for language {lang!r}; they exist for "
            f"{', '.join(sorted(by_lang))} ({DEFAULT_ANSWER_WORDS!r} works in every language)"
        )
    words = by_lang[lang]
    return (words.positive, words.negative)


def answer_word_set(options: Sequence[str], lang: str) -> str:
    """Which answer-word set a binary item's options are (in any order): ``yes-no``, ``true-false``, or
    ``agree-disagree`` (the survey's words, and any other pair)."""
    shown = set(options)
    for name, by_lang in ANSWER_WORDS.items():
        words = by_lang.get(lang)
        if words is not None and shown == {words.positive, words.negative}:
            return name
    return DEFAULT_ANSWER_WORDS


def persona_sentence(country_code: str, country_name: str, lang: str) -> str:
    """The persona sentence for a country, in ``lang``."""
    name = NATIVE_COUNTRY_NAMES.get(lang, {}).get(country_code, country_name)
    return scaffolding(lang).persona.format(country=name)


@dataclass(frozen=True)
class Item:
    """One question as shown in a prompt: its text (question or statement) and option labels, in a language."""

    text: str
    options: tuple[str, ...]
    lang: str
    binary: bool = False


@dataclass(frozen=True)
class ShownDemonstration:
    """A demonstration as shown: the item and the answer text."""

    item: Item
    answer: str


def _question_line(item: Item) -> str:
    if not item.binary:
        return item.text
    words = answer_word_set(item.options, item.lang)
    if words == DEFAULT_ANSWER_WORDS:
        return scaffolding(item.lang).statement_question.format(statement=item.text)
    return ANSWER_WORDS[words][item.lang].statement_question.format(statement=item.text)


def _interview(lang: str) -> InterviewWords:
    return INTERVIEW.get(lang, INTERVIEW["en"])


def _inline(options: Sequence[str], words: InterviewWords) -> str:
    """``"a, b or c"`` in the interview's language, in brackets."""
    listed = options[0] if len(options) == 1 else words.list_separator.join(options[:-1])
    if len(options) > 1:
        listed += words.last_separator + options[-1]
    return f"{words.brackets[0]}{listed}{words.brackets[1]}"


def _text_block(item: Item, answer: str | None, template: str = DEFAULT_TEMPLATE) -> str:
    shown = f" {answer}" if answer is not None else ""
    if template == "interview":
        words = _interview(item.lang)
        return f"{words.interviewer}: {_question_line(item)}{_inline(item.options, words)}\n{words.respondent}:{shown}"
    tpl = scaffolding(item.lang)
    if template == "list":
        options = "\n".join(f"- {label}" for label in item.options)
        return f"{tpl.question}: {_question_line(item)}\n{tpl.options}:\n{options}\n{tpl.answer}:{shown}"
    lines = [
        f"{tpl.question}: {_question_line(item)}",
        f"{tpl.options}: {tpl.separator.join(item.options)}",
        f"{tpl.answer}:" + shown,
    ]
    return "\n".join(lines)


def _chat_question(item: Item, template: str = DEFAULT_TEMPLATE) -> str:
    tpl = scaffolding(item.lang)
    if template == "interview":
        lettered = "\n".join(f"{LETTERS[i]}) {label}" for i, label in enumerate(item.options))
        return f"{_interview(item.lang).interviewer}: {_question_line(item)}\n{lettered}\n{tpl.chat_answer_hint}"
    if template == "list":
        lettered = "\n".join(f"({LETTERS[i]}) {label}" for i, label in enumerate(item.options))
        return f"{tpl.question}: {_question_line(item)}\n{tpl.options}:\n{lettered}\n{tpl.chat_answer_hint}"
    lettered = "\n".join(f"{LETTERS[i]}. {label}" for i, label in enumerate(item.options))
    return f"{_question_line(item)}\n{lettered}\n{tpl.chat_answer_hint}"


def _letter_of(item: Item, answer: str) -> str:
    """The letter of a demonstration's answer; a distribution in words is shown as it is."""
    if answer in item.options:
        return LETTERS[item.options.index(answer)]
    return answer


def default_instruction(lang: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The instruction line a template opens with in ``lang``."""
    if template == "interview":
        return _interview(lang).instruction
    return scaffolding(lang).instruction


def render(
    item: Item,
    *,
    persona: str | None = None,
    demonstrations: Sequence[ShownDemonstration] = (),
    instruction: str | None = None,
    template: str = DEFAULT_TEMPLATE,
) -> RenderedPrompt:
    """Render one probe for base models (transcript) and chat models (messages) with ``template``
    (:data:`TEMPLATE_NAMES`); the demonstrations are shown with the same template."""
    check_template(template)
    if len(item.options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options can be labelled, got {len(item.options)}")
    header = [instruction or default_instruction(item.lang, template)]
    if persona:
        header.append(persona)
    blocks = ["\n".join(header)]
    blocks.extend(_text_block(d.item, d.answer, template) for d in demonstrations)
    blocks.append(_text_block(item, None, template))
    text = "\n\n".join(blocks)

    system = "\n".join(header)
    messages: list[dict[str, str]] = [{"role": "system", "content": system}]
    for demo in demonstrations:
        messages.append({"role": "user", "content": _chat_question(demo.item, template)})
        messages.append({"role": "assistant", "content": _letter_of(demo.item, demo.answer)})
    messages.append({"role": "user", "content": _chat_question(item, template)})
    return RenderedPrompt(
        text=text,
        continuations=tuple(f" {label}" for label in item.options),
        messages=tuple(messages),
        labels=tuple(LETTERS[: len(item.options)]),
        options=item.options,
    )
