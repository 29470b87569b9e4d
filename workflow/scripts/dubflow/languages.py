"""Language codes: dubflow speaks ISO 639-1 (Whisper's codes), Matroska wants ISO 639-2."""

from __future__ import annotations

import functools

import pycountry

UNDETERMINED = "und"


@functools.cache
def _lookup(code: str):
    code = (code or "").strip().lower()
    if len(code) == 2:
        return pycountry.languages.get(alpha_2=code)
    if len(code) == 3:
        return pycountry.languages.get(alpha_3=code) or pycountry.languages.get(
            bibliographic=code
        )
    return None


def iso639_2(code: str) -> str:
    """Three-letter tag for a track: the bibliographic form where one exists (ger, fre, chi),
    which is what Matroska players match on; 'und' for unknown codes."""
    language = _lookup(code)
    if language is None:
        return UNDETERMINED
    return getattr(language, "bibliographic", None) or language.alpha_3


def language_name(code: str) -> str:
    """English name for track titles ('pt' -> 'Portuguese'); the code itself if unknown."""
    language = _lookup(code)
    return language.name if language is not None else code


def bcp47(code: str) -> str:
    """BCP-47 primary language subtag for a track: the two-letter code where one exists
    (``por``/``pt`` -> ``pt``, ``ger`` -> ``de``), else the ISO 639-3 code; 'und' if unknown."""
    language = _lookup(code)
    if language is None:
        return UNDETERMINED
    return getattr(language, "alpha_2", None) or language.alpha_3
