"""Errors that selfalign raises for bad input, each rendered by the CLI as one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SelfAlignError(Exception):
    """Base class: a problem the user can fix; the CLI prints it as one line and exits with code 2."""


class UnknownChoiceError(SelfAlignError, KeyError):
    """A name (survey, country, question, topic, program, model, language...) that is not among the valid ones."""

    def __init__(
        self, kind: str, value: str, choices: Iterable[str], hint: str = "", *, list_all: bool = False
    ) -> None:
        """``list_all``: the message lists every choice in the order given (for short lists such as templates),
        instead of the closest matches or the first dozen sorted."""
        self.kind = kind
        self.value = value
        given = [str(c) for c in choices]
        self.choices = sorted(set(given))
        if list_all:
            message = f"unknown {kind} {str(value)!r}; valid: {', '.join(given)}"
        else:
            close = difflib.get_close_matches(str(value), self.choices, n=5, cutoff=0.5)
            if not close:
                lowered = str(value).lower()
                close = [c for c in self.choices if lowered in c.lower()][:5]
            if close:
                message = f"unknown {kind} {value!r}; closest: {', '.join(close)}"
            else:
                preview = ", ".join(self.choices[:12]) + (" ..." if len(self.choices) > 12 else "")
                message = f"unknown {kind} {value!r}; valid: {preview}"
        if hint:
            message += f" ({hint})"
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class SurveyFormatError(SelfAlignError, ValueError):
    """A survey file that cannot be loaded: names the file, the line or row, and what is wrong."""

    def __init__(self, path: object, problem: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        self.message = f"{where}: {problem}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class ModelError(SelfAlignError, RuntimeError):
    """A model call that failed after retries, or a model string that cannot be served."""
