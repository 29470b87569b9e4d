"""`make bench`: per-stage time, RTF and peak memory of the whole workflow, and an edit.

What it measures, on a generated two-speaker English conversation (Piper "joe" and
espeak-ng "f3", the tests' generator) dubbed into Portuguese with the default models
(Whisper base int8, pyannote + CAM++, bergamot en→pt, Piper/espeak voices):

1. Full run, cold (no outputs, no per-line caches), through the Snakemake CLI exactly as a
   user runs it (``profiles/default``, 2 cores): each job's wall time, RTF (job time /
   media time) and peak RSS from Snakemake's ``benchmarks/`` files, next to the exact peak
   (the kernel's VmHWM, sampled from /proc; Snakemake itself samples RSS only every 30 s
   after a job's first 15 s, so it can miss the peak of a long job).
2. Whole-run wall time and RTF, and the orchestration overhead: wall time minus the time
   the jobs ran (what Snakemake spends starting, validating, planning, re-planning after
   the checkpoint and scheduling, outside any job).
3. Threads: per job process, the threads the rule grants against the threads that used
   the CPU (an oversubscribed job shows more busy threads than granted).
4. Incremental rebuild: one translated line edited through ``edits/{name}.pt.tsv``, run
   again: wall time against the full run, which jobs ran, and the synthesize stage's
   "N lines: 1 synthesized, M from cache".
5. Quality against the generated script: diarization error rate and word error rate.

Media and working folders are cached in ~/.cache/dubflow-bench (``$DUBFLOW_BENCH_CACHE``),
never in the repository; each run's figures are kept there too, so a 60-minute run
(``--long``) is compared with the last 10-minute one (memory growth with duration).
Prints tables; nothing is asserted.

    python bench/run.py                 # 10 minutes (make bench)
    python bench/run.py --long          # 60 minutes: takes about an hour on 2 cores
    python bench/run.py --minutes 2     # a quick look
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

from common import (CACHE, ROOT, Run, busy_seconds, conversation_video, media_duration,
                    prepare_workdir, read_benchmarks, rule_threads, snakemake, threads_table)

VOICES = ("joe", "espeak_f3")
TARGETS = {"rtf": 0.35, "overhead": 0.05, "incremental": 0.10, "memory_mb_60min": 3072}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="media length (10)")
    parser.add_argument("--long", action="store_true", help="60 minutes instead (slow)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (2)")
    parser.add_argument("--no-edit", action="store_true", help="skip the incremental rebuild")
    args = parser.parse_args()
    minutes = 60.0 if args.long else args.minutes

    video, reference = conversation_video(minutes, VOICES)
    duration = media_duration(video)
    name = f"conv{minutes:g}"
    workdir = prepare_workdir(CACHE / "runs" / f"run-{minutes:g}min", {name: video})
    commit = git("rev-parse", "--short", "HEAD")
    print(header(video, duration, args.cores, commit), flush=True)

    full = snakemake(workdir, "--cores", str(args.cores), log=workdir / "full.log")
    if full.returncode != 0:
        print(full.output[-3000:])
        return 1
    jobs = read_benchmarks(workdir / "benchmarks" / name)
    print_full_run(full, jobs, workdir / "logs" / name, duration, args.cores)
    save_and_compare(minutes, duration, full, jobs, commit)
    if not args.no_edit:
        print_incremental(workdir, name, full, duration, args.cores)
    print_quality(json.loads(reference.read_text()), workdir / "work" / name)
    return 0


def header(video: Path, duration: float, cores: int, commit: str) -> str:
    dirty = " + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    import snakemake as sm

    return (f"dubflow bench, commit {commit}{dirty}, "
            f"{datetime.datetime.now():%Y-%m-%d %H:%M}, snakemake {sm.__version__}, "
            f"--cores {cores}\ninput: {video.name}, {duration / 60:.1f} min, voices "
            f"{' + '.join(VOICES)}; default config (Whisper base int8, bergamot en→pt)")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------------------------------
# 1-3: the full run
# ---------------------------------------------------------------------------------------


def job_table(jobs, run: Run, logs: Path, duration: float, cores: int) -> list[str]:
    threads = rule_threads(cores)
    by_start = sorted(jobs.values(), key=lambda b: b.start)
    sampled = sorted(run.jobs.values(), key=lambda p: p.first)
    lines = [f"{'job':<15}{'threads':>8}{'wall s':>9}{'RTF':>8}{'startup s':>10}"
             f"{'peak RSS MB':>13}{'VmHWM MB':>10}{'CPU s':>8}"]
    for bench in by_start:
        script = bench.job.split(".")[0]
        # the sampled process that started nearest this job's start
        proc = min((p for p in sampled if p.script == script),
                   key=lambda p: abs(p.first - bench.start), default=None)
        startup = first_log_time(logs / f"{bench.job}.log")
        startup_s = f"{startup - bench.start:.1f}" if startup else "-"
        lines.append(f"{bench.job:<15}{threads.get(script, 1):>8}{bench.s:>9.1f}"
                     f"{bench.s / duration:>8.3f}{startup_s:>10}{bench.max_rss_mb:>13.0f}"
                     f"{proc.hwm_mb if proc else float('nan'):>10.0f}{bench.cpu_s:>8.1f}")
    total = sum(b.s for b in jobs.values())
    lines.append(f"{'sum of jobs':<15}{'':>8}{total:>9.1f}{total / duration:>8.3f}")
    return lines


def print_full_run(run: Run, jobs, logs: Path, duration: float, cores: int) -> None:
    print(f"\n1. Full run, cold: {len(jobs)} jobs with a benchmark file, {run.steps_done()}")
    print("\n".join(job_table(jobs, run, logs, duration, cores)))
    print("   RTF = job wall s / media s. startup = job start to the stage's first log line "
          "(Python start + imports, counted in the job).\n   peak RSS = Snakemake's "
          "benchmark max_rss (job + children, sampled); VmHWM = the job's Python process "
          "peak, exact.")
    for translation in sorted(logs.parent.parent.glob(f"work/{logs.name}/*/translation.json")):
        lines = json.loads(translation.read_text())["lines"]
        unique = len({(line["speaker"], line["text"]) for line in lines})
        print(f"   {translation.parent.name}: {len(lines)} lines, {unique} distinct (speaker, "
              f"text): the generator repeats its script, and synthesize makes each distinct "
              f"line once, so its time is a lower bound.")

    busy = busy_seconds(jobs.values())
    total = sum(b.s for b in jobs.values())
    first = min(b.start for b in jobs.values()) - run.started
    last = run.started + run.wall_s - max(b.end for b in jobs.values())
    startups = [first_log_time(logs / f"{b.job}.log") for b in jobs.values()]
    startup_total = sum(t - b.start for t, b in zip(startups, jobs.values()) if t)
    overhead = run.wall_s - busy
    print(f"\n2. Whole run and orchestration ({run.other_load()})")
    rows = [
        ("whole run, wall", run.wall_s,
         f"RTF {run.wall_s / duration:.3f} (target <= {TARGETS['rtf']})"),
        ("sum of job times", total, "benchmark files; jobs overlap under --cores 2"),
        ("time with a job running", busy, "union of the jobs' [start, end]"),
        ("overhead = wall - busy", overhead,
         f"{overhead / run.wall_s:.1%} of wall (target <= {TARGETS['overhead']:.0%})"),
        ("  before the first job", first, "start, validation, preflight, DAG"),
        ("  after the last job", last, "onsuccess summary, exit"),
        ("  between jobs", overhead - first - last, "scheduling, checkpoint re-plan"),
        ("wall - sum of job times", run.wall_s - total,
         f"{(run.wall_s - total) / run.wall_s:.1%} (the brief's formula; negative when "
         f"jobs overlap)"),
        ("startup inside jobs", startup_total,
         "Python start + imports, already in the job times"),
    ]
    for label, seconds, note in rows:
        print(f"{label:<26}{seconds:>9.1f} s   {note}")

    print("\n3. Threads per job process (sampled from /proc every 0.25 s)")
    print("\n".join(threads_table(run.jobs, rule_threads(cores))))


def first_log_time(log: Path) -> float | None:
    try:
        with open(log, encoding="utf-8") as handle:
            stamp = handle.readline()[:23]
        return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except (OSError, ValueError):
        return None


def save_and_compare(minutes: float, duration: float, run: Run, jobs, commit: str) -> None:
    """Keep this run's memory figures; print them beside the other stored lengths."""
    results = CACHE / "results"
    results.mkdir(parents=True, exist_ok=True)
    peaks = {}
    for bench in jobs.values():
        script = bench.job.split(".")[0]
        hwm = max((p.hwm_mb for p in run.jobs.values() if p.script == script), default=0.0)
        peaks[bench.job] = {"s": bench.s, "max_rss": bench.max_rss_mb, "hwm": hwm}
    record = {"minutes": minutes, "duration_s": duration, "wall_s": run.wall_s,
              "commit": commit, "when": time.time(), "jobs": peaks}
    (results / f"run-{minutes:g}min.json").write_text(json.dumps(record, indent=1))
    stored = sorted((json.loads(p.read_text()) for p in results.glob("run-*min.json")),
                    key=lambda r: r["minutes"])
    if len(stored) < 2:
        print("\n   (memory against duration: run --long once to compare 10 and 60 minutes)")
        return
    a, b = stored[-2], stored[-1]  # the two longest: the slope that matters
    print("\n   Peak RSS MB against duration (the larger of Snakemake's and VmHWM), from the "
          "runs stored in " + str(results))
    print("   " + f"{'job':<15}" + "".join(f"{r['minutes']:>7g} min" for r in stored)
          + f"{'MB/min':>9}   (slope {a['minutes']:g} -> {b['minutes']:g} min)")
    for job in sorted(set.intersection(*(set(r["jobs"]) for r in stored))):
        peaks = [max(r["jobs"][job]["max_rss"], r["jobs"][job]["hwm"]) for r in stored]
        slope = (peaks[-1] - peaks[-2]) / ((b["duration_s"] - a["duration_s"]) / 60)
        print("   " + f"{job:<15}" + "".join(f"{p:>11.0f}" for p in peaks) + f"{slope:>9.1f}")
    print("   " + f"{'commit':<15}" + "".join(f"{r['commit']:>11}" for r in stored))
    print(f"   target: every job <= {TARGETS['memory_mb_60min']} MB at 60 min, growing "
          f"linearly with duration")


# ---------------------------------------------------------------------------------------
# 4: one edited line
# ---------------------------------------------------------------------------------------


def print_incremental(workdir: Path, name: str, full: Run, duration: float,
                      cores: int) -> None:
    translation = json.loads((workdir / "work" / name / "pt" / "translation.json").read_text())
    line = translation["lines"][len(translation["lines"]) // 2]
    edits = workdir / "edits" / f"{name}.pt.tsv"
    edits.parent.mkdir(exist_ok=True)
    new_text = f"Texto revisto pelo revisor: {line['text']}"
    edits.write_text(f"id\ttext\n{line['id']}\t{new_text}\n", encoding="utf-8")

    run = snakemake(workdir, "--cores", str(cores), log=workdir / "incremental.log")
    print(f"\n4. Incremental rebuild: line {line['id']} of {len(translation['lines'])} edited "
          f"in edits/{name}.pt.tsv ({run.other_load()})")
    if run.returncode != 0:
        print(run.output[-3000:])
        return
    jobs = read_benchmarks(workdir / "benchmarks" / name, since=run.started)
    share = run.wall_s / full.wall_s
    print(f"wall {run.wall_s:.1f} s = {share:.1%} of the full run's {full.wall_s:.1f} s "
          f"(target <= {TARGETS['incremental']:.0%}); {run.steps_done()}; "
          f"jobs run: {', '.join(run.jobs_run())}")
    for table in run.job_stats():
        print("Snakemake's job stats (the plan before the checkpoint is re-evaluated):")
        print("\n".join("    " + row for row in table.splitlines()))
    print("\n".join(job_table(jobs, run, workdir / "logs" / name, duration, cores)))
    busy = busy_seconds(jobs.values())
    print(f"time with a job running {busy:.1f} s; overhead {run.wall_s - busy:.1f} s "
          f"({(run.wall_s - busy) / run.wall_s:.0%} of this run)")
    for stage, pattern in (("translate.pt", "edited"), ("synthesize.pt", "from cache")):
        log = workdir / "logs" / name / f"{stage}.log"
        found = [text.split(": ", 1)[-1] for text in log.read_text().splitlines()
                 if pattern in text]
        print(f"{stage} log: {found[-1] if found else '(no such line)'}")


# ---------------------------------------------------------------------------------------
# 5: quality
# ---------------------------------------------------------------------------------------


def print_quality(reference: list[dict], work: Path) -> None:
    """DER of speakers.rttm and WER of transcript.json against the generated script."""
    from demo_media import word_error_rate
    from diarize import quiet_pyannote_import

    quiet_pyannote_import()
    warnings.filterwarnings("ignore", message=".*'uem' was approximated")
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    from dubflow.rttm import read_rttm

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
    print(f"\n5. Quality: DER {der:.1%} (collar 0.25 s), speakers found "
          f"{len({t.speaker for t in turns})} of {voices}; WER {wer:.1%}")


if __name__ == "__main__":
    sys.exit(main())
