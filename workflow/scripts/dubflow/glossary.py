"""Translation glossaries: a show's names and jargon, translated the same way every time.

A glossary is a per-language-pair TSV of ``source term<TAB>target term`` (a row with only
a source term keeps it unchanged, which is what names want). Terms match whole words,
case-insensitively, longest first, so "cat" never touches "category".

Machine translation is told nothing about glossaries, so each term is hidden behind a
placeholder (``ZX1``, ``ZX2``, ...) that the engine copies through like an unknown name,
and the target term is put back afterwards. Checked with the bundled bergamot en->pt
model: capital-letters+digit tokens come back verbatim, while ``{1}``, ``<1>``, ``@1@``,
``#1`` and symbols are rewritten or dropped. If a placeholder does not come back exactly
once, ``restore`` says so and the caller falls back to a plain translation.

The price of a placeholder: the engine cannot see the word, so agreement around it (the
article's gender) and compounds ("cat food") may come out wrong, and each inflected form
("cats") needs its own row.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from dubflow.errors import InputError

PLACEHOLDER_PREFIXES = ("ZX", "QX", "XQ", "ZQ")
HEADER_SOURCE = {"source", "source term", "source_term", "term", "src"}
HEADER_TARGET = {"target", "target term", "target_term", "translation", "tgt"}
SENTENCE_START = re.compile(r"(?:^|[.!?…]\s+)[\"'“«(¿¡]*$")


@dataclass(frozen=True)
class Protected:
    """A text with its glossary terms hidden behind placeholders."""

    text: str
    prefix: str = ""
    targets: tuple[str, ...] = ()  # targets[i] goes where f"{prefix}{i + 1}" is


@dataclass(frozen=True)
class Glossary:
    terms: dict[str, str] = field(default_factory=dict)  # lower-cased source -> target
    digest: str = ""  # sha256 of the file: part of every cache key

    @functools.cached_property
    def pattern(self) -> re.Pattern | None:
        if not self.terms:
            return None
        alternatives = "|".join(re.escape(t) for t in sorted(self.terms, key=len, reverse=True))
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def protect(self, text: str) -> Protected:
        """Replace each term occurrence by its own numbered placeholder."""
        if self.pattern is None or not self.pattern.search(text):
            return Protected(text)
        prefix = next((p for p in PLACEHOLDER_PREFIXES if p.lower() not in text.lower()), None)
        if prefix is None:  # the text itself is full of placeholder look-alikes
            return Protected(text)
        targets: list[str] = []

        def hide(match: re.Match) -> str:
            targets.append(self.terms[match.group(0).lower()])
            return f"{prefix}{len(targets)}"

        return Protected(self.pattern.sub(hide, text), prefix, tuple(targets))

    def restore(self, translated: str, protected: Protected) -> str | None:
        """Put the target terms back; None if the engine lost or repeated a placeholder."""
        if not protected.targets:
            return translated
        slot = re.compile(rf"(?<![^\W\d_]){protected.prefix}[\s-]?(\d+)(?!\d)", re.IGNORECASE)
        found = sorted(int(m.group(1)) for m in slot.finditer(translated))
        if found != list(range(1, len(protected.targets) + 1)):
            return None
        return slot.sub(lambda m: _cased(protected.targets[int(m.group(1)) - 1], m), translated)

    def substitute(self, text: str) -> str:
        """Replace terms in place: for text no engine rewrites (copies, Whisper output)."""
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda m: _cased(self.terms[m.group(0).lower()], m), text)


def _cased(term: str, match: re.Match) -> str:
    """Capitalise an all-lower-case term that lands at the start of a sentence
    ("bichano" -> "Bichano", but "iPhone" stays)."""
    if term == term.lower() and SENTENCE_START.search(match.string[: match.start()]):
        return term[:1].upper() + term[1:]
    return term


def load_glossary(path: str | Path | None, pair: str) -> Glossary:
    """Read a glossary TSV; an optional first row may name the columns.

    ``#`` starts a comment line. The file's bytes are hashed, so editing the glossary
    re-translates every line of that pair instead of serving stale cached text.
    """
    if not path:
        return Glossary()
    path = Path(path)
    where = f"the glossary {path} (config key translation.glossary['{pair}'])"
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except OSError as error:
        raise InputError(
            f"{where} cannot be read ({error.strerror}); fix the path or remove the entry"
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"{where} is not UTF-8 text; save it as UTF-8 and re-run") from None
    source_language, _, target_language = pair.partition("-")
    rows = [(number, [c.strip() for c in row])
            for number, row in enumerate(csv.reader(text.splitlines(), delimiter="\t"), start=1)]
    rows = [(n, cells) for n, cells in rows if any(cells) and not cells[0].startswith("#")]
    if rows and _is_header(rows[0][1], source_language, target_language):
        rows = rows[1:]
    terms: dict[str, str] = {}
    for number, cells in rows:
        source = cells[0]
        target = cells[1] if len(cells) > 1 and cells[1] else source
        if not source:
            raise InputError(
                f"{where} has no source term on line {number}; each line must be "
                f"'source term<TAB>target term' (or just a term to keep unchanged)"
            )
        previous = terms.get(source.lower())
        if previous is not None and previous != target:
            raise InputError(
                f"{where} translates {source!r} twice (line {number}: {target!r}, before: "
                f"{previous!r}); keep one of the two lines"
            )
        terms[source.lower()] = target
    return Glossary(terms, hashlib.sha256(raw).hexdigest())


def _is_header(cells: list[str], source_language: str, target_language: str) -> bool:
    if len(cells) < 2:
        return False
    first, second = cells[0].lower(), cells[1].lower()
    return (first in HEADER_SOURCE or first == source_language) and (
        second in HEADER_TARGET or second == target_language
    )
