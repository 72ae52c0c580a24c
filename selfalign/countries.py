"""Country names, ISO 3166-1 alpha-3 codes and each country's main language (for ``--lang native``)."""

from __future__ import annotations

import re

# code: (English name, main language code, other accepted names)
_COUNTRIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "AND": ("Andorra", "ca", ()),
    "ARG": ("Argentina", "es", ()),
    "ARM": ("Armenia", "hy", ()),
    "AUS": ("Australia", "en", ()),
    "AUT": ("Austria", "de", ()),
    "BEL": ("Belgium", "nl", ()),
    "BGD": ("Bangladesh", "bn", ()),
    "BOL": ("Bolivia", "es", ()),
    "BRA": ("Brazil", "pt", ()),
    "CAN": ("Canada", "en", ()),
    "CHE": ("Switzerland", "de", ()),
    "CHL": ("Chile", "es", ()),
    "CHN": ("China", "zh", ("People's Republic of China",)),
    "COL": ("Colombia", "es", ()),
    "CYP": ("Cyprus", "el", ()),
    "CZE": ("Czechia", "cs", ("Czech Republic",)),
    "DEU": ("Germany", "de", ()),
    "DNK": ("Denmark", "da", ()),
    "ECU": ("Ecuador", "es", ()),
    "EGY": ("Egypt", "ar", ()),
    "ESP": ("Spain", "es", ()),
    "ETH": ("Ethiopia", "am", ()),
    "FIN": ("Finland", "fi", ()),
    "FRA": ("France", "fr", ()),
    "GBR": ("Great Britain", "en", ("United Kingdom", "UK", "Britain")),
    "GHA": ("Ghana", "en", ()),
    "GRC": ("Greece", "el", ()),
    "GTM": ("Guatemala", "es", ()),
    "HKG": ("Hong Kong", "zh", ("Hong Kong SAR",)),
    "HUN": ("Hungary", "hu", ()),
    "IDN": ("Indonesia", "id", ()),
    "IND": ("India", "hi", ()),
    "IRN": ("Iran", "fa", ("Islamic Republic of Iran",)),
    "IRQ": ("Iraq", "ar", ()),
    "ISR": ("Israel", "he", ()),
    "ITA": ("Italy", "it", ()),
    "JOR": ("Jordan", "ar", ()),
    "JPN": ("Japan", "ja", ()),
    "KAZ": ("Kazakhstan", "ru", ()),
    "KEN": ("Kenya", "sw", ()),
    "KGZ": ("Kyrgyzstan", "ru", ("Kyrgyz Republic",)),
    "KOR": ("South Korea", "ko", ("Korea", "Republic of Korea", "Korea, South")),
    "LBN": ("Lebanon", "ar", ()),
    "LBY": ("Libya", "ar", ()),
    "MAC": ("Macao", "zh", ("Macau", "Macao SAR")),
    "MAR": ("Morocco", "ar", ()),
    "MDV": ("Maldives", "dv", ()),
    "MEX": ("Mexico", "es", ()),
    "MMR": ("Myanmar", "my", ("Burma",)),
    "MYS": ("Malaysia", "ms", ()),
    "NGA": ("Nigeria", "en", ()),
    "NIC": ("Nicaragua", "es", ()),
    "NIR": ("Northern Ireland", "en", ()),
    "NLD": ("Netherlands", "nl", ("The Netherlands", "Holland")),
    "NOR": ("Norway", "no", ()),
    "NZL": ("New Zealand", "en", ()),
    "PAK": ("Pakistan", "ur", ()),
    "PER": ("Peru", "es", ()),
    "PHL": ("Philippines", "tl", ("The Philippines",)),
    "POL": ("Poland", "pl", ()),
    "PRI": ("Puerto Rico", "es", ()),
    "PRT": ("Portugal", "pt", ()),
    "ROU": ("Romania", "ro", ()),
    "RUS": ("Russia", "ru", ("Russian Federation",)),
    "SGP": ("Singapore", "en", ()),
    "SRB": ("Serbia", "sr", ()),
    "SVK": ("Slovakia", "sk", ("Slovak Republic",)),
    "SWE": ("Sweden", "sv", ()),
    "THA": ("Thailand", "th", ()),
    "TJK": ("Tajikistan", "tg", ()),
    "TUN": ("Tunisia", "ar", ()),
    "TUR": ("Turkey", "tr", ("Türkiye", "Turkiye")),
    "TWN": ("Taiwan", "zh", ("Taiwan ROC",)),
    "TZA": ("Tanzania", "sw", ()),
    "UGA": ("Uganda", "en", ()),
    "UKR": ("Ukraine", "uk", ()),
    "URY": ("Uruguay", "es", ()),
    "USA": ("United States", "en", ("USA", "US", "United States of America", "America")),
    "VEN": ("Venezuela", "es", ()),
    "VNM": ("Vietnam", "vi", ("Viet Nam",)),
    "ZAF": ("South Africa", "en", ()),
    "ZWE": ("Zimbabwe", "en", ()),
}

_BY_NAME: dict[str, str] = {}
for _code, (_name, _lang, _aliases) in _COUNTRIES.items():
    for _alias in (_name, *_aliases):
        _BY_NAME[_alias.lower()] = _code


def country_name(code: str) -> str:
    """English name of a country code; the code itself where unknown."""
    entry = _COUNTRIES.get(code.upper())
    return entry[0] if entry else code


def main_language(code: str) -> str | None:
    """The country's main language (ISO 639-1), or None where unknown."""
    entry = _COUNTRIES.get(code.upper())
    return entry[1] if entry else None


def resolve_country_code(text: str) -> str | None:
    """An ISO3 code from a code or an English name (case-insensitive), or None."""
    t = text.strip()
    if t.upper() in _COUNTRIES:
        return t.upper()
    return _BY_NAME.get(t.lower())


def code_for_name(name: str) -> str:
    """A stable country code for a name: its ISO3 code when known, else an upper-case slug of the name."""
    code = resolve_country_code(name)
    if code:
        return code
    return re.sub(r"[^A-Za-z0-9]+", "_", name.strip()).strip("_").upper()
