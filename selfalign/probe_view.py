"""The per-probe view of the HTML report: every row of a run table, filterable, and one probe in detail.

:func:`probe_payload` turns the run table and the run's stored prompts (:mod:`selfalign.prompt_store`) into
one compact JSON document: columns instead of row objects, repeated strings (countries, programs, topics,
option lists, the country's shares) stored once and referenced by index, each distinct prompt once.
:func:`probe_section` embeds it in the page gzip-compressed and base64-encoded: for a run shaped like the
paper's (23,560 rows, 7,852 prompts; ``bench/bench_report_probes.py``) 16.5 MB of JSON become 1.8 MB and the
whole page 2.2 MB. Base64 also means that no text of the data can end the script element early. The page's
script (``assets/probe_view.js``) decompresses it with the browser's ``DecompressionStream`` (Chrome/Edge 80+,
Firefox 113+, Safari 16.4+) and builds every element with ``textContent``, so prompts are never parsed as HTML.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

import pandas as pd

from selfalign.prompt_store import StoredPrompt

FORMAT = 1
NOT_STORED = "prompt not stored for this run"
_DICT_COLUMNS = (
    "run",
    "model",
    "survey",
    "protocol",
    "split",
    "country",
    "language",
    "demo_language",
    "program",
    "topic",
    "question_id",
    "scale",
    "method",
    "model_choice",
    "country_majority",
    "error",
    "prompt_sha256",
)
_INT_COLUMNS = ("k", "seed", "n_demos", "prompt_tokens", "completion_tokens")
_FLOAT_COLUMNS = ("agreement", "js_similarity", "wasserstein_similarity", "off_option_mass", "latency_s")
_BOOL_COLUMNS = ("ok", "cached", "invalid")
_DIGITS = 4


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def _dict_column(values: list[Any]) -> dict[str, list[Any]]:
    """``{"values": distinct values, "idx": per row the index of its value, -1 for missing}`` (values are
    strings or lists of scalars)."""
    index: dict[Any, int] = {}
    distinct: list[Any] = []
    idx: list[int] = []
    for value in values:
        if value is None:
            idx.append(-1)
            continue
        key = (tuple(value),) if isinstance(value, list) else value
        at = index.get(key)
        if at is None:
            at = index[key] = len(distinct)
            distinct.append(value)
        idx.append(at)
    return {"values": distinct, "idx": idx}


def _json_list(value: Any) -> list[Any] | None:
    if _missing(value):
        return None
    try:
        parsed = json.loads(str(value))
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, list) else None


def _aligned(value: Any, codes: list[str] | None) -> list[float | None] | None:
    """A JSON object code -> number as a list in the order of ``codes`` (JS objects reorder numeric keys)."""
    if _missing(value) or not codes:
        return None
    try:
        parsed = json.loads(str(value))
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    return [_round(parsed.get(c)) for c in codes]


def _round(value: Any) -> float | None:
    if value is None or _missing(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else round(number, _DIGITS)


def _prompt_json(stored: StoredPrompt) -> list[Any]:
    p = stored.prompt
    return [
        p.text,
        list(p.continuations),
        [[m.get("role", ""), m.get("content", "")] for m in p.messages],
        list(p.labels),
        list(p.options),
        [[d.question_id, d.text, d.answer] for d in stored.demonstrations],
    ]


def probe_payload(table: pd.DataFrame, prompts: Mapping[str, StoredPrompt]) -> dict[str, Any]:
    """The data of the per-probe view: every row of ``table`` (in table order) and the prompts they used.

    ``prompts`` maps ``prompt_sha256`` to the stored prompt (empty for a run that stored none). Keys:
    ``format``, ``n`` (rows), ``cols`` (per column: a list, or ``{"values", "idx"}`` for repeated strings),
    ``prompt`` (per row the index into ``prompts``, -1 when not stored), ``prompts`` (``[transcript,
    continuations, [[role, content]...], labels, options, [[question id, text shown, answer shown]...]]``),
    ``prompts_stored`` (whether the run stored any prompt) and ``not_stored`` (the message shown otherwise).
    """
    n = len(table)
    col = {c: table[c].tolist() for c in table.columns}

    def column(name: str) -> list[Any]:
        return col.get(name, [None] * n)

    cols: dict[str, Any] = {c: _dict_column([_text(v) for v in column(c)]) for c in _DICT_COLUMNS}
    for c in _INT_COLUMNS:
        cols[c] = [None if _missing(v) else int(v) for v in column(c)]
    for c in _FLOAT_COLUMNS:
        cols[c] = [_round(v) for v in column(c)]
    for c in _BOOL_COLUMNS:
        cols[c] = [1 if (not _missing(v) and str(v).lower() in ("true", "1")) else 0 for v in column(c)]
    codes = [_json_list(v) for v in column("option_codes")]
    cols["option_codes"] = _dict_column(codes)
    cols["options_shown"] = _dict_column([_json_list(v) for v in column("options_shown")])
    cols["demo_ids"] = _dict_column([_json_list(v) for v in column("demo_ids")])
    cols["country_shares"] = _dict_column(
        [_aligned(v, c) for v, c in zip(column("country_shares"), codes, strict=True)]
    )
    cols["probs"] = [_aligned(v, c) for v, c in zip(column("probs"), codes, strict=True)]

    order: dict[str, int] = {}
    stored: list[list[Any]] = []
    refs: list[int] = []
    for sha in column("prompt_sha256"):
        key = _text(sha)
        if key is None or key not in prompts:
            refs.append(-1)
            continue
        at = order.get(key)
        if at is None:
            at = order[key] = len(stored)
            stored.append(_prompt_json(prompts[key]))
        refs.append(at)
    return {
        "format": FORMAT,
        "n": n,
        "cols": cols,
        "prompt": refs,
        "prompts": stored,
        "prompts_stored": bool(prompts),
        "not_stored": NOT_STORED,
    }


def encode_payload(payload: Mapping[str, Any]) -> str:
    """The payload as base64 of gzip-compressed UTF-8 JSON (what the page's script decodes)."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return base64.b64encode(gzip.compress(data, compresslevel=6, mtime=0)).decode("ascii")


def decode_payload(encoded: str) -> dict[str, Any]:
    """The inverse of :func:`encode_payload`."""
    return json.loads(gzip.decompress(base64.b64decode(encoded)).decode("utf-8"))


def _asset(name: str) -> str:
    text = resources.files("selfalign").joinpath("assets", name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise ValueError(f"assets/{name} must not contain a closing script or style tag")
    return text


PROBE_CSS = "probe_view.css"
PROBE_JS = "probe_view.js"


def probe_css() -> str:
    """The style sheet of the per-probe view (inlined into the report's ``<style>``)."""
    return _asset(PROBE_CSS)


def probe_section(payload: Mapping[str, Any]) -> str:
    """The HTML of the per-probe view: filters, the paginated table, the detail panel, the data and script."""
    n = int(payload["n"])
    note = (
        f"All {n} rows of the run table. Filter them, then click a row (or press Enter on it) to see the prompt "
        "as sent, the demonstrations with the answers shown, and the model's distribution beside the country's."
    )
    if not payload.get("prompts_stored"):
        note += f" This run stored no prompts ({NOT_STORED}); distributions and metrics are shown."
    return "\n".join(
        [
            '<h2 id="probes">Probes</h2>',
            f"<p class='note'>{note}</p>",
            '<div id="pv-controls" class="pv-controls">',
            '<label>country <select id="pv-country"><option value="">all</option></select></label>',
            '<label>program <select id="pv-program"><option value="">all</option></select></label>',
            '<label>k <select id="pv-k"><option value="">all</option></select></label>',
            '<label>language <select id="pv-language"><option value="">all</option></select></label>',
            '<label>topic <select id="pv-topic"><option value="">all</option></select></label>',
            '<label>result <select id="pv-result"><option value="">all</option>'
            '<option value="agrees">agrees with the majority</option>'
            '<option value="disagrees">does not agree</option>'
            '<option value="failed">failed</option></select></label>',
            '<label>text <input id="pv-text" type="search" placeholder="question, prompt, error..." size="24"></label>',
            "</div>",
            '<p id="pv-status" class="note" role="status">Loading the probes...</p>',
            '<table id="pv-table" class="pv-table"><thead><tr><th>#</th><th>country</th><th>language</th>'
            "<th>program</th><th>k</th><th>question</th><th>topic</th><th>model's answer</th>"
            "<th>country's majority</th><th>result</th></tr></thead><tbody></tbody></table>",
            '<div id="pv-pager" class="pv-pager"><button type="button" id="pv-first">first</button>'
            '<button type="button" id="pv-prev">previous</button><span id="pv-page"></span>'
            '<button type="button" id="pv-next">next</button><button type="button" id="pv-last">last</button>'
            '<label>rows per page <select id="pv-size"><option value="25">25</option>'
            '<option value="50" selected>50</option>'
            '<option value="100">100</option><option value="200">200</option></select></label></div>',
            '<section id="pv-detail" class="pv-detail" hidden></section>',
            '<noscript><p class="note">The per-probe view needs JavaScript.</p></noscript>',
            f'<script type="application/octet-stream" id="pv-data">{encode_payload(payload)}</script>',
            f"<script>{_asset(PROBE_JS)}</script>",
        ]
    )
