"""The analysis WAV (work/{name}/audio.wav): the rate extract writes it at, and the reader
the speech stages share; and the one resampler for in-process audio. numpy, soundfile
and scipy are imported by the functions only, so the rate costs extract and translate
nothing to import."""

from __future__ import annotations

from pathlib import Path

from dubflow.errors import InputError

ANALYSIS_RATE = 16_000


def read_analysis_wav(path: str | Path, stage: str):
    """16 kHz mono float32; anything else was not written by the extract stage."""
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise InputError(
            f"{path} is not a readable WAV (stage {stage}): {error}; delete it and re-run "
            f"so the extract stage writes it again"
        ) from None
    if rate != ANALYSIS_RATE:
        raise InputError(
            f"{path} is {rate} Hz but {stage} needs {ANALYSIS_RATE} Hz; it was not written by "
            f"the extract stage, so delete it and re-run"
        )
    return audio.mean(axis=1)  # a new, contiguous array (a copy for mono)


def resample(audio, rate: int, target: int):
    """Polyphase resampling of 1-D ``audio`` by the exact rational ratio (22050 -> 48000
    is 320/147), as float32."""
    if rate == target or len(audio) == 0:
        return audio
    import math

    import numpy as np
    from scipy.signal import resample_poly  # 1 s to import: only when a rate differs

    g = math.gcd(rate, target)
    return resample_poly(audio, target // g, rate // g).astype(np.float32)
