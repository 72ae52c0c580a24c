"""Country names and codes, through the ``country_converter`` library (coco), and each country's main language.

Every importer and every ``--countries`` option maps names through :func:`match_country`: ``S. Korea`` and
``South Korea`` both become ``KOR``, ``Czech Rep.`` and ``Czechia`` ``CZE``, ``Britain`` and ``Great Britain``
``GBR``. A name coco cannot map is reported by the caller and skipped, never turned into an invented code.

Sample variants. Some sources (GlobalOpinionQA) report several samples of one country, e.g.
``India (Current national sample)`` and ``India (Old national sample)``. They keep the country's ISO3 code
with a sample tag: ``<ISO3>.<tag>``, the tag being the sample's words in lower case joined by ``_`` without
the word "sample" (``IND.current_national``, ``IND.old_national``, ``CHN.non_national``). Such a code is
valid wherever a country code is: it has no comma, slash, space or colon, and only characters that program
and folder names allow (letters, digits, ``.`` and ``_``). :data:`SAMPLE_VARIANTS` are the ways an importer
can treat them (``separate``, the default; ``merge`` into the plain code; ``drop``).

coco (and pandas under it) takes about half a second to import, so it is loaded on the first name that is
not already a known code: loading a survey never loads it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

SAMPLE_VARIANTS = ("separate", "merge", "drop")

# code -> main language (ISO 639-1), for ``--lang native``. Names come from coco; languages are ours.
_MAIN_LANGUAGE: dict[str, str] = {
    "AND": "ca", "ARG": "es", "ARM": "hy", "AUS": "en", "AUT": "de", "BEL": "nl", "BGD": "bn", "BOL": "es",
    "BRA": "pt", "CAN": "en", "CHE": "de", "CHL": "es", "CHN": "zh", "COL": "es", "CYP": "el", "CZE": "cs",
    "DEU": "de", "DNK": "da", "ECU": "es", "EGY": "ar", "ESP": "es", "ETH": "am", "FIN": "fi", "FRA": "fr",
    "GBR": "en", "GHA": "en", "GRC": "el", "GTM": "es", "HKG": "zh", "HUN": "hu", "IDN": "id", "IND": "hi",
    "IRN": "fa", "IRQ": "ar", "ISR": "he", "ITA": "it", "JOR": "ar", "JPN": "ja", "KAZ": "ru", "KEN": "sw",
    "KGZ": "ru", "KOR": "ko", "LBN": "ar", "LBY": "ar", "MAC": "zh", "MAR": "ar", "MDV": "dv", "MEX": "es",
    "MMR": "my", "MYS": "ms", "NGA": "en", "NIC": "es", "NIR": "en", "NLD": "nl", "NOR": "no", "NZL": "en",
    "PAK": "ur", "PER": "es", "PHL": "tl", "POL": "pl", "PRI": "es", "PRT": "pt", "ROU": "ro", "RUS": "ru",
    "SGP": "en", "SRB": "sr", "SVK": "sk", "SWE": "sv", "THA": "th", "TJK": "tg", "TUN": "ar", "TUR": "tr",
    "TWN": "zh", "TZA": "sw", "UGA": "en", "UKR": "uk", "URY": "es", "USA": "en", "VEN": "es", "VNM": "vi",
    "ZAF": "en", "ZWE": "en",
}  # fmt: skip

# Codes the World Values Survey uses that are not ISO 3166 countries, added to coco's table (its documented
# ``additional_data``): Northern Ireland is surveyed apart from Great Britain.
_WVS_EXTRA = ({"name_short": "Northern Ireland", "name_official": "Northern Ireland", "regex": r"northern.?ireland",
               "ISO3": "NIR"},)  # fmt: skip

_MISSING = "\x00not found"  # coco's fill-in for a miss (None would echo the input, which is also a valid hit)
_SAMPLE = re.compile(r"^(?P<base>.*?)\s*\((?P<label>[^()]*\bsample)\)\s*$", re.IGNORECASE)
_TAGGED_CODE = re.compile(r"^(?P<iso3>[A-Za-z]{3})\.(?P<tag>[a-z0-9]+(?:_[a-z0-9]+)*)$")


@dataclass(frozen=True)
class CountryMatch:
    """A name mapped to a country: ``code`` (``IND`` or ``IND.current_national``), its ISO3 and display name."""

    code: str
    iso3: str
    name: str
    sample: str | None = None  # the sample's label as the source wrote it, e.g. "Current national sample"


def sample_tag(label: str) -> str:
    """The code tag of a sample label: ``"Current national sample"`` -> ``"current_national"``."""
    words = re.findall(r"[a-z0-9]+", label.lower())
    words = [w for w in words if w != "sample"] or ["sample"]
    return "_".join(words)


@lru_cache(maxsize=1)
def _converter() -> Any:
    """coco's converter on its own country table, read so that pandas keeps ``NA`` (Namibia) and empty cells."""
    import os

    import country_converter
    import pandas as pd

    logging.getLogger("country_converter").setLevel(logging.CRITICAL)  # it logs every miss; we report them
    logging.getLogger("country_converter.country_converter").setLevel(logging.CRITICAL)
    path = os.path.join(os.path.dirname(country_converter.__file__), "country_data.tsv")
    columns = ["name_short", "name_official", "regex", "ISO2", "ISO3", "obsolete"]
    table = pd.read_csv(path, sep="\t", encoding="utf-8", dtype=str, keep_default_na=False, usecols=columns)
    extra = pd.DataFrame([{**row, "ISO2": "", "obsolete": ""} for row in _WVS_EXTRA], columns=columns)
    for frame in (table, extra):
        frame["ISO2"] = frame["ISO2"].mask(frame["ISO2"] == "", "(?!)")  # no ISO2: a pattern that never matches
        frame["obsolete"] = frame["obsolete"].mask(frame["obsolete"] == "", None)
    return country_converter.CountryConverter(country_data=table, additional_data=extra)


@lru_cache(maxsize=4096)
def iso3_of(text: str) -> str | None:
    """The ISO3 code (or a WVS code such as ``NIR``) of a country code or name, or None if coco cannot map it.

    Codes are tried as codes first (``DEU``, ``de``), then every name through coco's regular expressions;
    a name two of them match is ambiguous and gives None.
    """
    t = " ".join(str(text).split())
    if not t or len(t) > 200:
        return None
    cc = _converter()
    found = cc.convert(t, to="ISO3", not_found=_MISSING)
    if not isinstance(found, str) or found == _MISSING:
        found = cc.convert(t, src="regex", to="ISO3", not_found=_MISSING)
    return found if isinstance(found, str) and re.fullmatch(r"[A-Z]{3}", found) else None


@lru_cache(maxsize=4096)
def _short_name(iso3: str) -> str | None:
    found = _converter().convert(iso3, src="ISO3", to="name_short", not_found=_MISSING)
    return found if isinstance(found, str) and found != _MISSING else None


def match_country(text: str, sample_variants: str = "separate") -> CountryMatch | None:
    """Map a country code or name (with an optional ``(... sample)`` suffix) to a country, or None.

    ``sample_variants``: ``separate`` keeps a sample as its own code ``<ISO3>.<tag>``; ``merge`` gives it the
    plain ISO3 code; ``drop`` returns None for it. A code that already carries a tag
    (``IND.current_national``) is kept as it is.
    """
    if sample_variants not in SAMPLE_VARIANTS:
        from selfalign.errors import UnknownChoiceError

        raise UnknownChoiceError("sample-variants choice", sample_variants, SAMPLE_VARIANTS)
    t = " ".join(str(text).split())
    tagged = _TAGGED_CODE.match(t)
    if tagged:
        iso3 = iso3_of(tagged["iso3"].upper())
        tag = tagged["tag"]
        label = tag.replace("_", " ").capitalize() + " sample"
    else:
        sample = _SAMPLE.match(t)
        base, label = (sample["base"], sample["label"].strip()) if sample else (t, None)
        iso3 = iso3_of(base)
        tag = sample_tag(label) if label else None
    if iso3 is None:
        return None
    name = _short_name(iso3) or iso3
    if tag is None or sample_variants == "merge":
        return CountryMatch(iso3, iso3, name)
    if sample_variants == "drop":
        return None
    return CountryMatch(f"{iso3}.{tag}", iso3, f"{name} ({label})", label)


def country_name(code: str) -> str:
    """English short name of a country code (coco's ``name_short``); the code itself where unknown."""
    found = match_country(code)
    return found.name if found else code


def main_language(code: str) -> str | None:
    """The country's main language (ISO 639-1), or None where unknown (a sample code: its country's)."""
    return _MAIN_LANGUAGE.get(code.split(".", 1)[0].upper())
