"""What an import left out: unusable (country, question) pairs and country names that could not be mapped.

Importers record every problem they can work around here instead of refusing the whole file; with
``strict=True`` the first such problem is raised as a :class:`SurveyFormatError` instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from selfalign.errors import SurveyFormatError


@dataclass(frozen=True)
class Skipped:
    """One pair (or whole row) left out: where, which country name and question, and why."""

    path: str
    line: int | None
    reason: str
    country: str | None = None
    question: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        what = "/".join(x for x in (self.country, self.question) if x)
        return f"{where}: {what + ': ' if what else ''}{self.reason}"


@dataclass
class ImportReport:
    """Counts and lists of what an import skipped; ``strict`` turns the first skip into an error."""

    strict: bool = False
    pairs_seen: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    rows_skipped: list[Skipped] = field(default_factory=list)
    unmapped: Counter[str] = field(default_factory=Counter)
    dropped_samples: Counter[str] = field(default_factory=Counter)
    names_by_code: dict[str, set[str]] = field(default_factory=dict)
    empty_questions: int = 0
    respondents_skipped: int = 0

    def skip_pair(
        self, path: Path, line: int | None, reason: str, country: str | None = None, question: str | None = None
    ) -> None:
        """Leave out one (country, question) pair (raises instead when strict)."""
        if self.strict:
            raise SurveyFormatError(path, f"{country + ': ' if country else ''}{reason} (--strict)", line)
        self.skipped.append(Skipped(str(path), line, reason, country, question))

    def skip_row(self, path: Path, line: int | None, reason: str) -> None:
        """Leave out a whole row, e.g. one whose shares cannot be parsed (raises instead when strict)."""
        if self.strict:
            raise SurveyFormatError(path, f"{reason} (--strict)", line)
        self.rows_skipped.append(Skipped(str(path), line, reason))

    def unmapped_name(self, path: Path, line: int | None, name: str, question: str | None = None) -> None:
        """A country name coco cannot map: its pair is left out and the name reported."""
        if self.strict:
            raise SurveyFormatError(path, f"country name {name!r} cannot be mapped to a country code (--strict)", line)
        self.unmapped[name] += 1
        self.skipped.append(Skipped(str(path), line, "country name cannot be mapped to a code", name, question))

    def skip_respondent(self, path: Path, line: int | None, code: str) -> None:
        """A respondent (WVS microdata) whose country code coco cannot map: left out, the code reported."""
        if self.strict:
            raise SurveyFormatError(path, f"country code {code!r} cannot be mapped to a country (--strict)", line)
        if code not in self.unmapped:
            self.rows_skipped.append(Skipped(str(path), line, f"country code {code!r} cannot be mapped (first row)"))
        self.unmapped[code] += 1
        self.respondents_skipped += 1

    def dropped_sample(self, name: str) -> None:
        """A sample variant left out on purpose (``--sample-variants drop``): counted, not a problem."""
        self.dropped_samples[name] += 1

    def mapped(self, name: str, code: str) -> None:
        """Record that ``name`` became ``code`` (to show which names were merged into one country)."""
        self.names_by_code.setdefault(code, set()).add(name)

    @property
    def merged_names(self) -> dict[str, list[str]]:
        """Codes that several different source names were mapped to, with those names."""
        return {c: sorted(n) for c, n in sorted(self.names_by_code.items()) if len(n) > 1}

    def summary(self, *, hints: bool = True) -> str | None:
        """One line: how many pairs and rows were left out and why, and the names that could not be mapped."""
        if not (self.skipped or self.rows_skipped or self.dropped_samples or self.empty_questions or self.unmapped):
            return None
        parts = []
        if self.skipped:
            reasons = Counter(_reason_kind(s.reason) for s in self.skipped)
            why = "; ".join(f"{n:,} {r}" for r, n in reasons.most_common())
            parts.append(f"skipped {len(self.skipped):,} of {self.pairs_seen:,} (country, question) pairs ({why})")
        if self.unmapped:
            names = ", ".join(repr(n) for n, _ in self.unmapped.most_common(10))
            more = f" and {len(self.unmapped) - 10} more" if len(self.unmapped) > 10 else ""
            parts.append(f"{len(self.unmapped)} country name(s) not mapped: {names}{more}")
        if self.respondents_skipped:
            parts.append(f"skipped {self.respondents_skipped:,} respondent(s) of those codes")
        elif self.rows_skipped:
            parts.append(f"skipped {len(self.rows_skipped):,} unreadable row(s)")
        if self.empty_questions:
            parts.append(f"{self.empty_questions:,} question(s) left without a usable pair were left out")
        if self.dropped_samples:
            parts.append(f"dropped {sum(self.dropped_samples.values()):,} pairs of {len(self.dropped_samples)} samples")
        return "; ".join(parts) + (" (--verbose lists them, --strict refuses the file)" if hints else "")

    def details(self) -> list[str]:
        """One line per skipped row and pair, then the names merged into one code."""
        lines = [f"skipped row {s}" for s in self.rows_skipped] + [f"skipped {s}" for s in self.skipped]
        lines += [f"dropped sample {name!r} ({n} pairs)" for name, n in sorted(self.dropped_samples.items())]
        lines += [f"country {code} <- {', '.join(map(repr, names))}" for code, names in self.merged_names.items()]
        return lines


def _reason_kind(reason: str) -> str:
    """The kind of a skip reason, for counting ("shares sum to 0.61, not 1" -> "shares do not sum to 1")."""
    for prefix, kind in (
        ("shares sum to", "shares do not sum to 1"),
        ("shares are all zero", "all-zero shares"),
        ("country name cannot", "unmapped country name"),
    ):
        if reason.startswith(prefix):
            return kind
    if " shares for " in reason:
        return "wrong number of shares"
    if " is given twice" in reason:
        return "country given twice in one question"
    return reason
