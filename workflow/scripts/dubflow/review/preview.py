"""Hear an edited line in place, in about a second, without rebuilding the dub.

The line is spoken by the same voice and backend the synthesize stage would use (same
speed prediction, same speak-faster pass, same level), fitted to its slot by the same
plan the mix stage makes (:func:`fit.plan` over every line, with the new length), and
laid with its neighbours over that stretch of the bed, ducked and at the dub's gain, as
the mix would. The engines stay loaded in the app process, so only the first preview of
a language pays for loading a model (and the app loads them when it starts).

Nothing is written to ``work/``, ``out/`` or the TTS cache: the cache is read (a line
edited back to a text already voiced comes from it), and the new audio lives in a
temporary folder for the length of the request.
"""

from __future__ import annotations

import collections
import logging
import tempfile
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

import synthesize
from dubflow import fit, mix_control, mix_lines, mix_render, mix_settings, voices
from dubflow.kokoro_voice import Stopped
from dubflow.review.media import read_span, wav_bytes
from dubflow.review.project import Superseded, Video

log = logging.getLogger(__name__)
#: Seconds of the dub played before and after the edited line.
CONTEXT_S = 0.6
#: Previews kept in memory: asking again for the same text (the page prefetches while
#: the reviewer types, then plays on the click) costs nothing.
KEEP_PREVIEWS = 32


class Engines(synthesize.Engines):
    """The synthesize stage's engines, but Kokoro runs one line on all the app's threads,
    spinning between operators (the stage runs several lines at once, one thread each and
    no spinning; a preview is one line that a person waits for)."""

    def __init__(self, tts: dict, language: str, threads: int,
                 stopping: threading.Event) -> None:
        super().__init__(tts, language, threads)
        self.stopping = stopping  # set: the preview being made is no longer wanted

    def get(self, voice: voices.Voice):
        if voice.backend != "kokoro":
            return super().get(voice)
        key = (voice.backend, str(voice.model_path))
        with self._load_lock:
            if key not in self._loaded:
                from dubflow.kokoro_voice import KokoroBackend

                self._loaded[key] = KokoroBackend(voice.model_path, threads=self.threads,
                                                  spin=True)
            engine = self._loaded[key]
        if self.stopping.is_set():  # a newer text came while the voice was loading
            engine.stop()
        return engine

    def stoppable(self) -> list:
        """The loaded voices whose line in progress can be stopped (Kokoro's)."""
        return [engine for engine in list(self._loaded.values()) if hasattr(engine, "stop")]


class Previewer:
    """The loaded engines of one app, one per language, reused by every preview."""

    def __init__(self, video: Video, threads: int = 2) -> None:
        self.video, self.threads = video, threads
        self._engines: dict[str, Engines] = {}
        self._lock = threading.Lock()  # one preview at a time: they share the engines
        self._made: collections.OrderedDict = collections.OrderedDict()
        # the newest text asked for per line, and the preview being made: a newer text
        # for the same line stops the older one (see preview); one lock orders both
        self._newest: dict[tuple[str, str], tuple] = {}
        self._making: tuple | None = None
        self._state = threading.Lock()
        self._stopping = threading.Event()

    def engines(self, lang: str, tts: dict) -> Engines:
        if lang not in self._engines:
            self._engines[lang] = Engines(tts, lang, self.threads, self._stopping)
        return self._engines[lang]

    def forget(self) -> None:
        """Drop the kept previews (after a rebuild the neighbours and the bed may differ)."""
        with self._lock:
            self._made.clear()

    def warm_up(self) -> None:
        """Load every language's voices now, and make one preview of each language (the
        first one also pays for imports, the resampler and ffmpeg's filter check: 2.5 s
        against 0.1 s for the next), so the reviewer's first preview is as quick as the rest."""
        for lang, language in self.video.languages.items():
            tts = voices.settings(self.video.settings()["tts"])
            for spec in sorted(set(language.voices.values())):
                try:
                    voice = voices.resolve(spec, tts, lang, f"tts.voices.{lang}")
                    with self._lock:
                        self.engines(lang, tts).get(voice)
                except Exception as error:  # a preview will say it again, as one sentence
                    log.warning("could not load the voice %s for %s: %s", spec, lang, error)
            spoken = [row for row in language.rows if row.text]
            if spoken:
                try:
                    self.preview(lang, spoken[0].id, spoken[0].text)
                except Exception as error:
                    log.warning("a first preview of %s failed: %s", lang, error)

    def preview(self, lang: str, line_id: str, text: str, voice_spec: str | None = None
                ) -> tuple[bytes, dict]:
        """WAV bytes of the line said as ``text``, in place, and what the fit did to it.

        A newer text for the same line stops this one (:class:`Superseded`): the page asks
        for a preview whenever the reviewer pauses, so a pause mid-sentence starts one
        that nobody will hear, and without the stop the click on the finished sentence
        would wait for it, two seconds and more. Other lines' previews are never stopped.
        """
        key = (lang, line_id, text, voice_spec)
        with self._state:
            self._newest[key[:2]] = key
            if self._making is not None and self._making[:2] == key[:2] and self._making != key:
                self._stop(True)
        with self._lock:
            if key not in self._made:
                with self._state:
                    if self._newest.get(key[:2]) != key:
                        raise Superseded.of(line_id)
                    self._stop(False)
                    self._making = key
                try:
                    with tempfile.TemporaryDirectory(prefix="dubflow-preview-") as scratch:
                        self._made[key] = self._preview(lang, line_id, text, voice_spec,
                                                        Path(scratch))
                except Stopped:
                    raise Superseded.of(line_id) from None
                finally:
                    with self._state:
                        self._making = None
                while len(self._made) > KEEP_PREVIEWS:
                    self._made.popitem(last=False)
            self._made.move_to_end(key)
            return self._made[key]

    def _stop(self, stop: bool) -> None:
        """Stop the Kokoro line being made (and any voice still loading), or let lines be
        made again."""
        if stop:
            self._stopping.set()
        else:
            self._stopping.clear()
        for engines in list(self._engines.values()):
            for engine in engines.stoppable():
                if stop:
                    engine.stop()
                else:
                    engine.go()

    def _preview(self, lang: str, line_id: str, text: str, voice_spec: str | None,
                 scratch: Path) -> tuple[bytes, dict]:
        video = self.video
        cfg = video.settings()
        tts = voices.settings(cfg["tts"])
        lines = synthesize.read_translation(video.work / lang / "translation.json").lines
        for line in lines:
            if line.id == line_id:
                line.text = text
        row = video.language(lang).row(line_id)
        spec = voice_spec or video.language(lang).voices.get(row.speaker) or row.voice
        voice = voices.resolve(spec, tts, lang, f"tts.voices.{lang}.{row.speaker}")
        engines = self.engines(lang, tts)
        room = synthesize.line_rooms(lines)[line_id]
        speed = synthesize.predicted_speed(text, room, voice, tts, engines)
        audio, rate = self._speak(engines, voice, text, speed, lang, tts)
        faster = synthesize.faster_speed(speed, len(audio) / rate, room, tts)
        if voice.backend != "kokoro" and faster is not None:
            # cheap engines are asked again, faster, as the stage does; a Kokoro line was
            # already asked for the speed its predicted length fits at
            speed = faster
            audio, rate = self._speak(engines, voice, text, speed, lang, tts)
        new_wav = scratch / f"{line_id}.wav"
        sf.write(str(new_wav), audio, rate, subtype="PCM_16")
        return self._in_place(lang, line_id, new_wav, len(audio) / rate, cfg, scratch, speed)

    def _speak(self, engines, voice, text: str, speed: float, lang: str, tts: dict):
        """The finished line (trimmed, levelled) from the TTS cache or the engine."""
        key = synthesize.cache_key(text, voice, speed, lang, None)
        cached = synthesize.cache_path(self.video.root / tts["cache_dir"], key)
        if synthesize.read_cached(cached) is not None:
            return sf.read(str(cached), dtype="float32")
        audio, rate = engines.synthesize(voice, text, speed, None, int(key[:8], 16))
        return synthesize.finish_audio(audio, rate), rate

    def _in_place(self, lang: str, line_id: str, new_wav: Path, natural_s: float,
                  cfg: dict, scratch: Path, engine_speed: float) -> tuple[bytes, dict]:
        """The new line and its neighbours over the ducked bed, at the dub's gain."""
        video, language = self.video, self.video.language(lang)
        tts_dir = video.work / lang / "tts"
        bed_path = video.work / ("source.wav" if cfg["mix"]["separation"] == "none"
                                 else "bed.wav")
        settings = mix_settings.settings(cfg["mix"], sf.info(str(bed_path)).channels)
        lines = mix_lines.read_lines(tts_dir)
        wavs = {}
        for line in lines:
            if line.get("wav"):
                wavs[str(line["id"])] = tts_dir / str(line["wav"])
            if str(line["id"]) == line_id:
                line.update(wav=new_wav.name, duration_s=natural_s)
                wavs[line_id] = new_wav
        duration = sf.info(str(bed_path)).duration
        placements = fit.plan(lines, settings.max_speedup, duration, mix_lines.GAP_S,
                              settings.max_lead_s)
        target = next(p for p in placements if p.id == line_id)
        first_s = max(0.0, target.start - CONTEXT_S)
        last_s = min(duration, target.end + CONTEXT_S)
        bed, rate = read_span(bed_path, first_s, last_s)  # mono: the voice is in every channel
        first = int(first_s * rate)
        near = [p for p in placements if p.start < last_s and p.end > first_s]
        voice = np.zeros(len(bed), dtype=np.float32)
        tempo = video.root / cfg["tts"]["cache_dir"] / "tempo"
        for p in near:
            # the neighbours' sped-up audio is in the mix's tempo cache; the new line's
            # is made in the scratch folder, so the cache is only read
            cache = tempo if tempo.is_dir() and p.id != line_id else None
            audio = mix_lines.line_audio(p, wavs[p.id], settings, scratch,
                                   video.base_config["ffmpeg"], cache, rate)
            at = round(p.start * rate) - first
            lo, hi = max(0, at), min(len(voice), at + len(audio))
            if hi > lo:
                voice[lo:hi] += audio[lo - at:hi - at]
        depth = mix_control.duck_depth(first, len(bed), rate,
                                       mix_control.duck_intervals(placements))
        envelope = mix_control.ducked_gain(depth, settings.duck_db)
        out = bed * envelope + voice
        if settings.band_duck_db > 0:
            out += mix_render.speech_band_of(bed, rate) * mix_control.band_gain(
                envelope, depth, settings.band_duck_db)
        out *= 10 ** (language.gain_db / 20)
        info = {"flags": target.flags, "speed": round(target.speed, 3),
                "natural_s": round(natural_s, 3), "slot_s": round(target.slot_s, 3),
                "engine_speed": engine_speed, "start": round(first_s, 3)}
        return wav_bytes(out.astype(np.float32), rate), info
