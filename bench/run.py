"""`make bench`: real-time factor and peak memory of every stage on a long generated input.

Generates a video of a three-voice conversation (Piper, pitched Piper, espeak-ng; the
generator of the tests) of the requested length, runs the real workflow on it through
the Snakemake CLI, and reads the figures from Snakemake's own ``benchmark:`` files (wall
time, max RSS per job). Also scores the result against what was generated: diarization
error rate (collar 0.25 s) and word error rate. Prints tables; nothing is asserted.

    python bench/run.py                 # 10 minutes of speech, Whisper base, 2 threads
    python bench/run.py --minutes 2 --model models/whisper-tiny.en
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

import yaml  # noqa: E402

from conversation import long_conversation, write_wav  # noqa: E402
from demo_media import make_video, word_error_rate  # noqa: E402

def read_benchmarks(folder: Path) -> dict[str, dict[str, float]]:
    rows = {}
    for tsv in sorted(folder.glob("*.tsv")):
        with open(tsv, newline="") as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        rows[tsv.stem] = {"s": float(row["s"]), "max_rss": float(row["max_rss"])}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default=str(ROOT / "models" / "whisper-base"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    ws = args.workdir
    video = ws / "in" / "bench.mp4"
    reference = ws / "reference.json"
    if not video.exists() or not reference.exists():
        started = time.monotonic()
        audio, turns = long_conversation(args.minutes)
        speech = write_wav(ws / "bench.speech.wav", audio)
        make_video(speech, video)
        speech.unlink()
        reference.write_text(json.dumps([t.__dict__ for t in turns]))
        print(f"generated {video} in {time.monotonic() - started:.0f} s")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.update(samples=None, source_language="auto")
    config["asr"]["model"] = str(Path(args.model).resolve())
    (ws / "config.yaml").write_text(yaml.safe_dump(config))
    for stale in ("out", "work", "benchmarks", "logs"):
        subprocess.run(["rm", "-rf", str(ws / stale)], check=True)
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
         "--configfile", "config.yaml", "--cores", str(args.threads),
         "--set-threads", f"transcribe={args.threads}", "--", "out/bench.mkv"],
        cwd=ws, capture_output=True, text=True,
    )
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-2000:], sep="\n")
        return 1

    from ffmpeg_safe import probe

    duration = probe(video, stage="bench").duration_s
    rows = read_benchmarks(ws / "benchmarks" / "bench")
    print(f"\ninput: {duration / 60:.1f} min of speech, {args.threads} threads, "
          f"ASR model {Path(args.model).name}")
    print(f"{'stage':<16}{'wall s':>9}{'RTF':>9}{'peak RSS MB':>14}")
    for stage, row in rows.items():
        print(f"{stage:<16}{row['s']:>9.1f}{row['s'] / duration:>9.3f}{row['max_rss']:>14.0f}")
    total = sum(r["s"] for r in rows.values())
    print(f"{'all stages':<16}{total:>9.1f}{total / duration:>9.3f}")
    print_quality(json.loads(reference.read_text()), ws / "work" / "bench")
    return 0


def print_quality(reference: list[dict], work: Path) -> None:
    """DER of speakers.rttm and WER of transcript.json against the generated script."""
    from diarize import quiet_pyannote_import

    quiet_pyannote_import()
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    from rttm import read_rttm

    ref, hyp = Annotation(), Annotation()
    for turn in reference:
        ref[Segment(turn["start"], turn["end"])] = turn["voice"]
    turns = read_rttm(work / "speakers.rttm")
    for turn in turns:
        hyp[Segment(turn.start, turn.end)] = turn.speaker
    der = DiarizationErrorRate(collar=0.25)(ref, hyp)
    segments = json.loads((work / "transcript.json").read_text())["segments"]
    wer = word_error_rate([t["text"] for t in reference], segments)
    voices = len({t["voice"] for t in reference})
    print(f"\nquality: DER {der:.1%} (collar 0.25 s), speakers found "
          f"{len({t.speaker for t in turns})} of {voices}; WER {wer:.1%}")


if __name__ == "__main__":
    sys.exit(main())
