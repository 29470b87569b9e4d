"""`make bench`: real-time factor and peak memory of every stage on a long generated input.

Generates a video of spoken sentences (Piper) of the requested length, runs the real
workflow on it through the Snakemake CLI, and reads the figures from Snakemake's own
``benchmark:`` files (wall time, max RSS per job). Prints a table; nothing is asserted.

    python bench/run.py                 # 10 minutes of speech, Whisper base, 2 threads
    python bench/run.py --minutes 2 --model models/whisper-tiny.en
"""

from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import yaml  # noqa: E402

from demo_media import make_video, speech_track  # noqa: E402

SUBJECTS = ["The captain", "My sister", "The old station master", "Our new neighbour",
            "The river guide", "A tired reporter", "The baker", "The young pilot"]
VERBS = ["carried", "painted", "forgot", "repaired", "found", "sold", "watched", "opened"]
OBJECTS = ["a blue umbrella", "the heavy wooden door", "three letters from home",
           "the map of the northern hills", "a basket of green apples", "the broken radio"]
PLACES = ["before the storm arrived", "near the harbour", "after dinner",
          "on the first morning of spring", "behind the library", "during the long journey"]


def sentences(seconds: float, seed: int = 7) -> list[str]:
    """Enough varied sentences for about `seconds` of speech (Piper joe: ~2.75 words/s)."""
    rng = random.Random(seed)
    out, words = [], 0
    while words < seconds * 2.75:
        line = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}."
        out.append(line)
        words += len(line.split())
    return out


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
    if not video.exists():
        started = time.monotonic()
        speech = ws / "bench.speech.wav"
        speech_track(sentences(args.minutes * 60), speech, gap_s=0.6)
        make_video(speech, video)
        speech.unlink()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
