"""Batch throughput: 8 short videos dubbed in one run, sequential against parallel.

A season is many videos in one ``snakemake`` call, and on a small machine the question
is whether running jobs of different videos side by side pays, or whether the stages'
own threads already fill the cores. Each video is ~20 s of a two-speaker conversation
(Piper "joe" and espeak-ng "f3") whose lines are unique to it, so no video is served
from another's per-line caches. Every mode starts cold (no outputs, no caches):

- ``--cores 1``: one job at a time, every job on 1 thread (Snakemake scales ``threads:``
  down to the cores);
- ``--cores 2``: as a user runs it; the 2-thread stages (diarize, transcribe, translate,
  synthesize) take both cores, so only 1-thread jobs (extract, subtitles, mix, mux,
  report) run beside another job;
- ``--cores 2`` with every rule set to 1 thread (``--set-threads``): two videos' jobs at
  once, each on one core.

Per mode: wall time, videos per minute, speed-up over ``--cores 1``, the sum of job times,
cores actually used, and how often more job threads wanted to run than there are cores
(oversubscription). Prints tables; nothing is asserted.

    python bench/batch.py                  # 8 videos of ~20 s
    python bench/batch.py --videos 4
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common import CACHE, prepare_workdir, read_benchmarks, snakemake

FIRST_NAMES = ["Anna", "Bruno", "Carla", "Duarte", "Elena", "Filipe", "Gina", "Hugo",
               "Irene", "Jorge", "Laura", "Marco"]
LINES_PER_VIDEO = 5
ONE_THREAD = ["diarize=1", "transcribe=1", "translate=1", "synthesize=1"]
MODES = {
    "--cores 1": ["--cores", "1"],
    "--cores 2": ["--cores", "2"],
    "--cores 2, 1 thread/job": ["--cores", "2", "--set-threads", *ONE_THREAD],
}


def short_video(index: int) -> Path:
    """~20 s, two voices, lines that only this video says (cached)."""
    from conversation import LINES, conversation, write_wav
    from demo_media import make_video

    video = CACHE / "media" / f"batch-{index:02d}.mp4"
    if not video.is_file():
        who = FIRST_NAMES[index % len(FIRST_NAMES)]
        script = [(("joe", "espeak_f3")[k % 2],
                   f"{who}, {LINES[(index * LINES_PER_VIDEO + k) % len(LINES)].lower()}")
                  for k in range(LINES_PER_VIDEO)]
        audio, _ = conversation(script, seed=index)
        speech = write_wav(video.with_suffix(".speech.wav"), audio)
        make_video(speech, video)
        speech.unlink()
    return video


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    args = parser.parse_args()

    videos = {f"b{i:02d}": short_video(i) for i in range(args.videos)}
    from common import media_duration

    seconds = sum(media_duration(v) for v in videos.values())
    print(f"Batch: {len(videos)} videos, {seconds:.0f} s of media in all "
          f"({seconds / len(videos):.1f} s each), cold run per mode, {os.cpu_count()} cores")
    print(f"{'mode':<25}{'wall s':>8}{'videos/min':>12}{'speed-up':>10}{'job s':>8}"
          f"{'cores used':>12}{'R > cores':>11}{'other load':>12}")
    baseline, per_job = None, {}
    for mode, flags in MODES.items():
        workdir = prepare_workdir(CACHE / "runs" / "batch", videos)
        run = snakemake(workdir, *flags, log=workdir / f"snakemake{flags[1]}.log")
        if run.returncode != 0:
            print(f"{mode}: failed\n{run.output[-3000:]}")
            return 1
        jobs = [bench for name in videos
                for bench in read_benchmarks(workdir / "benchmarks" / name).values()]
        baseline = baseline or run.wall_s
        for bench in jobs:
            per_job.setdefault(bench.job, {}).setdefault(mode, []).append(bench.s)
        cores = int(flags[1])
        over = sum(r > cores for r in run.running) / max(len(run.running), 1)
        other = max(0.0, run.machine_cpu_s - run.cpu_s) / run.wall_s
        print(f"{mode:<25}{run.wall_s:>8.1f}{60 * len(videos) / run.wall_s:>12.2f}"
              f"{baseline / run.wall_s:>9.2f}x{sum(b.s for b in jobs):>8.0f}"
              f"{run.cpu_s / run.wall_s:>12.2f}{over:>10.0%}{other:>12.2f}", flush=True)
    print("job s = sum of the jobs' wall times (benchmark files); cores used = CPU s of "
          "snakemake and its jobs / wall s;\nR > cores = share of 0.25 s samples in which "
          "more job threads were runnable than the run's cores (oversubscription);\n"
          "other load = cores used by other processes meanwhile (inflates the walls).")
    print(f"\nMean job wall s per video\n{'job':<15}" + "".join(f"{m:>25}" for m in MODES))
    for job, by_mode in sorted(per_job.items()):
        print(f"{job:<15}" + "".join(f"{sum(v) / len(v):>25.1f}" for v in by_mode.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
