"""Generated test conversations: several clearly different voices at known times.

Diarization can only be scored against a reference, and no recorded speech ships with
the repository, so the tests speak their own: Piper's packaged voice (joe), the same voice
shifted up in pitch and formants, and espeak-ng's formant voices (the library that
``espeakng-loader`` bundles, driven by ``tts_backends.ESpeakLibrary``). Each utterance is
trimmed to where it is audible, so the reference turns are the real speech, not the
synthesiser's padding.

Everything is 16 kHz mono float32, the format the extract stage writes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from demo_media import speak as piper_speak
from dubflow.tts_backends import ESpeakLibrary, espeak_library

SAMPLE_RATE = 16_000

# Voices a listener (and a speaker-embedding model) tells apart easily.
VOICES = ("joe", "joe_high", "espeak_f3", "espeak_m3")

LINES = [
    "Good morning, everyone, and thank you for coming in so early today.",
    "We have a lot to get through, so let us start with the budget.",
    "I looked at the numbers last night and they do not add up at all.",
    "Which part worries you the most, the travel costs or the new equipment?",
    "Mostly the equipment. We ordered twice as many cameras as we need.",
    "That was my mistake. I will call the supplier this afternoon.",
    "Good. Next item: the schedule for the autumn recordings.",
    "The studio is free in October, but only on weekdays.",
    "Weekdays are fine for me, as long as we finish before six.",
    "Then let us book the first two weeks and see how far we get.",
    "One more thing. The new microphones arrived yesterday.",
    "Great news. Can someone test them before Friday?",
    "I can do it tomorrow morning, right after the meeting.",
    "Perfect. I think that is everything for today.",
    "Thanks, everyone. See you next week.",
    "Before you go, please leave your notes on my desk.",
]


@dataclass
class RefTurn:
    """Where one voice is audible in a generated conversation (seconds)."""

    start: float
    end: float
    voice: str
    text: str


# ---------------------------------------------------------------------------------------
# Voices
# ---------------------------------------------------------------------------------------


def _pitch_shifted_piper(text: str, factor: float = 1.35) -> tuple[np.ndarray, int]:
    """Joe, higher by ``factor`` in pitch and formants, at normal speed.

    Spoken ``factor`` times slower, then played ``factor`` times faster (resampling):
    tempo comes back to normal while pitch and formants move up, which makes a voice
    that an embedding model hears as another person. No ffmpeg needed.
    """
    audio, rate = piper_speak(text, length_scale=factor)
    up, down = 100, int(round(100 * factor))
    return resample_poly(audio, up, down).astype(np.float32), rate


def _espeak() -> ESpeakLibrary:
    """The process's one espeak-ng instance (the same one the synthesize stage uses)."""
    return espeak_library()


@functools.lru_cache(maxsize=256)
def speak(voice: str, text: str) -> np.ndarray:
    """``text`` in ``voice``, trimmed to the audible part, 16 kHz float32 (read-only)."""
    if voice == "joe":
        audio, rate = piper_speak(text)
    elif voice == "joe_high":
        audio, rate = _pitch_shifted_piper(text)
    elif voice == "espeak_f3":
        audio, rate = _espeak().speak(text, "en-us+f3")
    elif voice == "espeak_m3":
        audio, rate = _espeak().speak(text, "en+m3")
    else:
        raise ValueError(f"unknown voice {voice!r}; choose from {VOICES}")
    g = np.gcd(SAMPLE_RATE, rate)
    audio = resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)
    audio = audio / max(1e-6, float(np.max(np.abs(audio)))) * 0.5  # same loudness for all
    audio = _trim(audio)
    audio.setflags(write=False)  # cached: callers must not change it
    return audio


def _trim(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio[:0]
    return audio[loud[0] : loud[-1] + 1]


# ---------------------------------------------------------------------------------------
# Conversations
# ---------------------------------------------------------------------------------------


def conversation(
    script: list[tuple[str, str]],
    lead_in_s: float = 1.0,
    gap_s: tuple[float, float] = (0.4, 0.9),
    seed: int = 0,
) -> tuple[np.ndarray, list[RefTurn]]:
    """Speak ``(voice, text)`` lines one after another with short random pauses."""
    rng = np.random.default_rng(seed)
    pieces, turns, t = [], [], lead_in_s
    for voice, text in script:
        audio = speak(voice, text)
        pieces.append((t, audio))
        turns.append(RefTurn(t, t + len(audio) / SAMPLE_RATE, voice, text))
        t += len(audio) / SAMPLE_RATE + float(rng.uniform(*gap_s))
    track = np.zeros(int((t + lead_in_s) * SAMPLE_RATE), dtype=np.float32)
    for start, audio in pieces:
        i = int(round(start * SAMPLE_RATE))
        track[i : i + len(audio)] += audio
    # A faint noise floor: real recordings are never digital silence.
    track += rng.normal(0.0, 1e-4, size=track.shape).astype(np.float32)
    return track, turns


def round_robin(voices: list[str], lines: list[str] = LINES) -> list[tuple[str, str]]:
    """Each line to the next voice in turn (a meeting where everyone speaks often)."""
    return [(voices[i % len(voices)], text) for i, text in enumerate(lines)]


def long_conversation(
    minutes: float, voices: tuple[str, ...] = VOICES[:3], seed: int = 0
) -> tuple[np.ndarray, list[RefTurn]]:
    """About ``minutes`` of conversation: the script repeated with random speakers."""
    rng = np.random.default_rng(seed)
    script: list[tuple[str, str]] = []
    seconds = 0.0
    while seconds < minutes * 60:
        text = LINES[len(script) % len(LINES)]
        voice = voices[int(rng.integers(len(voices)))]
        script.append((voice, text))
        seconds += len(speak(voice, text)) / SAMPLE_RATE + 0.65  # 0.65 s: the mean pause
    return conversation(script, seed=seed)


def write_wav(path: str | Path, audio: np.ndarray) -> Path:
    """16 kHz mono PCM16, as work/{name}/audio.wav."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
    return path


def reference_rttm_lines(turns: list[RefTurn], uri: str) -> list[str]:
    """The reference as RTTM lines (voice names as speaker labels)."""
    return [
        f"SPEAKER {uri} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.voice} <NA> <NA>"
        for t in turns
    ]


if __name__ == "__main__":  # listen: PYTHONPATH=workflow/scripts python tests/conversation.py out.wav
    import sys

    audio, turns = conversation(round_robin(list(VOICES[:3])))
    write_wav(sys.argv[1] if len(sys.argv) > 1 else "conversation.wav", audio)
    for turn in turns:
        print(f"{turn.start:7.2f} {turn.end:7.2f} {turn.voice:10s} {turn.text}")
