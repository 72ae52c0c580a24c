"""Bad inputs to the CLI: each one ends in one line naming the problem.

One row of ``CASES`` is one input: the command line after ``selfalign surveys`` (rows of ``RUN_CASES``:
after ``selfalign``; ``{tmp}`` is the case's folder; files are relative to it, the working folder), the files
to create (text, or bytes), the exit code and a piece of the expected message. An exit code other than 0 must
come with exactly one line, starting with ``error:``, and no traceback; exit 0 (input that is partly bad) must
still report the problem. After every case nothing outside the case's folder has changed: the bystander folder
``victim/`` beside the work folder and the repository's bundled surveys are as they were. Add a row for every
new bad input.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# --- building blocks ----------------------------------------------------------------------------------------
Q = 'question_id,question,options,statement,agree,disagree\nT1,Tea?,"{""1"": ""Yes"", ""2"": ""No""}",I like tea.,'
QS = Q + '"[""1""]","[""2""]"\n'  # a good questions file
A = "country,question_id,option_code,share\n"
AS = A + "DEU,T1,1,0.25\nDEU,T1,2,0.75\n"  # a good answers file
G = "question,selections,options,source\n"
SEL = "\"defaultdict(<class 'list'>, {{{}}})\""


def goqa(*pairs: str, options: str = "\"['Yes', 'No']\"") -> str:
    """A GlobalOpinionQA file with one question whose selections hold ``pairs`` ("'Belgium': [0.2, 0.8]")."""
    return G + f'"Q?",{SEL.format(", ".join(pairs))},{options},GAS\n'


OK_PAIR = "'Belgium': [0.2, 0.8]"
M = "B_COUNTRY_ALPHA;W_WEIGHT;Q57\n"
BIG = "x" * (128 * 1024 + 10)  # over the csv module's default field limit
LATIN1 = "country,question_id,option_code,share\nCôte,T1,1,1.0\n".encode("latin-1")
NUL = b"country,question_id,option_code,share\nDEU\x00,T1,1,1.0\n"
MINI = {
    "survey.toml": 'name = "s"\n[languages.en]\nname = "English"\n',
    "questions.jsonl": '{"id": "T1", "topic": "t", "scale": "nominal", "options": ["1", "2"]}\n',
    "text/en.jsonl": '{"id": "T1", "question": "Tea?", "options": {"1": "Yes", "2": "No"}}\n',
    "answers.csv": A + "DEU,T1,1,0.5\nDEU,T1,2,0.5\n",
}


def mini(**changed: str | bytes) -> dict[str, str | bytes]:
    """A small valid survey folder ``s/``, with some of its files replaced (keys: file names, '.' for '/')."""
    files = {**MINI, **{k.replace("__", "/").replace("_", "."): v for k, v in changed.items()}}
    return {f"s/{k}": v for k, v in files.items()}


@dataclass(frozen=True)
class Case:
    argv: str
    files: dict[str, str | bytes]
    code: int
    message: str
    group: str = "surveys"
    env: tuple[tuple[str, str], ...] = ()


def c(argv: str, files: dict[str, str | bytes], code: int, message: str) -> Case:
    return Case(argv, files, code, message)


def r(argv: str, files: dict[str, str | bytes], code: int, message: str, **env: str) -> Case:
    """A row for a command other than ``surveys`` (``argv`` after ``selfalign``); ``env`` sets variables."""
    return Case(argv, files, code, message, group="", env=tuple(env.items()))


IT = "import tidy a.csv --questions q.csv --name x"
IG = "import global-opinions g.csv --name x"
IW = "import wvs-microdata m.csv --name x"

CASES = [
    # --- tidy: file encodings and sizes
    c(IT, {"a.csv": LATIN1, "q.csv": QS}, 2, "a.csv: not UTF-8 text"),
    c(IT, {"a.csv": AS, "q.csv": QS.encode("utf-16")}, 2, "q.csv: not UTF-8 text"),
    c(IT, {"a.csv": NUL, "q.csv": QS}, 2, "NUL bytes: a binary file"),
    c(IT, {"a.csv": bytes(range(256)) * 4, "q.csv": QS}, 2, "NUL bytes"),
    c(IT, {"a.csv": bytes(range(1, 256)) * 4, "q.csv": QS}, 2, "a.csv: not UTF-8 text (byte 80 cannot be decoded)"),
    c(IT, {"a.csv": A + f"DEU,T1,1,{BIG}\n", "q.csv": QS}, 2, "longer than 131,072 characters"),
    c(IT, {"a.csv": AS, "q.csv": QS + f"T2,{BIG},{{}},,,\n"}, 2, "q.csv:3: a field is longer than"),
    # --- tidy: the questions file
    c(IT, {"a.csv": AS, "q.csv": Q + '5,"[""2""]"\n'}, 2, "T1: 'agree' must be a JSON list of option codes"),
    c(IT, {"a.csv": AS, "q.csv": Q + '"[""5""]","[""2""]"\n'}, 2, "'agree' names codes ['5'] that are not among"),
    c(IT, {"a.csv": AS, "q.csv": Q + '"[""1""]","{}"\n'}, 2, "'disagree' must be a JSON list"),
    c(IT, {"a.csv": AS, "q.csv": Q + '[1,"[""2""]"\n'}, 2, "'agree' is not valid JSON"),
    c(IT, {"a.csv": AS, "q.csv": Q + '"[""1""]","[""1""]"\n'}, 2, "a code is on both binary sides"),
    c(IT, {"a.csv": AS, "q.csv": Q + '"[""1""]","[]"\n'}, 2, "each binary side needs at least one code"),
    c(IT, {"a.csv": AS, "q.csv": "question_id,question,options\nT1,Tea?,{nope\n"}, 2, "'options' is not valid JSON"),
    c(IT, {"a.csv": AS, "q.csv": "question_id,question,options\nT1,Tea?,[1]\n"}, 2, "must be a JSON object"),
    c(IT, {"a.csv": AS, "q.csv": 'question_id,question,options\nT1,Tea?,"{""1"": ""Y""}"\n'}, 2, "(>= 2)"),
    c(IT, {"a.csv": AS, "q.csv": QS.replace("statement", "scale").replace("I like tea.", "odd")}, 2, "scale must be"),
    c(IT, {"a.csv": AS, "q.csv": QS.replace("\nT1,", "\n,")}, 2, "empty question_id"),
    c(IT, {"a.csv": AS, "q.csv": QS + QS.splitlines()[1] + "\n"}, 2, "q.csv:3: duplicate question id T1"),
    c(IT, {"a.csv": AS, "q.csv": "question_id,question\n"}, 2, "missing columns ['options']"),
    c(IT, {"a.csv": AS, "q.csv": ""}, 2, "q.csv: file is empty"),
    c(IT, {"a.csv": AS, "q.csv": "question_id,question,options\n"}, 2, "q.csv: no questions"),
    # --- tidy: the answers file
    c(IT, {"a.csv": "", "q.csv": QS}, 2, "a.csv: file is empty"),
    c(IT, {"a.csv": A, "q.csv": QS}, 2, "a.csv: no answer rows"),
    c(IT, {"a.csv": "country,question_id,share\n", "q.csv": QS}, 2, "missing columns ['option_code']"),
    c(IT, {"a.csv": A + "DEU,T1,1,abc\n", "q.csv": QS}, 2, "a.csv:2: share 'abc' is not a number"),
    c(IT, {"a.csv": A + "DEU,T1,1,-0.1\n", "q.csv": QS}, 2, "share -0.1 is outside [0, 1]"),
    c(IT, {"a.csv": A + "DEU,T1,1,nan\n", "q.csv": QS}, 2, "share nan is outside [0, 1]"),
    c(IT, {"a.csv": A + "DEU,T1,9,1.0\n", "q.csv": QS}, 2, "option code '9' is not among T1's options"),
    c(IT, {"a.csv": A + "DEU,T9,1,1.0\n", "q.csv": QS}, 2, "question 'T9' is not in the questions file"),
    c(IT, {"a.csv": A + "DEU,T1,1,0.5\nDEU,T1,2,0.4\n", "q.csv": QS}, 2, "shares of DEU/T1 sum to 0.9"),
    c(IT, {"a.csv": A + "DEU,T1,1,0.5\nDEU,T1,1,0.5\n", "q.csv": QS}, 2, "a.csv:3: duplicate row for DEU/T1"),
    c(IT, {"a.csv": A + "DEU,T1,1\n", "q.csv": QS}, 2, "a.csv:2: expected 4 fields as in the header, found 3"),
    c(IT, {"a.csv": A + "DEU,T1,1,0.5,extra\n", "q.csv": QS}, 2, "expected 4 fields as in the header, found 5"),
    c(IT, {"a.csv": A + "Foo [/] Bar,T1,1,1.0\n", "q.csv": QS}, 2, "no answer rows left (skipped 1 of 1"),
    c(IT, {"a.csv": AS + "Foo [/] Bar,T1,1,1.0\n", "q.csv": QS}, 0, "not mapped: 'Foo [/] Bar'"),
    c(IT + " --strict", {"a.csv": AS + "Foo [/] Bar,T1,1,1.0\n", "q.csv": QS}, 2, "'Foo [/] Bar' cannot be mapped"),
    c(IT, {"a.csv": AS + "PALEST_TER,T1,1,1.0\n", "q.csv": QS}, 0, "not mapped: 'PALEST_TER'"),
    c(IT, {"a.csv": AS + ",T1,1,1.0\n", "q.csv": QS}, 0, "not mapped: '(empty)'"),
    # --- tidy: arguments
    c("import tidy a.csv --name x", {"a.csv": AS}, 2, "tidy takes one answers CSV and --questions"),
    c("import tidy a.csv a.csv --questions q.csv --name x", {"a.csv": AS, "q.csv": QS}, 2, "tidy takes one answers"),
    c(IT, {"q.csv": QS}, 2, "a.csv: file not found"),
    c(IT, {"a.csv": AS}, 2, "q.csv: file not found"),
    c(IT, {"a.csv/keep": "", "q.csv": QS}, 2, "is a directory"),
    c(IT.replace("q.csv", "dir"), {"a.csv": AS, "dir/keep": ""}, 2, "is a directory"),
    # --- survey names and where they are written
    c(IT.replace("--name x", "--name ''"), {"a.csv": AS, "q.csv": QS}, 2, "the survey name is empty"),
    c(IT.replace("--name x", "--name '  '"), {"a.csv": AS, "q.csv": QS}, 2, "the survey name is empty"),
    c(IT.replace("x", "../victim --out . --force"), {"a.csv": AS, "q.csv": QS}, 2, "'../victim' is not a plain"),
    c(IT.replace("x", "../../x"), {"a.csv": AS, "q.csv": QS}, 2, "'../../x' is not a plain name"),
    c(IT.replace("x", "a/b"), {"a.csv": AS, "q.csv": QS}, 2, "'a/b' is not a plain name"),
    c(IT.replace("x", "a\\\\b"), {"a.csv": AS, "q.csv": QS}, 2, "is not a plain name"),
    c(IT.replace("x", ".hidden"), {"a.csv": AS, "q.csv": QS}, 2, "'.hidden' is not a plain name"),
    c(IT.replace("x", "x..y"), {"a.csv": AS, "q.csv": QS}, 2, "'x..y' is not a plain name"),
    c(IT.replace("--name x", "--name=-rf"), {"a.csv": AS, "q.csv": QS}, 2, "'-rf' is not a plain name"),
    c(IT.replace("x", "'my survey'"), {"a.csv": AS, "q.csv": QS}, 2, "'my survey' is not a plain name"),
    c(IT.replace("x", "x" * 101), {"a.csv": AS, "q.csv": QS}, 2, "is not a plain name"),
    c(IT + " --out out", {"a.csv": AS, "q.csv": QS, "out/x/survey.toml": 'name = "x"\n'}, 2, "already exists"),
    c(IT + " --out out --force", {"a.csv": AS, "q.csv": QS, "out/x/mine.txt": "keep"}, 2, "is not a survey folder"),
    c(IT + " --out out --force", {"a.csv": AS, "q.csv": QS, "out/x/survey.toml": "name = 'y'\n"}, 2, "named 'y'"),
    c(IT + " --out out --force", {"a.csv": AS, "q.csv": QS, "out/x/survey.toml": b"\xff"}, 2, "not a survey"),
    c(IT + " --out out --force", {"a.csv": AS, "q.csv": QS, "out/x": "a file"}, 2, "is not a survey folder"),
    c(IT + " --out out", {"a.csv": AS, "q.csv": QS, "out": "a file"}, 2, "Directory 'out' is a file"),
    c(IT, {"a.csv": AS, "q.csv": QS, "home": "a file"}, 2, "is a file, not a folder (check SELFALIGN_HOME)"),
    # --- click usage, as one line
    c("import spss a.csv --name x", {"a.csv": AS}, 2, "'spss' is not one of"),
    c("import tidy a.csv --questions q.csv", {"a.csv": AS, "q.csv": QS}, 2, "Missing option '--name'"),
    c(IT + " --bogus", {"a.csv": AS, "q.csv": QS}, 2, "No such option '--bogus'"),
    c(IT + " --sample-variants both", {"a.csv": AS, "q.csv": QS}, 2, "'both' is not one of 'separate'"),
    c("import tidy --name x", {}, 2, "Missing argument 'FILES...'"),
    c("frobnicate", {}, 2, "No such command 'frobnicate'"),
    # --- GlobalOpinionQA
    c(IG, {"g.csv": G + "\"Q?\",\"defaultdict(<class 'list'>, {'X': [0.1,\",\"['a', 'b']\",S\n"}, 2, "no usable"),
    c(IG + " --strict", {"g.csv": G + '"Q?","not a dict","[\'a\', \'b\']",S\n'}, 2, "'selections' is not a dict"),
    c(IG, {"g.csv": G + "\"Q?\",\"{'Belgium': __import__('os').getcwd()}\",\"['a', 'b']\",S\n"}, 2, "no usable"),
    c(IG + " --strict", {"g.csv": G + '"Q?","{\'Belgium\': [0.5, 0.5]}","open(\'x\')",S\n'}, 2, "not a list literal"),
    c(IG + " --strict", {"g.csv": G + '"Q?","{\'Belgium\': [1.0]}","[\'only\']",S\n'}, 2, "at least two answers"),
    c(IG + " --strict", {"g.csv": G + f'"Q?","{"[" * 300}","[\'a\', \'b\']",S\n'}, 2, "'selections' is not a dict"),
    c(IG, {"g.csv": goqa("'China': [0.0, 0.0]")}, 2, "no usable (country, question) pairs (skipped 1 of 1"),
    c(IG, {"g.csv": goqa(OK_PAIR, "'China': [0.0, 0.0]")}, 0, "skipped 1 of 2 (country, question) pairs"),
    c(IG + " --strict", {"g.csv": goqa(OK_PAIR, "'China': [0.0, 0.0]")}, 2, "China: shares are all zero (--strict)"),
    c(IG + " --strict", {"g.csv": goqa("'China': [0.5]")}, 2, "China: 1 shares for 2 options"),
    c(IG + " --strict", {"g.csv": goqa("'China': [nan, 0.5]")}, 2, "China: a share is NaN or infinite"),
    c(IG + " --strict", {"g.csv": goqa("'China': [-0.5, 1.5]")}, 2, "China: a share is negative"),
    c(IG + " --strict", {"g.csv": goqa("'China': [0.5, 0.1]")}, 2, "China: shares sum to 0.6000, not 1"),
    c(IG + " --strict", {"g.csv": goqa("'China': ['a', 'b']")}, 2, "China: a share is not a number"),
    c(IG + " --strict", {"g.csv": goqa("'China': 0.5")}, 2, "China: shares are not a list"),
    c(IG + " --strict", {"g.csv": goqa("'Palest. ter.': [0.5, 0.5]")}, 2, "'Palest. ter.' cannot be mapped"),
    c(IG, {"g.csv": goqa(OK_PAIR, "'Palest. ter.': [0.5, 0.5]")}, 0, "not mapped: 'Palest. ter.'"),
    c(IG, {"g.csv": goqa(OK_PAIR, "'Foo [/] Bar': [0.5, 0.5]")}, 0, "not mapped: 'Foo [/] Bar'"),
    c(
        IG,
        {"g.csv": goqa(OK_PAIR, "'S. Korea': [0.5, 0.5]", "'South Korea': [0.4, 0.6]")},
        0,
        "2 country given twice in one question",
    ),
    c(IG, {"g.csv": goqa(OK_PAIR, options="\"['Yes', '']\"")}, 2, "no usable (country, question) pairs (skipped 1"),
    c(IG, {"g.csv": "question,options\n"}, 2, "missing columns ['selections']"),
    c(IG, {"g.csv": goqa(OK_PAIR).encode("utf-16")}, 2, "g.csv: not UTF-8 text"),
    c(IG, {"g.csv": NUL}, 2, "NUL bytes"),
    c(IG, {"g.csv": G + f'"{BIG}","{{}}","[]",S\n'}, 2, "g.csv:2: a field is longer than 131,072 characters"),
    c("import global-opinions g.csv g.csv --name x", {"g.csv": goqa(OK_PAIR)}, 2, "exactly one CSV file, not 2"),
    # --- WVS microdata
    c(IW, {"m.csv": M.encode() + b"DEU;1;1\n\xff;1;1\n"}, 2, "m.csv: not UTF-8 text"),
    c(IW, {"m.csv": M + "XXX;1;1\n"}, 2, "no substantive answers found (1 country name(s) not mapped: 'XXX'"),
    c(IW, {"m.csv": M + "DEU;1;1\nXXX;1;1\n"}, 0, "skipped 1 respondent(s) of those codes"),
    c(IW + " --strict", {"m.csv": M + "DEU;1;1\nXXX;1;1\n"}, 2, "m.csv:3: country code 'XXX' cannot be mapped"),
    c(IW + " --base nosuch", {"m.csv": M + "DEU;1;1\n"}, 2, "unknown survey 'nosuch'"),
    c(IW, {"m.csv": M.encode() + b"DEU;1;1\x00\n"}, 2, "NUL bytes"),
    c(IW, {"m.csv": M + f"DEU;1;{BIG}\n"}, 2, "m.csv:2: a field is longer than"),
    c(IW, {"m.csv": M + "DEU;1\n"}, 2, "m.csv:2: expected 3 fields"),
    # --- list
    c("list", {"home/surveys/b/survey.toml": b"\xff\xfe"}, 0, "(broken:"),
    c("list", {"home": "a file"}, 0, "is a file, not a folder"),
    # --- show: broken survey folders
    c("show s", mini(survey_toml=b'name = "\xff"\n'), 2, "survey.toml: not UTF-8 text"),
    c("show s", mini(survey_toml="name = [\n"), 2, "survey.toml: not valid TOML"),
    c("show s", mini(survey_toml='languages = "en"\n'), 2, "'languages' must be a table"),
    c("show s", mini(survey_toml='[languages."../../x"]\nname = "X"\n'), 2, "'../../x' is not a language code"),
    c("show s", mini(questions_jsonl=b"\x00\xff\n"), 2, "questions.jsonl: contains NUL bytes"),
    c("show s", mini(questions_jsonl=b"\xff\n"), 2, "questions.jsonl: not UTF-8 text"),
    c(
        "show s",
        mini(questions_jsonl='{"id": "T1", "topic": "t", "options": ["1", "2"], "binary": 3}\n'),
        2,
        "'binary'",
    ),
    c("show s", mini(questions_jsonl="[" * 100000 + "\n"), 2, "questions.jsonl:1: not valid JSON"),
    c("show s", mini(answers_csv=A + "Foo [/] Bar,T1,1,1.0\n"), 2, "country 'Foo [/] Bar' is not a code"),
    c("show s", mini(answers_csv=A + f"DEU,T1,1,{BIG}\n"), 2, "answers.csv:2: a field is longer than"),
    c("show s", mini(answers_csv=b"country,question_id,option_code,share\n\xff"), 2, "answers.csv: not UTF-8 text"),
    c("show s", mini(text__en_jsonl="{}\n"), 2, "en.jsonl:1: each line must be a JSON object with an 'id'"),
    c("show s", {**mini(), "s/countries.csv": b"code,name\nDEU,\xff\n"}, 2, "countries.csv: not UTF-8 text"),
    c("show s", {**mini(), "s/countries.csv": "code,name\nDEU\n"}, 2, "countries.csv:2: expected 2 fields"),
    c("show s", {**mini(), "s/countries.csv": "code,name\nDEU,Foo [/] Bar\n"}, 0, "DEU (Foo [/] Bar)"),
    c("show s", mini(questions_jsonl='{"id": "T1", "topic": "[/]", "options": ["1", "2"]}\n'), 0, "[/]"),
    c("show s", mini(survey_toml='name = "s"\ntitle = "[bold] x [/]"\n'), 0, "s: [bold] x [/]"),
    c("show s --question T1 --country DEU", {**mini(), "s/countries.csv": "code,name\nDEU,[red]\n"}, 0, "DEU ([red])"),
    # --- show: names that are not there
    c("show wvs7 --country 'Foo [/] Bar' --question Q1", {}, 2, "unknown country 'Foo [/] Bar'"),
    c("show wvs7 --country Atlantis", {}, 2, "unknown country 'Atlantis'"),
    c("show wvs7 --lang xx", {}, 2, "unknown language 'xx'"),
    c("show wvs9", {}, 2, "unknown survey 'wvs9'"),
    c("show wvs7 --question Q9999", {}, 2, "unknown question 'Q9999'"),
    c("show wvs7 --topic Astrology", {}, 2, "unknown topic 'Astrology'"),
    c("show mine", {"home": "a file"}, 2, "unknown survey 'mine'"),
    c("show ../victim", {}, 2, "unknown survey '../victim'"),
]


SPEC = 'name = "x"\n[[grid]]\nprograms = ["zero-shot"]\ncountries = ["NGA"]\n'
NOCALL = "--cache-dir cache --out run"  # runs that stop before any model call still name their folders
LAB = '[models.lab]\nmodel = "hosted_vllm/llama"\napi_base = "http://127.0.0.1:9/v1"\n'
UNKNOWN_MODEL = "unknown model 'nosuchprovider/xyz'; valid: selfalign/gemma-3-270m (LiteLLM routes no provider"

RUN_CASES = [
    # --- compare: names and numbers, refused before any model call
    r(f"compare --countries Atlantis {NOCALL}", {}, 2, "unknown country 'Atlantis'"),
    r(f"compare --programs self-align-nothing {NOCALL}", {}, 2, "unknown program 'self-align-nothing'"),
    r(f"compare --protocol multiple {NOCALL}", {}, 2, "unknown protocol 'multiple'"),
    r(f"compare --split train {NOCALL}", {}, 2, "unknown split 'train'"),
    r(f"compare --lang xx {NOCALL}", {}, 2, "unknown language 'xx'"),
    r(f"compare --demo-lang xx {NOCALL}", {}, 2, "unknown demonstration language 'xx'"),
    r(f"compare --concurrency 0 {NOCALL}", {}, 2, "'--concurrency': 0 is not in the range x>=1"),
    r(f"compare -k 1000 {NOCALL}", {}, 2, "k = 1000 is more than the 173 dev questions"),
    r(f"compare -k five {NOCALL}", {}, 2, "-k must be whole numbers separated by commas, got 'five'"),
    r(f"compare -k -1 {NOCALL}", {}, 2, "grid 1 k must be an integer >= 0, got -1"),
    r(f"compare --timeout 0 {NOCALL}", {}, 2, "'--timeout': 0.0 is not in the range x>0"),
    r(f"compare --retries 99 {NOCALL}", {}, 2, "'--retries': 99 is not in the range 0<=x<=20"),
    r(f"compare --test-fraction 1.5 {NOCALL}", {}, 2, "test_fraction must be a number between 0 and 1"),
    r(f"compare --seed x {NOCALL}", {}, 2, "--seed must be whole numbers"),
    r(f"compare --limit -3 {NOCALL}", {}, 2, "'--limit': -3 is not in the range x>=0"),
    r(f"compare --bogus {NOCALL}", {}, 2, "No such option '--bogus'"),
    r("compare --out f", {"f": "a file"}, 2, "'--out': Directory 'f' is a file"),
    r("compare --countries NGA --limit 1 --out run", {"cache": "a file"}, 2, "cache", SELFALIGN_CACHE_DIR="cache"),
    r("nosuchcommand", {}, 2, "No such command 'nosuchcommand'"),
    # --- an unknown model: refused before the first call, naming it and the valid choices
    r(f"compare --model nosuchprovider/xyz {NOCALL}", {}, 2, UNKNOWN_MODEL),
    r(f"compare --model nosuchprovider/xyz --retry-invalid {NOCALL}", {}, 2, UNKNOWN_MODEL),
    r(
        "eval s.toml --cache-dir cache --out run",
        {"s.toml": 'models = ["nosuchprovider/xyz"]\n' + SPEC},
        2,
        UNKNOWN_MODEL,
    ),
    r("ask --country NGA --question Q164 --model nosuchprovider/xyz --cache-dir cache", {}, 2, UNKNOWN_MODEL),
    r(f"compare --model nosuchmodel {NOCALL}", {}, 2, "unknown model 'nosuchmodel'; valid: selfalign/gemma-3-270m"),
    r(
        f"compare --model nosuchprovider/xyz {NOCALL}",
        {"m.toml": LAB},
        2,
        "valid: lab, selfalign/gemma-3-270m (",
        SELFALIGN_CONFIG="m.toml",
    ),
    # --- eval: spec files
    r("eval nosuchspec", {}, 2, "unknown spec 'nosuchspec'"),
    r("eval s.toml", {"s.toml": 'name = "x"\n'.encode("utf-16")}, 2, "s.toml"),
    r("eval s.toml", {"s.toml": b"\xff\xfe\x00name"}, 2, "s.toml"),
    r("eval s.toml", {"s.toml": "name = [\n"}, 2, "not valid TOML"),
    r("eval s.toml", {"s.toml": SPEC.replace('"x"', '"../../x"')}, 2, "run name '../../x' is not a plain name"),
    r("eval s.toml", {"s.toml": SPEC.replace('"x"', '""')}, 2, "name must be a non-empty string"),
    r("eval s.toml", {"s.toml": SPEC + "colour = 1\n"}, 2, "colour"),
    r("eval s.toml", {"s.toml": SPEC.replace('"NGA"', '"Atlantis"')}, 2, "unknown country 'Atlantis'"),
    r("eval s.toml", {"s.toml": 'name = "x"\n'}, 2, "needs at least one [[grid]] table"),
    r("eval s.toml --concurrency -2", {"s.toml": SPEC}, 2, "'--concurrency': -2 is not in the range x>=1"),
    # --- report: tables that are not there or not readable
    r("report nothere", {}, 2, "'nothere' does not exist"),
    r("report d", {"d/x.txt": "x"}, 2, "no runs.parquet or runs.csv"),
    r("report d", {"d/runs.parquet": b"PAR1 not really"}, 2, "not a readable Parquet run table"),
    r("report d", {"d/runs.csv": b"\x00\x01\xff" * 50}, 2, "not a readable CSV run table"),
    r("report d", {"d/runs.csv": "a,b\n1,2\n"}, 2, "not a run table (missing columns"),
    # --- ask
    r("ask --country Atlantis --question Q164 --cache-dir cache", {}, 2, "unknown country 'Atlantis'"),
    r("ask --country NGA --question Q9999 --cache-dir cache", {}, 2, "unknown question 'Q9999'"),
    r("ask --country NGA --question Q164 --program nope --cache-dir cache", {}, 2, "unknown program 'nope'"),
    r("ask --country NGA --question Q164 --protocol x --cache-dir cache", {}, 2, "'--protocol': 'x' is not one of"),
    # --- models, cache, translate, optimize
    r("models --config m.toml", {"m.toml": "[models.x]\napi_key = 'sk-123456789'\n"}, 2, "keys never go into"),
    r("models --config m.toml", {"m.toml": b"\xff\xfe"}, 2, "m.toml"),
    r("cache info --cache-dir f", {"f": "a file"}, 2, "f"),
    r("translate --lang ../x --model openai/x", {}, 2, "'../x' is not a language code"),
    r("optimize --country Atlantis", {}, 2, "unknown country 'Atlantis'"),
    r("optimize --country NGA --budget 0", {}, 2, "budget must be a positive number"),
    r("optimize", {}, 2, "give --country C"),
    r("optimize --country NGA --timeout 0", {}, 2, "'--timeout': 0.0 is not in the range x>0"),
    r("optimize --country NGA --retries 99", {}, 2, "'--retries': 99 is not in the range 0<=x<=20"),
]


def _tree(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def bundled_before() -> list[tuple[str, int, int]]:
    return _tree(REPO / "surveys")


ALL_CASES = CASES + RUN_CASES


@pytest.mark.parametrize("case", ALL_CASES, ids=[f"{i:03d}-{case.message[:40]}" for i, case in enumerate(ALL_CASES)])
def test_bad_input_is_one_line(case: Case, tmp_path: Path, monkeypatch, bundled_before) -> None:
    from click.testing import CliRunner

    from selfalign.cli import cli

    work = tmp_path / "work"
    work.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("do not delete", encoding="utf-8")
    for name, content in case.files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    monkeypatch.chdir(work)
    monkeypatch.setenv("SELFALIGN_HOME", str(work / "home"))
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    argv = [*case.group.split(), *shlex.split(case.argv.replace("{tmp}", str(work)))]
    result = CliRunner().invoke(cli, argv, catch_exceptions=True)

    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == case.code, result.output
    if case.code:
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert case.message in lines[0], lines[0]
        written = work / "home" / "surveys"
        assert not written.is_dir() or not [p for p in written.iterdir() if p.name.startswith(".")]
    else:
        assert case.message in result.output, result.output
    assert (victim / "precious.txt").read_text(encoding="utf-8") == "do not delete"
    assert [p.name for p in tmp_path.iterdir()] == ["work", "victim"] or sorted(p.name for p in tmp_path.iterdir()) == [
        "victim",
        "work",
    ]
    assert _tree(REPO / "surveys") == bundled_before
