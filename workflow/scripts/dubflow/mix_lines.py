"""The dub's lines: read from the synthesize stage, then each prepared for the control
track (sped up, resampled, cut to its room).

:func:`fit.plan` decides per line: as is, borrow silence, speed up, trim. Only lines that
need it go through ffmpeg (``rubberband``, pitch kept, cached per line); a line from a
voice with another rate than the control track's is resampled in-process, and a line
still longer than its room is cut in its last pause between words.
"""

import collections
import hashlib
import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from dubflow import fit, records
from dubflow.atomic import atomic_path
from dubflow.errors import InputError
from dubflow.ffmpeg_needs import codec, filter_
from dubflow.ffmpeg_safe import file_arg, run_ffmpeg
from dubflow.mix_settings import STAGE, MixSettings
from dubflow.wav import resample

log = logging.getLogger(__name__)

#: A pause between words: this long and this far below the line's peak. A line that must
#: be cut is cut in the last such pause that fits, so no word is cut in half.
PAUSE_MIN_S = 0.04
PAUSE_FLOOR_DB = -30.0
#: Silence kept between a line that borrows time and the next line.
GAP_S = 0.05


def read_lines(tts_dir: str | Path) -> list[dict]:
    """lines.json of the synthesize stage, with each wav's real length as ``duration_s``.

    Every wav is opened (header only) before any audio is processed, so a missing or
    damaged file stops the stage in seconds rather than after an hour of mixing.
    """
    tts_dir = Path(tts_dir)
    index = tts_dir / "lines.json"
    lines = [row.to_dict() for row in records.read_tts_lines(index, STAGE)]
    for line in lines:
        if line["start"] < 0:
            raise InputError(
                f"line {line['id']} of {index} starts at {line['start']} s, before the video "
                f"(stage {STAGE}); re-run the synthesize stage for this video and language "
                "to write it again."
            )
    checked = []
    for line in lines:
        if line.get("wav"):
            line = {**line, "duration_s": _wav_duration(tts_dir, line)}
        checked.append(line)
    return checked


def _wav_duration(tts_dir: Path, line: dict) -> float:
    name = str(line["wav"])
    path = tts_dir / name
    try:
        if Path(name).name != name:
            raise ValueError("the name must be a plain file name inside the tts folder")
        info = sf.info(str(path))
        if info.frames <= 0:
            raise ValueError("it holds no audio")
    except (OSError, ValueError, RuntimeError, sf.LibsndfileError) as error:
        raise _bad_wav(path, line, error) from None
    return info.frames / info.samplerate


def _bad_wav(path: Path, line: dict, error: Exception) -> InputError:
    problem = "does not exist" if not path.exists() else f"is not a readable WAV ({_reason(error)})"
    return InputError(
        f"{path} (line {line.get('id')}) {problem} (stage {STAGE}); re-run the synthesize "
        "stage for this video and language to write it again."
    )


def _reason(error: Exception) -> str:
    """The short cause of an error, without the path the sentence already names."""
    text = (getattr(error, "error_string", None) or getattr(error, "strerror", None)
            or str(error) or type(error).__name__)
    return text.splitlines()[0].rstrip(".").lower()


def line_audio(
    placement: fit.Placement, wav: Path, cfg: MixSettings, workdir: Path,
    ffmpeg: dict | None, tempo_cache: Path | None = None, control_rate: int | None = None,
    cuts: dict | None = None,
) -> np.ndarray:
    """One line as mono float32 at the control track's rate: sped up, resampled, cut to
    its room."""
    control_rate = control_rate or cfg.sample_rate
    source = wav
    if placement.speed > 1.0:
        source = sped_up(wav, placement, workdir, ffmpeg, tempo_cache)
    try:
        audio, rate = sf.read(str(source), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as error:
        raise _bad_wav(wav, {"id": placement.id}, error) from None
    finally:
        if source.parent == workdir:
            source.unlink(missing_ok=True)
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    mono = resample(mono, rate, control_rate)
    room = room_frames(placement, control_rate)
    if len(mono) > room:
        cut = last_pause(mono, room, control_rate)
        if cuts is not None:
            cuts[placement.id] = {"kept_s": round(cut / control_rate, 3),
                                  "at_pause": cut < room,
                                  "dropped_share": round(speech_share_after(mono, cut,
                                                                            control_rate), 3)}
        mono = fade_out(mono[:cut], int(cfg.fade_ms / 1000 * control_rate))
    return np.ascontiguousarray(mono, dtype=np.float32)


def _frame_levels(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """RMS in dB below the line's peak, per 10 ms frame."""
    hop = max(1, rate // 100)
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop).astype(np.float64)
    rms = np.sqrt((frames ** 2).mean(axis=1)) + 1e-9
    return 20 * np.log10(rms / (rms.max() if len(rms) else 1.0)), hop


def last_pause(audio: np.ndarray, room: int, rate: int) -> int:
    """Where to cut a line that needs more than ``room`` frames: the middle of the last
    pause between words that ends inside the room, so the line ends on a whole word;
    ``room`` itself when the line has no such pause (one long word: flagged by the caller)."""
    levels, hop = _frame_levels(audio, rate)
    quiet = levels < PAUSE_FLOOR_DB
    need = max(1, round(PAUSE_MIN_S * rate / hop))
    last_frame = min(room // hop, len(quiet))
    best, run = None, 0
    for i in range(last_frame):
        run = run + 1 if quiet[i] else 0
        if run >= need and np.any(~quiet[: i - run + 1]):  # speech before it: between words
            best = (i - run // 2) * hop
    return min(best, room) if best else room


def speech_share_after(audio: np.ndarray, cut: int, rate: int) -> float:
    """Share of the line's voiced frames after ``cut``: how much of it the viewer loses."""
    levels, hop = _frame_levels(audio, rate)
    voiced = levels >= PAUSE_FLOOR_DB
    total = int(voiced.sum())
    return float(voiced[cut // hop:].sum()) / total if total else 0.0


def sped_up(wav: Path, placement: fit.Placement, workdir: Path, ffmpeg: dict | None,
            tempo_cache: Path | None) -> Path:
    """The line at ``placement.speed``, from the cache when this audio was sped up before.

    One ffmpeg call per sped-up line took 6 of the 20 s of a 10-minute mix; after an edit
    every other line is unchanged, so the cache (keyed by the audio's bytes and the exact
    filter) turns that into file reads.
    """
    tempo = tempo_filter(placement.speed, ffmpeg)
    cached = None
    if tempo_cache is not None:
        digest = hashlib.sha256(wav.read_bytes() + tempo.encode()).hexdigest()
        cached = tempo_cache / digest[:2] / f"{digest}.wav"
        if cached.is_file():
            return cached
    dest = cached or workdir / "tempo.wav"  # lines are prepared one at a time
    with atomic_path(dest) as tmp:
        run_ffmpeg(
            ["-i", file_arg(wav), "-af", tempo, *codec("pcm_f32le"), file_arg(tmp)],
            stage=STAGE, path=wav, config=ffmpeg, media_duration_s=placement.natural_s,
        )
    return dest


#: Whether each configured ffmpeg has rubberband (asked once per process and binary).
_RUBBERBAND: dict[str, bool] = {}


def tempo_filter(speed: float, ffmpeg: dict | None) -> str:
    """rubberband (pitch kept, exact length); atempo where an ffmpeg build lacks it.

    The pip-installed static ffmpeg has rubberband; a conda or distribution build may
    not, and a dub with slightly plainer speed-ups beats a failed run.
    """
    binary = str((ffmpeg or {}).get("ffmpeg") or "auto")
    if binary not in _RUBBERBAND:
        result = run_ffmpeg(["-h", "filter=rubberband"], stage=STAGE, path=None, config=ffmpeg)
        _RUBBERBAND[binary] = "rubberband AVOptions" in result.stdout
        if not _RUBBERBAND[binary]:
            log.warning("this ffmpeg (%s) has no rubberband filter; lines are sped up with "
                        "atempo instead", binary)
    return filter_("rubberband" if _RUBBERBAND[binary] else "atempo", tempo=f"{speed:.6f}")


def voice_rate(lines: list[dict], cfg: MixSettings) -> int:
    """The control track's rate: that of most lines, so most need no resampling here.

    Resampling every line in Python (and importing scipy.signal, 0.7 s) was a tenth of
    the stage; ffmpeg's resampler does the whole track in the graph for less.
    """
    rates = collections.Counter(int(line["sample_rate"]) for line in lines
                                if line.get("sample_rate"))
    return rates.most_common(1)[0][0] if rates else cfg.sample_rate


def room_frames(placement: fit.Placement, rate: int) -> int:
    """Frames a line may fill: up to where the plan's available time ends, in samples.

    Computed from the two rounded sample positions (not from the length alone), so a line
    never reaches the sample where the next one starts, whatever the rounding.
    """
    start = round(placement.start * rate)
    return max(0, round((placement.start + placement.available_s) * rate) - start)


def fade_out(audio: np.ndarray, frames: int) -> np.ndarray:
    """Linear fade over the last ``frames`` samples, so a cut line does not click."""
    frames = min(frames, len(audio))
    if frames > 0:
        audio = audio.copy()
        audio[-frames:] *= np.linspace(1.0, 0.0, frames, dtype=np.float32)
    return audio
