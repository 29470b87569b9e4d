"""Speed, memory and quality of the separation (Spleeter 2 stems, CPU).

A 10-minute 48 kHz stereo source (12 s of Piper speech over generated music at equal
RMS, looped) is separated by ``separation.separate_file`` in a fresh process per thread
count, so each peak RSS (the kernel's high-water mark) is that run's alone. Then the
quality on a 60 s 44.1 kHz clip: speech left in the bed, music lost from it and SI-SDR
of the vocals, measured as in tests/test_separation.py.

    python bench/separation_speed.py                  # 10 min, 1 and 2 threads
    python bench/separation_speed.py --minutes 2 --music-db -6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
for folder in ("workflow/scripts", "tools", "tests"):
    sys.path.insert(0, str(ROOT / folder))

from dubflow import separation
from test_separation import leak_figures, si_sdr, speech_over_music

RATE = 48_000
CLIP_S = 12.0


def make_source(path: Path, minutes: float) -> None:
    """The 12 s clip looped to ``minutes``, 24-bit like the extract stage's source.wav."""
    mix, _, _ = speech_over_music(RATE, CLIP_S, 2)
    frames = int(minutes * 60 * RATE)
    sf.write(path, np.resize(mix, (frames, 2)), RATE, subtype="PCM_24")


def worker(source: Path, threads: int) -> None:
    """One separation in this process; prints its figures as JSON."""
    stats = separation.separate_file(source, source.with_name(f"bed{threads}.wav"),
                                     threads=threads)
    print(json.dumps(stats))


def timed_run(source: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", str(source),
                          "--threads", str(threads)], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def quality(music_db: float) -> dict:
    mix, speech, music = speech_over_music(separation.MODEL_RATE, 60.0, 2)
    music = music * 10 ** (music_db / 20)
    mix = speech + music
    vocals = separation.separate_vocals(mix, separation.MODEL_RATE, threads=2)
    figures = leak_figures(mix, speech, music, separation.bed_from(mix, vocals))
    return {**figures, "si_sdr_db": si_sdr(vocals, speech)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--music-db", type=float, default=0.0,
                        help="music level against the speech (RMS), for the quality figures")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.threads)
    separation.check_weights()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source.wav"
        make_source(source, args.minutes)
        print(f"{args.minutes:g} min, {RATE} Hz stereo, chunks of 30 s")
        print(f"{'threads':>7} {'seconds':>8} {'RTF':>7} {'peak RSS':>9}")
        for threads in (1, 2):
            stats = timed_run(source, threads)
            print(f"{threads:>7} {stats['separate_s']:>8.1f} {stats['rtf']:>7.4f} "
                  f"{stats['peak_rss_mb']:>6.0f} MB")
    figures = quality(args.music_db)
    print(f"quality, 60 s at {args.music_db:+g} dB music: " +
          ", ".join(f"{name} {value:.1f}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
