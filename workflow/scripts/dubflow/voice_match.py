"""Which Kokoro voice speaks for which speaker: matched by pitch, chosen for clarity.

A dub voice an octave away from the person on screen is jarring (a woman dubbed by a
100 Hz male voice), and a voice nobody understands defeats the dub. The voice catalogue
(``workflow/resources/voice_catalogue.yaml``, built once by ``tools/build_voice_catalogue.py``)
holds, per language, each shipped voice and blend with its measured median F0, its word
error rate through Whisper, and the speed that gives it a natural pace. Each speaker's own
median F0 is measured from their lines in the source; then, speaker by speaker (most
speech first), the unused voice on the same side of ``REGISTER_SPLIT_HZ`` that is nearest
in pitch among the clearest ones is taken. Hand-mapped voices (tts.voices) always win.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from dubflow.pitch import median_f0, octaves_apart

CATALOGUE = Path(__file__).resolve().parents[2] / "resources" / "voice_catalogue.yaml"
# Below this a voice counts as low (male), above it as high (female): typical adult F0s
# are 85-155 Hz and 165-255 Hz.
REGISTER_SPLIT_HZ = 160.0
# Voices whose WER is within this of the clearest one in the register count as clear.
CLEAR_MARGIN = 0.10
MIN_VOICED_S = 1.0  # a speaker with less speech than this gets no F0 (matched by order)
# A median over half a minute of a speaker's speech is as good as over an hour, and YIN costs
# ~7 ms per second of audio: 4.7 s on every synthesize run of a 10-minute video before.
MAX_PITCH_S = 30.0


@functools.cache
def load_catalogue() -> dict:
    import yaml

    return yaml.safe_load(CATALOGUE.read_text(encoding="utf-8")) or {}


def measured(language: str) -> dict[str, dict]:
    """The catalogue's voices for ``language`` (Kokoro's and espeak-ng's) by name."""
    return ((load_catalogue().get("languages") or {}).get(language) or {}).get("voices") or {}


def catalogue_voices(language: str) -> list[dict]:
    """The Kokoro voices measured for ``language``: name, f0_hz, wer, speed; clearest first."""
    voices = [{"name": name, **figures} for name, figures in measured(language).items()
              if not name.startswith("espeak")]
    return sorted(voices, key=lambda v: (v["wer"], v["name"]))


def kokoro_is_better(language: str) -> bool:
    """True when the clearest Kokoro voice beat espeak-ng's on the catalogue's sentences."""
    espeak = [f["wer"] for name, f in measured(language).items() if name.startswith("espeak")]
    voices = catalogue_voices(language)
    return bool(voices) and (not espeak or voices[0]["wer"] < min(espeak))


def spec_of(voice: dict) -> str:
    """The voice spec of a catalogue voice, at its calibrated speed."""
    speed = float(voice.get("speed") or 1.0)
    return f"kokoro:{voice['name']}" + (f"@speed={speed:g}" if abs(speed - 1) > 1e-9 else "")


def speaker_pitches(audio: np.ndarray, rate: int,
                    spans: Iterable[tuple[str, float, float]]) -> dict[str, float | None]:
    """Each speaker's median F0 over their own lines (``(speaker, start, end)``, seconds);
    None for a speaker with too little speech to measure. A speaker with more than
    MAX_PITCH_S of lines is measured on lines spread evenly over the whole video."""
    by_speaker: dict[str, list[np.ndarray]] = {}
    for speaker, start, end in sorted(spans, key=lambda span: span[1]):
        piece = audio[max(0, int(start * rate)):max(0, int(end * rate))]
        by_speaker.setdefault(speaker, []).append(piece)
    pitches: dict[str, float | None] = {}
    for speaker, pieces in by_speaker.items():
        stride = math.ceil(sum(len(piece) for piece in pieces) / (MAX_PITCH_S * rate))
        joined = np.concatenate(pieces[::max(1, stride)])
        f0 = median_f0(joined, rate) if len(joined) >= MIN_VOICED_S * rate else float("nan")
        pitches[speaker] = None if math.isnan(f0) else round(f0, 1)
    return pitches


def match(speakers: list[str], pitches: dict[str, float | None], voices: list[dict],
          taken: Iterable[str] = ()) -> dict[str, dict]:
    """speaker -> catalogue voice, distinct; speakers are served in the order given (the
    caller puts the most-heard first). A speaker without a pitch takes the clearest
    unused voice; one the catalogue cannot serve any more is left out (the caller falls
    back to other voices)."""
    free = [v for v in voices if spec_of(v) not in set(taken)]
    chosen: dict[str, dict] = {}
    for speaker in speakers:
        if not free:
            break
        f0 = pitches.get(speaker)
        if f0 is None:
            pick = free[0]
        else:
            low = f0 < REGISTER_SPLIT_HZ
            same = [v for v in free if (v["f0_hz"] < REGISTER_SPLIT_HZ) == low] or free
            best = min(v["wer"] for v in same)
            clear = [v for v in same if v["wer"] <= best + CLEAR_MARGIN]
            pick = min(clear, key=lambda v: (octaves_apart(v["f0_hz"], f0), v["wer"]))
        chosen[speaker] = pick
        free.remove(pick)
    return chosen
