"""Keeping API keys out of everything selfalign stores or prints.

:func:`redact` removes every secret the process knows (values of environment variables whose names look like
keys, and keys handed in explicitly), whole and in part, plus key-shaped strings (``sk-...``, bearer tokens,
``api_key=...``). :func:`one_line` turns an exception into one redacted line for results and messages.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable, Sequence

SECRET_PARAM = re.compile(r"key|token|secret|password|auth|header|credential", re.IGNORECASE)
"""Request-parameter names whose values are never stored (cache keys, configs)."""
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|AUTH)", re.IGNORECASE)
_MIN_SECRET = 8  # shorter values are not treated as secrets (they would match ordinary words)
_PIECE = 8  # any run of this many consecutive characters of a secret counts as a part of it
_SECRET_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9_\-\.=+/]+"),
    re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
)
MASK = "***"
_extra: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret this process uses (e.g. a key read from a configured variable) for redaction."""
    if value and len(value) >= _MIN_SECRET:
        _extra.add(value)


def secret_values(extra: Iterable[str | None] = ()) -> list[str]:
    """Every secret known to this process, longest first."""
    values = {v for v in extra if v and len(v) >= _MIN_SECRET} | _extra
    values |= {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and v and len(v) >= _MIN_SECRET}
    return sorted(values, key=len, reverse=True)


def _pieces(secret: str) -> set[str]:
    return {secret[i : i + _PIECE] for i in range(len(secret) - _PIECE + 1)}


def _mask_spans(text: str, pieces: set[str]) -> str:
    """``text`` with every stretch covered by (possibly overlapping) occurrences of ``pieces`` masked."""
    covered: list[tuple[int, int]] = []
    for piece in pieces:
        start = text.find(piece)
        while start >= 0:
            covered.append((start, start + len(piece)))
            start = text.find(piece, start + 1)
    if not covered:
        return text
    covered.sort()
    merged = [list(covered[0])]
    for start, end in covered[1:]:
        if start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, last = [], 0
    for start, end in merged:
        out += [text[last:start], MASK]
        last = end
    out.append(text[last:])
    return "".join(out)


def redact(text: str, secrets: Sequence[str | None] = (), *, patterns: bool = True) -> str:
    """``text`` without any known secret, whole or in part (runs of 8 or more of its characters), and (with
    ``patterns``, the default) without key-shaped strings such as ``sk-...`` or bearer tokens.

    Model answers are redacted with ``patterns=False``: every secret the process knows is masked, but an
    ordinary answer that merely looks like a key is left as the model gave it.
    """
    if not text:
        return text
    return _redact(text, secret_values(secrets), patterns)


def redact_obj(value: object, secrets: Sequence[str | None] = (), *, patterns: bool = True) -> object:
    """A JSON-ready value (dicts, lists, strings) with every string redacted (keys of dicts included); the
    secrets are looked up once for the whole value."""
    return _redact_obj(value, secret_values(secrets), patterns)


def _redact(text: str, values: Sequence[str], patterns: bool) -> str:
    if not text:
        return text
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
        text = _mask_spans(text, _pieces(value))
    if patterns:
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text) if pattern.groups else pattern.sub(MASK, text)
    return text


def _redact_obj(value: object, values: Sequence[str], patterns: bool) -> object:
    if isinstance(value, str):
        return _redact(value, values, patterns)
    if isinstance(value, dict):
        return {
            (_redact(k, values, patterns) if isinstance(k, str) else k): _redact_obj(v, values, patterns)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact_obj(v, values, patterns) for v in value)
    return value


def one_line(exc: BaseException, secrets: Sequence[str | None] = ()) -> str:
    """An exception as one redacted line of at most 300 characters."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError | TimeoutError) and not message:
        message = "no answer within the timeout"
    text = f"{name}: {message}" if message and not message.startswith(name) else (message or name)
    return redact(text, secrets)[:300]
