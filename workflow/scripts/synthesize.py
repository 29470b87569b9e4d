"""Stage synthesize: one WAV per translated line, in each speaker's own voice.

work/{name}/{lang}/translation.json -> work/{name}/{lang}/tts/ with ``{id}.wav`` per line
and ``lines.json`` (voice, duration, cache key per line) for the mix stage.

Synthesis is the slow part of a re-run after an edit, and Snakemake deletes the whole
``tts/`` folder before it runs this job again, so the audio of every line is cached
outside the rule's outputs (``tts.cache_dir``), under a hash of everything the audio
depends on: text, voice, model file, speed and language. Fixing one line of a 2-hour
film re-synthesizes that line only; the others are hard-linked from the cache.

The folder is built as a hidden sibling and renamed into place when complete, so a
killed job never leaves a folder that looks finished.

Why one stage file of about 530 lines: the steps of the job (voice choice, the line
cache, speed prediction, the speak-faster pass, the atomic folder) share one
:class:`Engines` and one cache layout. How a voice is chosen (voices.py) and how it
speaks (tts_backends.py, kokoro_voice.py) already live in the package; what is left here
is the job's own order.
"""

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from dubflow import condense, records
from dubflow import tts_backends as tb
from dubflow import voices
from dubflow.progress import Progress
from dubflow.atomic import atomic_dir, atomic_path, link_or_copy, write_json
from dubflow.errors import ConfigError
from dubflow.records import Translation, TtsLine
from dubflow.records import TranslationLine as Line
from dubflow.wav import ANALYSIS_RATE, read_analysis_wav

STAGE = "synthesize"
# Bump when the audio written for the same inputs changes (trimming, level, format), so
# old cache entries are not mixed with new ones.
CACHE_FORMAT = "dubflow-tts-1"
TARGET_RMS_DBFS = -20.0  # speech level of every line, whatever the backend
PEAK_LIMIT = 0.95
TRIM_FLOOR_DB = -45.0  # below the line's peak: silence at the ends is cut below this
TRIM_KEEP_S = 0.03  # ...keeping this much around the speech, so onsets are not clipped
MIN_REFERENCE_S = 3.0  # Coqui cloning needs at least this much of the speaker's voice
MAX_REFERENCE_S = 15.0
VOICE_F0_PROBE_S = 20.0  # seconds of a voice's lines its pitch is measured on
log = logging.getLogger(__name__)

__all__ = ["STAGE", "run"]


# ---------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------


def read_translation(path: str | Path) -> Translation:
    """translation.json as this stage voices it: every line has a speaker (SPEAKER_00
    without diarization) and its text on one line, single-spaced."""
    translation = records.read_translation(path, STAGE)
    for line in translation.lines:
        line.speaker = line.speaker or "SPEAKER_00"
        line.text = " ".join(line.text.split())
    return translation


# ---------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------


def finish_audio(audio: np.ndarray, rate: int) -> np.ndarray:
    """Trim silence at the ends and bring the line to one speech level.

    Synthesisers pad lines with silence (Piper ~0.1 s) and speak at different levels
    (espeak-ng variants differ by 8 dB); the mix stage places each line at its source
    time and fits it to the slot, so a line should start when its speech starts and
    every voice should arrive at the same level.
    """
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float32).reshape(-1))
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-6:
        return np.zeros(max(1, int(0.05 * rate)), dtype=np.float32)
    loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (TRIM_FLOOR_DB / 20))
    keep = int(TRIM_KEEP_S * rate)
    audio = audio[max(0, loud[0] - keep): loud[-1] + 1 + keep]
    frame = max(1, int(0.02 * rate))
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame) if len(audio) >= frame else audio[None, :]
    energy = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    active = energy[energy > energy.max() * 0.1]  # the voiced part, not the pauses
    rms = float(np.sqrt(np.mean(active ** 2))) if active.size else peak
    gain = 10 ** (TARGET_RMS_DBFS / 20) / max(rms, 1e-6)
    gain = min(gain, PEAK_LIMIT / peak)
    return (audio * gain).astype(np.float32)


def cache_key(text: str, voice: voices.Voice, speed: float, language: str,
              reference: str | None = None) -> str:
    """sha256 of everything the line's audio depends on."""
    payload = {
        "format": CACHE_FORMAT,
        "text": text,
        "voice": str(voice.spec),
        "backend": voice.backend,
        "model": voice.identity,
        "speed": round(float(speed), 6),
        "language": language,
        "reference": reference,
    }
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    ).hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.wav"


def read_cached(path: Path) -> Any:
    """The cached WAV's header, or None if it is absent or unreadable (then re-made)."""
    try:
        return sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError, OSError):
        return None


# ---------------------------------------------------------------------------------------
# Voices and backends for one job
# ---------------------------------------------------------------------------------------


class Engines:
    """The backends of one job, each loaded on first use and then reused for all lines.

    Lines are synthesized on ``threads`` worker threads. Piper sessions run concurrently
    (onnxruntime releases the GIL; see PiperBackend); espeak-ng and Coqui run one line
    at a time behind their locks (a global C synthesiser; a torch model that already
    uses the rule's threads).
    """

    def __init__(self, tts: dict, language: str, threads: int) -> None:
        self.tts, self.language, self.threads = tts, language, max(1, threads)
        #: intra-op threads of the Kokoro session, set by make_all before it is loaded
        self.kokoro_threads = 1
        self._loaded: dict[Any, Any] = {}
        self._load_lock = threading.Lock()
        self._coqui_lock = threading.Lock()

    def get(self, voice: voices.Voice):
        if voice.backend == "coqui":
            return self.coqui()
        key = (voice.backend, str(voice.model_path))
        with self._load_lock:
            if key not in self._loaded:
                log.info("loading %s voice %s", voice.backend, voice.model_path or voice.spec.name)
                if voice.backend == "kokoro":
                    from dubflow.kokoro_voice import KokoroBackend

                    # one single-threaded session per job, lines side by side on the rule's
                    # threads: on 2 cores 0.44 wall s per second of speech (0.72 CPU s),
                    # against 1.25 for one line at a time on 2 intra-op threads, and about
                    # the same CPU as a session per thread without its memory
                    # (bench/kokoro_speed.py); but a lone line gets all of them (make_all)
                    self._loaded[key] = KokoroBackend(voice.model_path,
                                                      threads=self.kokoro_threads)
                elif voice.backend == "piper":
                    self._loaded[key] = tb.load_piper(str(voice.model_path),
                                                      str(voice.config_path), voice.identity)
                else:
                    self._loaded[key] = tb.ESpeakBackend()
            return self._loaded[key]

    def coqui(self) -> tb.CoquiBackend:
        with self._load_lock:
            if "coqui" not in self._loaded:
                coqui = self.tts["coqui"]
                log.info("loading coqui voice %s", coqui["model_dir"])
                self._loaded["coqui"] = tb.CoquiBackend(
                    voices.coqui_model_dir(self.tts), coqui["language_code"], self.threads,
                    default_speaker=coqui["speaker"])
            return self._loaded["coqui"]

    def coqui_speakers(self) -> list[str]:
        """The Coqui model's speakers, read from its folder when possible (a cached
        re-run then never loads the model)."""
        names = tb.coqui_speaker_names(voices.coqui_model_dir(self.tts))
        return self.coqui().speakers if names is None else names

    def synthesize(self, voice: voices.Voice, text: str, speed: float,
                   reference: Path | None, seed: int) -> tuple[np.ndarray, int]:
        engine = self.get(voice)
        if voice.backend == "kokoro":
            pace = voice.spec.number("speed", 1.0)  # the voice's calibrated pace

            def speak(t, spec, s):
                return engine.synthesize(t, spec, s * pace, language=self.language)
        elif voice.backend == "coqui":
            def speak(t, spec, s):
                with self._coqui_lock:
                    return engine.synthesize(t, spec, s, language=self.language,
                                             reference=reference, seed=seed)
        else:
            speak = engine.synthesize
        return tb.shift_voice(speak, text, voice.spec, speed)


def speakers_by_speech(lines: list[Line]) -> list[str]:
    """Speakers, most speech first (ties by id): the order voices are handed out in."""
    total: dict[str, float] = {}
    for line in lines:
        total[line.speaker] = total.get(line.speaker, 0.0) + max(0.0, line.end - line.start)
    return sorted(total, key=lambda s: (-round(total[s], 3), s))


def source_pitches(lines: list[Line], audio_path: str | Path | None) -> dict[str, float | None]:
    """Each speaker's median F0 in the source, from their own lines in the analysis WAV."""
    if not audio_path or not Path(audio_path).is_file():
        return {}
    from dubflow.voice_match import speaker_pitches

    return speaker_pitches(read_analysis_wav(audio_path, STAGE), ANALYSIS_RATE,
                           [(line.speaker, line.start, line.end) for line in lines])


def voice_report(entries: list[TtsLine], chosen: dict, pitches: dict, folder: Path) -> dict:
    """Per speaker: their pitch in the source, the voice that dubs them and its pitch,
    measured on up to VOICE_F0_PROBE_S of the lines it spoke (for the QA page)."""
    from dubflow.pitch import median_f0

    report = {}
    for speaker, voice in chosen.items():
        pieces, seconds = [], 0.0
        for entry in entries:
            if entry.speaker == speaker and entry.wav and seconds < VOICE_F0_PROBE_S:
                audio, rate = sf.read(str(folder / entry.wav), dtype="float32")
                pieces.append(audio if audio.ndim == 1 else audio.mean(axis=1))
                seconds += len(pieces[-1]) / rate
        f0 = median_f0(np.concatenate(pieces), rate) if pieces else float("nan")
        report[speaker] = {"source_f0_hz": pitches.get(speaker), "voice": str(voice.spec),
                           "voice_f0_hz": None if np.isnan(f0) else round(float(f0), 1)}
    return report


def choose_voices(lines: list[Line], language: str, tts: dict, engines: Engines,
                  clone: bool, pitches: dict[str, float | None] | None = None,
                  ) -> dict[str, voices.Voice]:
    """speaker -> Voice for the speakers of this file, every spec checked up front."""
    speakers = speakers_by_speech(lines)
    table = voices.language_voices(tts, language)
    for speaker, spec in table.items():  # a bad mapping fails before any audio is made
        voices.resolve(spec, tts, language, f"tts.voices.{language}.{speaker}")
    coqui_speakers = None
    if tts["backend"] == "coqui" and not clone and any(s not in table for s in speakers):
        coqui_speakers = engines.coqui_speakers()
    specs = voices.assign(speakers, language, tts, coqui_speakers, clone=clone,
                          pitches=pitches)
    chosen = {}
    for speaker, spec in specs.items():
        key = f"tts.voices.{language}.{speaker if speaker in table else 'default'}"
        voice = chosen[speaker] = voices.resolve(spec, tts, language, key)
        if voice.backend == "coqui" and voice.spec.name:
            known = engines.coqui_speakers()
            if voice.spec.name not in known:
                raise ConfigError(
                    f"{key} names the Coqui speaker '{voice.spec.name}', which the "
                    f"model {tts['coqui']['model_dir']} does not have (stage {STAGE}); use "
                    f"one of: {', '.join(known[:8]) or 'none (single-speaker model)'}"
                )
        log.info("voice for %s: %s", speaker, voice)
    return chosen


def clone_references(lines: list[Line], audio_path: str | Path | None, folder: Path,
                     speakers: list[str]) -> dict[str, tuple[Path, str]]:
    """Each speaker's own clean speech, cut from the analysis WAV, for voice cloning.

    Clean means the line overlaps no other speaker's line; the longest lines come first
    (a few long stretches clone better than many short ones), up to MAX_REFERENCE_S.
    Returns speaker -> (wav path, content hash); speakers with too little speech are
    left out and fall back to the model's own voice.
    """
    if audio_path is None:
        return {}
    audio = read_analysis_wav(audio_path, STAGE)
    references = {}
    for number, speaker in enumerate(speakers):
        own = [line for line in lines if line.speaker == speaker and line.end > line.start]
        others = [line for line in lines if line.speaker != speaker]
        clean = [line for line in own
                 if not any(o.start < line.end and line.start < o.end for o in others)]
        pieces, total = [], 0.0
        for line in sorted(clean, key=lambda c: (c.start - c.end, c.start)):
            piece = audio[int(line.start * ANALYSIS_RATE): int(line.end * ANALYSIS_RATE)]
            pieces.append(piece)
            total += len(piece) / ANALYSIS_RATE
            if total >= MAX_REFERENCE_S:
                break
        if total < MIN_REFERENCE_S:
            log.warning("speaker %s has only %.1f s of clean speech: not cloned", speaker, total)
            continue
        gap = np.zeros(int(0.2 * ANALYSIS_RATE), dtype=np.float32)
        joined = np.concatenate([x for piece in pieces for x in (piece, gap)])
        path = folder / f"speaker{number}.wav"
        sf.write(str(path), joined, ANALYSIS_RATE, subtype="PCM_16")
        references[speaker] = (path, hashlib.sha256(joined.tobytes()).hexdigest())
    return references


# ---------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------


@dataclass
class Job:
    """One line to synthesize into the cache (lines with the same key share one job)."""

    text: str
    voice: voices.Voice
    reference: Path | None
    path: Path
    seed: int
    speed: float


def make(job: Job, engines: Engines) -> None:
    """Synthesize one line into the cache, atomically (concurrent jobs may share keys)."""
    audio, rate = engines.synthesize(job.voice, job.text, job.speed, job.reference, job.seed)
    with atomic_path(job.path) as tmp:
        sf.write(str(tmp), finish_audio(audio, rate), rate, subtype="PCM_16")
    # Outputs are hard links to this file: read-only, so that editing a wav in tts/
    # fails instead of silently changing the cache under every other run.
    os.chmod(job.path, 0o444)


def make_all(jobs: list[Job], engines: Engines) -> None:
    """Run the jobs on the rule's threads; the first failure stops the rest.

    Fewer lines than threads (a one-line edit) share the threads inside the Kokoro
    session instead (figures in kokoro_voice._open)."""
    progress = Progress(len(jobs), "synthesized", " lines", logger=log)
    if jobs:
        engines.kokoro_threads = max(1, engines.threads // len(jobs))
    with ThreadPoolExecutor(max_workers=engines.threads) as pool:
        futures = [pool.submit(make, job, engines) for job in jobs]
        try:
            for done, future in enumerate(as_completed(futures), 1):
                future.result()
                progress.update(done)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def line_rooms(lines: list[Line]) -> dict[str, float]:
    """Seconds each spoken line may last before the next spoken one starts (the same rule
    translate budgets with: condense.rooms)."""
    return condense.rooms([condense.Span(line.id, line.start, line.end)
                           for line in lines if line.text])


def predicted_speed(text: str, room: float, voice: voices.Voice, tts: dict,
                    engines: Engines) -> float:
    """The speed to ask a Kokoro voice for at once: its own pace, or the slowest faster
    one (up to tts.max_speed_boost) at which Kokoro's duration predictor says the line
    fits its room, instead of once at its own pace and again faster: on a 10-minute video
    154 of 193 lines need it, and saying them twice was 40 % of the stage's time. Other
    engines are cheap to run twice (speak_faster_where_needed).

    The answer is remembered in the TTS cache under a hash of everything it depends on,
    so a re-run after a one-line edit predicts only that line (193 predictions were 2.7 s
    of a 9 s job)."""
    speed = tts["speed"]
    boost = float(tts["max_speed_boost"])
    if voice.backend != "kokoro" or room <= 0 or boost <= 1.0:
        return speed
    memo = speed_memo_path(tts["cache_dir"], text, room, voice, speed, boost, engines.language)
    with contextlib.suppress(OSError, ValueError):
        return float(memo.read_text())
    from dubflow.kokoro_voice import SPEED_LIMITS, timing

    pace = voice.spec.number("speed", 1.0)  # the engine's speed is the line's times this
    fastest = min(speed * boost, SPEED_LIMITS[1] / pace)
    engine = timing(str(voice.model_path)).fitting_speed(text, voice.spec.name, engines.language,
                                                         room, speed * pace, fastest * pace)
    answer = round(engine / pace, 4)
    with contextlib.suppress(OSError):  # a memo that cannot be written is only slower
        with atomic_path(memo) as tmp:
            tmp.write_text(repr(answer))
    return answer


def speed_memo_path(cache_dir: str | Path, text: str, room: float, voice: voices.Voice,
                    speed: float, boost: float, language: str) -> Path:
    """Where predicted_speed keeps its answer: a hash of the text, the room (to the
    millisecond), the voice and its model file, the speed bounds and the language."""
    payload = json.dumps({"format": CACHE_FORMAT, "text": text, "room": round(room, 3),
                          "voice": str(voice.spec), "model": voice.identity,
                          "speed": speed, "boost": boost, "language": language},
                         sort_keys=True, ensure_ascii=False)
    key = hashlib.sha256(payload.encode("utf-8")).hexdigest()
    return Path(cache_dir) / "speeds" / key[:2] / key


def faster_speed(current: float, natural: float, room: float, tts: dict) -> float | None:
    """The speed to say a line again at, when at speed ``current`` it lasts ``natural``
    seconds in a room of ``room``: faster by what it overruns, at most tts.max_speed_boost
    times the stage's speed. None when it fits, or is already as fast as it may go."""
    boost = float(tts["max_speed_boost"])
    fastest = tts["speed"] * boost
    if boost <= 1.0 or natural <= room + 0.01 or current >= fastest - 1e-9:
        return None
    factor = natural / room if room > 0 else boost
    return round(min(current * factor, fastest), 3)


def queue(entry: TtsLine, line: Line, voice: voices.Voice, speed: float, language: str,
          references: dict, cache_dir: Path, jobs: dict[str, Job]) -> None:
    """Point ``entry`` at the cache entry of ``line`` said at ``speed`` and add its job to
    ``jobs`` unless that entry exists; a repeated line ("Yes.") is made once and counts
    as cached after that."""
    reference, ref_hash = references.get(line.speaker, (None, None))
    key = cache_key(line.text, voice, speed, language, ref_hash)
    path = cache_path(cache_dir, key)
    entry.cache_key = key
    entry.cached = key in jobs or read_cached(path) is not None
    if not entry.cached:
        jobs[key] = Job(line.text, voice, reference, path, int(key[:8], 16), speed)


def speak_faster_where_needed(entries: list[TtsLine], lines: list[Line], rooms: dict[str, float],
                              chosen: dict, tts: dict, language: str,
                              references: dict) -> list[Job]:
    """Lines too long for their room are spoken again by the engine at up to
    ``tts.max_speed_boost`` times the pace: a voice asked to speak faster sounds better
    than the same audio time-stretched afterwards (the mix stage's last resort).

    Not Kokoro lines: their speed was chosen from the model's own duration prediction
    (predicted_speed, within 0.25 s of the made line), and what is left over is the mix
    stage's to stretch by a few per cent, not worth saying the line again."""
    by_id = {line.id: line for line in lines}
    cache_dir, jobs = Path(tts["cache_dir"]), {}
    for entry in entries:
        line, voice = by_id[entry.id], chosen[entry.speaker]
        if not entry.cache_key or voice.backend == "kokoro":
            continue
        info = sf.info(str(cache_path(cache_dir, entry.cache_key)))
        line_speed = faster_speed(entry.engine_speed or tts["speed"],
                                  info.frames / info.samplerate, rooms[entry.id], tts)
        if line_speed is not None:
            entry.engine_speed = line_speed
            queue(entry, line, voice, line_speed, language, references, cache_dir, jobs)
    return list(jobs.values())


def run(translation_path: str | Path, output_dir: str | Path, language: str, tts: dict,
        audio_path: str | Path | None = None, threads: int = 1) -> list[dict]:
    """Synthesize every line of translation.json into ``output_dir``; return lines.json."""
    tts = voices.settings(tts)
    translation = read_translation(translation_path)
    lines, target = translation.lines, translation.target_language
    if target and target != language:
        log.warning("%s is for language %s, synthesizing it as %s", translation_path, target, language)
    engines = Engines(tts, language, threads)
    speed = tts["speed"]
    cache_dir = Path(tts["cache_dir"])
    clone = tts["backend"] == "coqui" and tts["coqui"]["clone"]
    spoken = [line for line in lines if line.text]
    pitches = source_pitches(lines, audio_path) if lines else {}
    chosen = choose_voices(lines, language, tts, engines, clone, pitches) if lines else {}
    with tempfile.TemporaryDirectory(prefix="dubflow-ref-") as scratch, atomic_dir(output_dir) as folder:
        cloned = [s for s, v in chosen.items() if v.backend == "coqui" and not v.spec.name]
        references = clone_references(lines, audio_path, Path(scratch), cloned) if clone else {}
        entries, jobs = [], {}
        rooms = line_rooms(lines)
        for line in lines:
            voice = chosen[line.speaker]
            entry = TtsLine(line.id, line.speaker, line.start, line.end, line.text,
                            str(voice.spec), voice.backend)
            if line.text:
                line_speed = predicted_speed(line.text, rooms[line.id], voice, tts, engines)
                if line_speed != speed:
                    entry.engine_speed = line_speed
                queue(entry, line, voice, line_speed, language, references, cache_dir, jobs)
            entries.append(entry)
        make_all(list(jobs.values()), engines)
        faster = speak_faster_where_needed(entries, lines, rooms, chosen, tts, language,
                                           references)
        make_all(faster, engines)
        for entry in entries:
            if entry.cache_key:
                path = cache_path(cache_dir, entry.cache_key)
                info = sf.info(str(path))
                entry.wav, entry.sample_rate = f"{entry.id}.wav", info.samplerate
                entry.duration_s = round(info.frames / info.samplerate, 4)
                link_or_copy(path, folder / entry.wav)
        rows = records.write_tts_lines(folder / "lines.json", entries)
        write_json(folder / "voices.json", voice_report(entries, chosen, pitches, folder))
    log.info("%d lines: %d synthesized, %d from cache; %d spoken faster than their voice's "
             "pace, %d of them synthesized a second time", len(spoken), len(jobs),
             len(spoken) - len(jobs), sum(e.engine_speed is not None for e in entries),
             len(faster))
    return rows


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        run,
        translation_path=sm.input.translation,
        output_dir=sm.output.tts,
        language=sm.wildcards.lang,
        tts=sm.params.tts,
        audio_path=sm.input.audio,
        threads=sm.threads,
    )
