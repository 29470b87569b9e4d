"""The analysis WAV (work/{name}/audio.wav): the rate extract writes it at, and the reader
the speech stages share. numpy and soundfile are imported by the reader only, so the rate
costs extract and translate nothing to import."""

from __future__ import annotations

from pathlib import Path

from dubflow.errors import InputError

ANALYSIS_RATE = 16_000


def read_analysis_wav(path: str | Path, stage: str):
    """16 kHz mono float32; anything else was not written by the extract stage."""
    import numpy as np
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
    return np.ascontiguousarray(audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0])
