"""Speech synthesis backends: Kokoro and Piper (neural), espeak-ng (formant), Coqui (optional).

Kokoro lives in kokoro_voice.py (its model install and voice blends); this module holds
the spec syntax every backend shares and the other three backends.

Each backend is an object that loads its voice or model once and then turns one line of
text into float32 mono samples at the voice's own rate. Piper runs with its noise terms
at 0 and Coqui is seeded per line, so the same text gives the same samples; espeak-ng
repeats itself up to a pitch-flutter phase it carries from one utterance to the next
(a few samples). Re-runs are byte-identical because the synthesize
stage caches every line by content, not because every synthesiser is.

A voice is named by a spec string (``piper:joe``, ``espeak:pt-br+f3@pitch=60``,
``coqui:Ana Florence``); :func:`parse_spec` turns it into a :class:`VoiceSpec`. Which
voice a speaker gets is decided in ``voices.py``; this module only makes sound.

Heavy imports (onnxruntime through piper, torch through Coqui) happen when a backend is
built, never at import time, so the Snakefile can import the parse-time checks cheaply.

Why one module of about 570 lines: the three backends are 100-150 lines each and share
the spec syntax they are built from (:class:`VoiceSpec`, :func:`parse_spec`, which checks
each backend's options); a module per backend would part the parser from what it checks.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import itertools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dubflow.errors import ModelError

ALIASES = {"espeak-ng": "espeak", "espeakng": "espeak"}
# What may follow '@' in a spec, per backend. `shift` moves pitch and formants of a
# neural voice by a factor (see shift_voice): the way one Piper or Coqui voice becomes
# several distinct speakers when a language has fewer voices than the video has speakers.
PARAMS: dict[str, dict[str, tuple[float, float]]] = {
    "piper": {"speaker": (0, 10_000), "shift": (0.5, 2.0)},
    "espeak": {"pitch": (0, 100), "rate": (80, 450)},
    "coqui": {"shift": (0.5, 2.0)},
    # a Kokoro voice's own pace (the catalogue's calibrated speed), times tts.speed
    "kokoro": {"speed": (0.5, 2.0)},
}
COQUI_INSTALL_HINT = 'pip install -e ".[coqui]"'
ESPEAK_DEFAULT_RATE = 175  # words per minute; espeak-ng's own default
ESPEAK_DEFAULT_PITCH = 50  # 0-100; espeak-ng's own default


# ---------------------------------------------------------------------------------------
# Voice specs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceSpec:
    """A parsed voice spec: backend, voice name (may be empty) and sorted parameters."""

    backend: str
    name: str = ""
    params: tuple[tuple[str, str], ...] = ()

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self.param(key)
        return default if value is None else float(value)

    def with_params(self, **values: Any) -> VoiceSpec:
        merged = dict(self.params)
        merged.update({k: f"{float(v):g}" for k, v in values.items() if v is not None})
        return VoiceSpec(self.backend, self.name, tuple(sorted(merged.items())))

    def __str__(self) -> str:
        text = self.backend + (f":{self.name}" if self.name else "")
        if self.params:
            text += "@" + ",".join(f"{k}={v}" for k, v in self.params)
        return text


def parse_spec(spec: str) -> VoiceSpec:
    """``backend[:name][@key=value,...]`` -> VoiceSpec; ValueError says what is wrong.

    The returned spec prints in one canonical form (parameters sorted, numbers tidied),
    which is what lines.json records and what the cache key hashes.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("a voice spec must be a non-empty string like 'espeak:pt-br+f3'")
    text = spec.strip()
    params: dict[str, str] = {}
    head, at, tail = text.rpartition("@")
    if at and tail and all("=" in part for part in tail.split(",")):
        text = head
        for part in tail.split(","):
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip()
    backend, _, name = text.partition(":")
    backend = ALIASES.get(backend.strip().lower(), backend.strip().lower())
    name = name.strip()
    if backend not in PARAMS:
        raise ValueError(
            f"'{spec}' names no known backend (use kokoro:, piper:, espeak: or coqui:)"
        )
    if backend in ("piper", "espeak", "kokoro") and not name:
        raise ValueError(f"'{spec}' names no voice after '{backend}:'")
    allowed = PARAMS[backend]
    for key, value in params.items():
        if key not in allowed:
            raise ValueError(
                f"'{spec}' has parameter '{key}', but {backend} voices take only "
                f"{', '.join(sorted(allowed))}"
            )
        if key == "speaker" and not _is_number(value):
            continue  # a Piper speaker may be named
        low, high = allowed[key]
        if not _is_number(value) or not low <= float(value) <= high:
            raise ValueError(f"'{spec}' sets {key}={value}; use a number from {low:g} to {high:g}")
        params[key] = f"{float(value):g}"
    return VoiceSpec(backend, name, tuple(sorted(params.items())))


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# espeak-ng through ctypes
# ---------------------------------------------------------------------------------------


class _EspeakVoice(ctypes.Structure):
    """espeak_VOICE from speak_lib.h, as espeak_ListVoices returns it (read only)."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, name, NUL)*, then NUL
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class ESpeakLibrary:
    """espeak-ng's C API through ctypes, synchronous mode, into a sample buffer.

    The library is one global synthesiser per process (voice, rate and pitch are global
    state), so every call holds a lock and sets all of them; there is no subprocess and
    no audio device. The library and its voice data come from the espeakng-loader wheel,
    so nothing has to be installed system-wide.
    """

    _CALLBACK = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
    )
    _RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4  # espeak_PARAMETER

    def __init__(self) -> None:
        import espeakng_loader

        self.library_path = Path(espeakng_loader.get_library_path())
        self.data_path = Path(espeakng_loader.get_data_path())
        self._lib = ctypes.CDLL(str(self.library_path))
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        self._lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Info.restype = ctypes.c_char_p
        self._lib.espeak_Info.argtypes = [ctypes.c_void_p]
        # espeak-ng seeds its noise generator (breathy voices) from the clock; a fixed
        # seed per line makes that part repeatable (its pitch-flutter phase is not).
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        synchronous = 2  # AUDIO_OUTPUT_SYNCHRONOUS
        rate = self._lib.espeak_Initialize(synchronous, 0, str(self.data_path.parent).encode(), 0)
        if rate <= 0:
            raise ModelError(
                f"espeak-ng from {self.library_path} failed to start (stage synthesize); "
                f"reinstall it with `pip install --force-reinstall espeakng-loader==0.2.4`"
            )
        self.rate = rate
        self.version = (self._lib.espeak_Info(None) or b"").decode()
        self._chunks: list[np.ndarray] = []
        self._callback = self._CALLBACK(self._collect)  # keep a reference alive
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    def _collect(self, wav, num_samples, _events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def has_voice(self, voice: str) -> bool:
        """True if espeak-ng knows ``voice`` (a name like 'pt-br', optionally '+variant').

        espeak-ng ignores an unknown '+variant' silently, so variants are checked against
        the voice data on disk.
        """
        base, _, variant = voice.partition("+")
        if variant and not (self.data_path / "voices" / "!v" / variant).is_file():
            return False
        with self._lock:
            return self._lib.espeak_SetVoiceByName(base.encode()) == 0

    def list_voices(self) -> list[tuple[str, list[tuple[int, str]]]]:
        """(identifier, [(priority, language), ...]) of every voice in the data."""
        with self._lock:  # a NULL-terminated array of pointers
            voices = [voice.contents for voice in itertools.takewhile(
                bool, self._lib.espeak_ListVoices(None))]
            return [((voice.identifier or b"").decode(), _languages(voice.languages))
                    for voice in voices]

    def voice_for_language(self, code: str) -> str | None:
        """The espeak-ng voice name for an ISO 639 code ('zh' -> 'cmn'), or None."""
        code = code.strip().lower()
        if not code:
            return None
        if self.has_voice(code):
            return code
        matches = sorted(
            (language != code, priority, identifier)
            for identifier, languages in self.list_voices()
            for priority, language in languages
            if language == code or language.startswith(code + "-")
        )
        if not matches:
            return None
        identifier = matches[0][2]
        name = identifier.rsplit("/", 1)[-1]
        return name if self.has_voice(name) else identifier

    def speak(self, text: str, voice: str, rate: int | None = None,
              pitch: int | None = None) -> tuple[np.ndarray, int]:
        """``text`` in ``voice`` as float32 in [-1, 1] and the sample rate (22050 Hz)."""
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise RuntimeError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(self._RATE, int(rate or ESPEAK_DEFAULT_RATE), 0)
            self._lib.espeak_SetParameter(self._PITCH, int(
                ESPEAK_DEFAULT_PITCH if pitch is None else pitch), 0)
            self._lib.espeak_ng_SetRandSeed(0)
            self._chunks = []
            data = text.encode() + b"\0"
            # position 0, POS_CHARACTER, no end position, espeakCHARS_AUTO (UTF-8), no SSML
            self._lib.espeak_Synth(data, len(data), 0, 1, 0, 0, None, None)
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        audio = np.concatenate(chunks or [np.zeros(0, dtype=np.int16)])
        return audio.astype(np.float32) / 32768.0, self.rate


def _languages(pointer: int | None) -> list[tuple[int, str]]:
    """Decode espeak_VOICE.languages: a priority byte, a NUL-terminated name, repeated."""
    found: list[tuple[int, str]] = []
    offset = 0
    while pointer:
        priority = ctypes.string_at(pointer + offset, 1)[0]
        if priority == 0:
            break
        name = ctypes.string_at(pointer + offset + 1)
        found.append((priority, name.decode(errors="replace").lower()))
        offset += len(name) + 2
    return found


@functools.cache
def espeak_library() -> ESpeakLibrary:
    """The one espeak-ng instance of this process (the C library is a singleton)."""
    return ESpeakLibrary()


def espeak_available() -> bool:
    return importlib.util.find_spec("espeakng_loader") is not None


def espeak_identity() -> str:
    """What the espeak-ng audio depends on besides the text: library and data version."""
    library = espeak_library()
    stat = library.library_path.stat()
    return f"espeak-ng|{library.version}|{stat.st_size}|{stat.st_mtime_ns}"


class ESpeakBackend:
    """espeak-ng voices by name; rate and pitch from the spec, rate scaled by speed."""

    name = "espeak"

    def __init__(self) -> None:
        self.library = espeak_library()

    def synthesize(self, text: str, spec: VoiceSpec, speed: float = 1.0) -> tuple[np.ndarray, int]:
        rate = spec.number("rate", ESPEAK_DEFAULT_RATE) * speed
        return self.library.speak(text, spec.name, rate=round(min(max(rate, 80), 450)),
                                  pitch=round(spec.number("pitch", ESPEAK_DEFAULT_PITCH)))


# ---------------------------------------------------------------------------------------
# Piper
# ---------------------------------------------------------------------------------------


def read_piper_config(config_path: str | Path) -> dict:
    with open(config_path, encoding="utf-8") as handle:
        return json.load(handle)


def piper_language(config: dict) -> str:
    """ISO 639-1 family of a Piper voice from its .onnx.json ('pt_BR' -> 'pt')."""
    language = config.get("language") or {}
    code = language.get("family") or language.get("code") or config.get("espeak", {}).get("voice", "")
    return str(code).replace("_", "-").split("-")[0].lower()


def piper_speakers(config: dict) -> list[str]:
    """Speaker names of a multi-speaker Piper voice, in id order; [] for one speaker."""
    if int(config.get("num_speakers", 1)) <= 1:
        return []
    id_map = config.get("speaker_id_map") or {}
    if id_map:
        return [name for name, _ in sorted(id_map.items(), key=lambda item: item[1])]
    return [str(i) for i in range(int(config["num_speakers"]))]


class PiperBackend:
    """One Piper voice (ONNX), loaded once.

    One thread per session run; the stage runs several lines at once instead. On 2 cores
    and 20 short lines that was a little faster than one line at a time on 2 intra-op
    threads (4.0 s against 4.4 s) and degrades less when other jobs share the cores
    (onnxruntime spins its worker threads while waiting).
    """

    name = "piper"

    def __init__(self, model_path: str | Path, config_path: str | Path) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        options = onnxruntime.SessionOptions()
        # onnxruntime ignores OMP_NUM_THREADS and would start one thread per core.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.voice = PiperVoice(
            config=PiperConfig.from_dict(read_piper_config(config_path)),
            session=onnxruntime.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            ),
        )
        self.sample_rate = self.voice.config.sample_rate

    def speaker_id(self, spec: VoiceSpec) -> int | None:
        speaker = spec.param("speaker")
        if speaker is None or self.voice.config.num_speakers <= 1:
            return None
        if _is_number(speaker):
            return int(float(speaker))
        return int(self.voice.config.speaker_id_map[speaker])

    def synthesize(self, text: str, spec: VoiceSpec, speed: float = 1.0) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        # noise at 0: the same text gives the same samples, so lines can be cached;
        # the voice's own pace (its config's length_scale) is the 1.0 that speed scales.
        config = SynthesisConfig(speaker_id=self.speaker_id(spec), noise_scale=0.0,
                                 noise_w_scale=0.0,
                                 length_scale=self.voice.config.length_scale / speed)
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, syn_config=config)]
        audio = np.concatenate(chunks or [np.zeros(0, dtype=np.float32)])
        return audio.astype(np.float32), self.sample_rate


@functools.lru_cache(maxsize=4)
def load_piper(model_path: str, config_path: str, identity: str = "") -> PiperBackend:
    """A Piper voice loaded once per process (``identity`` changes when the file does)."""
    return PiperBackend(model_path, config_path)


# ---------------------------------------------------------------------------------------
# Coqui TTS (optional extra)
# ---------------------------------------------------------------------------------------


def coqui_available() -> bool:
    return importlib.util.find_spec("TTS") is not None


def coqui_checkpoint(folder: Path) -> Path | None:
    """The weights file of a Coqui model folder (names differ between releases)."""
    for name in ("model.pth", "model_file.pth", "best_model.pth", "checkpoint.pth"):
        if (folder / name).is_file():
            return folder / name
    weights = [p for p in folder.glob("*.pth")
               if not p.name.startswith(("speakers", "dvae", "mel_stats"))]
    return max(weights, key=lambda p: p.stat().st_size, default=None)


def coqui_speaker_names(folder: str | Path) -> list[str] | None:
    """Built-in speakers of a Coqui model folder, sorted, without loading the model.

    None when the folder keeps them in a form only the model can read (then the caller
    loads the model and asks it). Sorted, like CoquiBackend.speakers, so both agree.
    """
    folder = Path(folder)
    if (folder / "speakers.json").is_file():
        with open(folder / "speakers.json", encoding="utf-8") as handle:
            names = sorted(json.load(handle))
        return names if len(names) > 1 else []
    for name in ("speakers_xtts.pth", "speakers.pth"):
        if (folder / name).is_file() and importlib.util.find_spec("torch") is not None:
            import torch

            names = sorted(torch.load(folder / name, map_location="cpu", weights_only=True))
            return names if len(names) > 1 or name == "speakers_xtts.pth" else []
    return None


def coqui_language(language: str, language_code: str | None = None) -> str:
    """The language name a Coqui model expects: tts.coqui.language_code, else the ISO
    code (XTTS spells Chinese 'zh-cn')."""
    return language_code or {"zh": "zh-cn"}.get(language, language)


def read_coqui_config(folder: str | Path) -> dict:
    with open(Path(folder) / "config.json", encoding="utf-8") as handle:
        return json.load(handle)


class CoquiBackend:
    """A local Coqui TTS model folder: XTTS (cloning, built-in speakers) or VITS-like.

    Loaded through ``TTS.api.TTS(model_path=..., config_path=...)``, coqui-tts's public
    entry point (its lower classes change between releases). ``coqui-tts`` is an optional
    extra, so it is imported here, only when a Coqui voice is actually used.
    """

    name = "coqui"

    def __init__(self, model_dir: str | Path, language_code: str | None = None,
                 threads: int = 1, default_speaker: str | None = None) -> None:
        try:
            from TTS.api import TTS
        except ImportError as error:
            raise ModelError(
                f"the Coqui model {model_dir} (config key tts.coqui.model_dir) needs the "
                f"optional coqui-tts package, which is not importable ({error}); install it "
                f"with `{COQUI_INSTALL_HINT}` or choose tts.backend piper or espeak"
            ) from None
        import torch

        torch.set_num_threads(max(1, threads))
        self.folder = Path(model_dir)
        self.config_dict = read_coqui_config(self.folder)
        self.is_xtts = self.config_dict.get("model") == "xtts"
        self.language_code = language_code
        config = str(self.folder / "config.json")
        if self.is_xtts:
            # XTTS loads itself from its folder (model.pth, vocab.json, speakers_xtts.pth).
            self.api = TTS(model_path=str(self.folder), config_path=config, progress_bar=False)
        else:
            speakers = next((self.folder / n for n in ("speakers.pth", "speakers.json")
                             if (self.folder / n).is_file()), None)
            self.api = TTS(model_path=str(coqui_checkpoint(self.folder)),
                           config_path=config, progress_bar=False,
                           speakers_file_path=str(speakers) if speakers else None)
        self.model = self.api.synthesizer.tts_model
        self.sample_rate = int(self.api.synthesizer.output_sample_rate)
        self.default_speaker = default_speaker
        self._latents: dict[str, Any] = {}

    @property
    def speakers(self) -> list[str]:
        """The model's built-in speakers, sorted ([] for a single-speaker model)."""
        manager = getattr(self.model, "speaker_manager", None)
        if manager is None:
            return []
        if self.is_xtts:
            return sorted(getattr(manager, "speakers", None) or {})
        names = sorted(getattr(manager, "speaker_names", None) or [])
        return names if len(names) > 1 else []

    def synthesize(self, text: str, spec: VoiceSpec, speed: float = 1.0,
                   language: str = "", reference: Path | None = None,
                   seed: int = 0) -> tuple[np.ndarray, int]:
        import torch

        torch.manual_seed(seed)  # XTTS samples, VITS draws noise: a fixed seed repeats
        language = coqui_language(language, self.language_code)
        speaker = spec.name or self.default_speaker or next(iter(self.speakers), None)
        if self.is_xtts:
            gpt_cond_latent, speaker_embedding = self._xtts_voice(speaker, reference)
            out = self.model.inference(text, language, gpt_cond_latent, speaker_embedding,
                                       speed=speed, enable_text_splitting=True)
            return np.asarray(out["wav"], dtype=np.float32).reshape(-1), self.sample_rate
        if hasattr(self.model, "length_scale"):
            # VITS reads its duration scale from the model at every call.
            base = float(self.config_dict.get("model_args", {}).get("length_scale", 1.0))
            self.model.length_scale = base / speed
        wav = self.api.tts(
            text,
            speaker=speaker if reference is None and self.speakers else None,
            language=language if self.api.is_multi_lingual else None,
            speaker_wav=str(reference) if reference is not None else None,
            split_sentences=True,
        )
        return np.asarray(wav, dtype=np.float32).reshape(-1), self.sample_rate

    def _xtts_voice(self, speaker: str | None, reference: Path | None):
        """XTTS conditioning (GPT latents + speaker embedding), computed once per voice."""
        key = f"wav:{reference}" if reference is not None else f"speaker:{speaker}"
        if key not in self._latents:
            if reference is not None:
                latents = self.model.get_conditioning_latents(audio_path=[str(reference)])
            elif speaker is None:
                raise ModelError(
                    f"the XTTS model {self.folder} has no built-in speakers "
                    f"(speakers_xtts.pth) and this speaker has no reference audio (stage "
                    f"synthesize); add speakers_xtts.pth to the folder or set "
                    f"tts.coqui.clone to true"
                )
            else:
                entry = self.model.speaker_manager.speakers[speaker]
                latents = (entry["gpt_cond_latent"], entry["speaker_embedding"])
            self._latents[key] = latents
        return self._latents[key]


# ---------------------------------------------------------------------------------------
# Shared processing
# ---------------------------------------------------------------------------------------


def shift_voice(synthesize, text: str, spec: VoiceSpec, speed: float) -> tuple[np.ndarray, int]:
    """Speak ``shift`` times slower, then resample ``shift`` times shorter.

    Tempo comes back to ``speed`` while pitch and formants move up (shift > 1) or down:
    a listener, and a speaker-embedding model, hears another person. This is how one
    neural voice serves several speakers without a second model.
    """
    factor = spec.number("shift", 1.0)
    if factor == 1.0:
        return synthesize(text, spec, speed)
    from dubflow.wav import resample

    audio, rate = synthesize(text, spec, speed / factor)
    return resample(audio, round(100 * factor), 100), rate
