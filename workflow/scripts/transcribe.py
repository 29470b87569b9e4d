"""Stage transcribe: what was said, when, word by word (faster-whisper, offline).

The transcript is the spine of the dub: segment times place the dubbed lines, word times
let later stages split segments at speaker changes and cut readable subtitle cues, and
the per-segment confidence tells the QA report which lines a human should check.
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np

from dubflow.atomic import write_json
from dubflow.errors import InputError
from dubflow.progress import Progress
from dubflow.records import Segment, Transcript, Word
from dubflow.sentences import sentence_lines, sentence_share
from dubflow.languages import UNDETERMINED
from dubflow.whisper_model import load_model
from dubflow.wav import ANALYSIS_RATE, read_analysis_wav

STAGE = "transcribe"
WINDOW_S = 600.0  # long audio is transcribed in windows of about this length
CUT_SEARCH_S = 30.0  # each cut goes to the quietest spot within this much of its place
log = logging.getLogger(__name__)


def read_glossary(path: str | Path | None) -> list[str]:
    """Terms (names, places, jargon), one per line; '#' starts a comment."""
    if not path:
        return []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise InputError(
            f"the glossary {path} (config key asr.glossary) cannot be read "
            f"({error.strerror}); fix the path or set asr.glossary to null"
        ) from None
    return [t for t in (line.split("#", 1)[0].strip() for line in lines) if t]


def decoding_hints(asr: dict) -> tuple[str | None, str | None]:
    """initial_prompt and hotwords, with glossary terms added to both.

    Hotwords bias every window towards the terms; the prompt only primes the first one,
    so it is filled from the glossary only when the user gave none.
    """
    terms = read_glossary(asr["glossary"])
    hotwords = " ".join(filter(None, [asr["hotwords"], *terms])) or None
    prompt = asr["initial_prompt"] or (", ".join(terms) + "." if terms else None)
    return prompt, hotwords


def transcribe(audio_path: str | Path, asr: dict, language: str = "auto",
               threads: int = 2, model=None) -> Transcript:
    """Transcribe with word timestamps; the language is detected unless configured."""
    audio = read_analysis_wav(audio_path, STAGE)  # 16 kHz mono, as extract wrote it
    initial_prompt, hotwords = decoding_hints(asr)
    duration = len(audio) / ANALYSIS_RATE
    model = model or load_model(asr["model"], asr["compute_type"], threads, asr["device"])
    forced = None if language == "auto" else language
    threshold = asr["low_confidence_logprob"]
    progress = Progress(duration, "transcribed", " s of audio", logger=log)
    segments, info, after_vad = [], None, 0.0
    for start, end in windows(audio):
        offset = start / ANALYSIS_RATE
        # Once speech has fixed the language, later windows keep it (no flip-flopping).
        fixed = forced or (info.language if segments else None)
        segments_iter, window_info = model.transcribe(
            audio[start:end],
            language=fixed,
            beam_size=asr["beam_size"],
            vad_filter=asr["vad"],
            word_timestamps=True,
            initial_prompt=initial_prompt,
            hotwords=hotwords,
            condition_on_previous_text=False,  # one misheard line must not derail the rest
        )
        info = info if segments else window_info
        for seg in segments_iter:  # decoding happens as this generator is read
            progress.update(offset + seg.end)
            if seg.text.strip():
                segments.append(_segment(len(segments), seg, threshold, offset))
        after_vad += window_info.duration_after_vad
    log.info("language %s (p=%.2f, %s), %d segments, %.1f s of audio, %.1f s after VAD",
             info.language, info.language_probability or 0, "configured" if forced else
             "detected", len(segments), duration, after_vad)
    if forced:
        language, probability, source = forced, None, "configured"
    elif segments:
        language, probability = info.language, round(float(info.language_probability), 4)
        source = "detected"
    else:
        # Whisper still "detects" a language in silence (p~0.5): that guess would tag
        # tracks wrongly, so say undetermined, as ISO 639-2 does.
        language, probability, source = UNDETERMINED, None, "undetermined"
    return Transcript(
        language=language,
        language_probability=probability,
        language_source=source,
        duration_s=round(duration, 3),
        model=Path(asr["model"]).name,
        segments=segments,
    )


def windows(audio: np.ndarray) -> list[tuple[int, int]]:
    """Sample ranges of about ``WINDOW_S`` each, cut at the quietest half second nearby.

    faster-whisper computes the mel spectrogram of its whole input at once, which took
    3.9 GB for a 60-minute film; windows keep that bounded (about 0.6 GB per 10 minutes)
    whatever the length. Cutting in the quietest spot near each boundary keeps words whole.
    """
    total, size = len(audio), int(WINDOW_S * ANALYSIS_RATE)
    if total <= size * 1.5:
        return [(0, total)]
    frame = ANALYSIS_RATE // 2
    reach = int(min(CUT_SEARCH_S, size / ANALYSIS_RATE / 4) * ANALYSIS_RATE)
    cuts, start = [], 0
    while total - start > size * 1.5:
        lo, hi = start + size - reach, start + size + reach
        frames = audio[lo:hi][: (hi - lo) // frame * frame].reshape(-1, frame)
        quietest = int(np.argmin((frames.astype(np.float64) ** 2).mean(axis=1)))
        cut = lo + quietest * frame + frame // 2
        cuts.append((start, cut))
        start = cut
    return cuts + [(start, total)]


def _segment(index: int, seg: Any, low_confidence_logprob: float, offset: float) -> Segment:
    words = [
        Word(round(offset + w.start, 3), round(offset + w.end, 3), w.word,
             round(float(w.probability), 4))
        for w in (seg.words or [])
    ]
    return Segment(
        id=index,
        start=round(offset + seg.start, 3),
        end=round(offset + seg.end, 3),
        text=seg.text.strip(),
        words=words,
        avg_logprob=round(float(seg.avg_logprob), 4),
        no_speech_prob=round(float(seg.no_speech_prob), 4),
        low_confidence=bool(seg.avg_logprob < low_confidence_logprob),
    )


def run(audio_path: str | Path, transcript_path: str | Path, asr: dict,
        language: str = "auto", threads: int = 2,
        rttm_path: str | Path | None = None) -> Transcript:
    """Transcribe, label segments by speaker (if diarized), write transcript.json."""
    transcript = transcribe(audio_path, asr, language, threads)
    if rttm_path is not None:
        from dubflow.rttm import read_rttm
        from dubflow.speaker_split import split_by_speaker

        before = len(transcript.segments)
        transcript.segments = split_by_speaker(transcript.segments, read_rttm(rttm_path))
        log.info("speaker labels: %d segments -> %d single-speaker segments", before,
                 len(transcript.segments))
    before = len(transcript.segments)
    transcript.segments = sentence_lines(transcript.segments, asr["line_max_pause_s"],
                                         asr["line_max_s"])
    log.info("sentence lines: %d segments -> %d lines, %.0f %% ending a sentence", before,
             len(transcript.segments), 100 * sentence_share(transcript.segments))
    write_json(transcript_path, transcript.to_dict())
    return transcript


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        run,
        audio_path=sm.input.audio,
        transcript_path=sm.output.transcript,
        asr=sm.params.asr,
        language=sm.params.language,
        threads=sm.threads,
        rttm_path=sm.input.rttm,
    )
