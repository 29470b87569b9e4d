"""Dry-run (``snakemake -n``) time of a big samples sheet, against the engine's own floor.

A season or an archive is planned before anything runs, and every ``snakemake -n``
preflight pays the same cost, so planning must stay close to what Snakemake itself needs
for the same graph. Measured:

- ours: the real workflow (a copy of the working tree, ``profiles/default`` applied) on a
  samples sheet of N rows (1,000 by default) that all point at one small generated
  video, with unique names, from a cold folder (nothing built);
- floor: a throwaway Snakefile with the same rules, the same file names, threads,
  resources, logs and benchmark files per video, but plain strings only: no config, no
  validation, no input functions, no checkpoint; run with the same profile. Two
  flavours: each job a one-line ``script:`` (like ours: Snakemake reads every job's
  script while planning, ~0.7 ms a job) and ``shell:`` (the bare engine).

Our transcribe is a checkpoint, so a dry run of ours plans only what does not wait for
it: per video extract, diarize, transcribe, translate, synthesize, mix, report, and mux
(whose inputs are pending), not the subtitles. The floor has exactly those 8 rules per
video plus ``all``, and the job counts of both plans (Snakemake's "Job stats" total) are
printed side by side so the comparison is like with like.

``--profile`` also runs both under cProfile and prints our own functions by cumulative
time, then the functions where ours spends the most time beyond the floor. Prints tables; nothing is asserted.

    python bench/dryrun.py                     # 1,000 videos
    python bench/dryrun.py --videos 200 --profile
"""

from __future__ import annotations

import argparse
import pstats
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import CACHE, ROOT, conversation_video, prepare_workdir

FLOOR_SNAKEFILE = '''
# The engine's floor: the same jobs and files per video as dubflow's dry-run plan.
NAMES = [f"v{i:05d}" for i in range(@VIDEOS@)]
VIDEO = "@VIDEO@"


rule all:
    input:
        expand("out/{name}.mkv", name=NAMES),
        expand("out/{name}.report.html", name=NAMES),


rule extract:
    input: VIDEO
    output: analysis="work/{name}/audio.wav", source="work/{name}/source.wav"
    log: "logs/{name}/extract.log"
    benchmark: "benchmarks/{name}/extract.tsv"
    threads: 1
    resources: mem_mb=500, runtime=60
    @BODY@


rule diarize:
    input: audio="work/{name}/audio.wav"
    output: rttm="work/{name}/speakers.rttm"
    log: "logs/{name}/diarize.log"
    benchmark: "benchmarks/{name}/diarize.tsv"
    threads: 2
    resources: mem_mb=3000, runtime=120
    @BODY@


rule transcribe:
    input: audio="work/{name}/audio.wav", rttm="work/{name}/speakers.rttm"
    output: transcript="work/{name}/transcript.json"
    log: "logs/{name}/transcribe.log"
    benchmark: "benchmarks/{name}/transcribe.tsv"
    threads: 2
    resources: mem_mb=2000, runtime=120
    @BODY@


rule translate:
    input: transcript="work/{name}/transcript.json", audio="work/{name}/audio.wav"
    output: translation="work/{name}/{lang}/translation.json"
    log: "logs/{name}/translate.{lang}.log"
    benchmark: "benchmarks/{name}/translate.{lang}.tsv"
    threads: 2
    resources: mem_mb=2000, runtime=60
    @BODY@


rule synthesize:
    input: translation="work/{name}/{lang}/translation.json", audio="work/{name}/audio.wav"
    output: tts=directory("work/{name}/{lang}/tts")
    log: "logs/{name}/synthesize.{lang}.log"
    benchmark: "benchmarks/{name}/synthesize.{lang}.tsv"
    threads: 2
    resources: mem_mb=1500, runtime=120
    @BODY@


rule mix:
    input: source="work/{name}/source.wav", tts="work/{name}/{lang}/tts"
    output: dub="work/{name}/{lang}/dub.wav", fit="work/{name}/{lang}/fit.json"
    log: "logs/{name}/mix.{lang}.log"
    benchmark: "benchmarks/{name}/mix.{lang}.tsv"
    threads: 1
    resources: mem_mb=1000, runtime=60
    @BODY@


rule mux:
    input: dubs="work/{name}/pt/dub.wav", video=VIDEO, transcript="work/{name}/transcript.json"
    output: mkv="out/{name}.mkv"
    log: "logs/{name}/mux.log"
    benchmark: "benchmarks/{name}/mux.tsv"
    threads: 1
    resources: mem_mb=500, runtime=60
    @BODY@


rule report:
    input:
        translations="work/{name}/pt/translation.json",
        fits="work/{name}/pt/fit.json",
        transcript="work/{name}/transcript.json",
        rttm="work/{name}/speakers.rttm",
    output: html="out/{name}.report.html"
    log: "logs/{name}/report.log"
    benchmark: "benchmarks/{name}/report.tsv"
    threads: 1
    resources: mem_mb=1000, runtime=10
    @BODY@
'''


FLOOR_BODIES = {"script:": 'script: "job.py"', "shell:": 'shell: "touch {output}"'}


def dry_run(command: list[str], cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, jobs planned (Job stats total), output."""
    started = time.monotonic()
    run = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.monotonic() - started
    output = run.stdout + run.stderr
    if run.returncode != 0:
        print(output[-3000:])
        raise SystemExit(f"dry run failed in {cwd}")
    totals = re.findall(r"^total\s+(\d+)$", output, re.M)
    return wall, int(totals[0]) if totals else 0, output


def job_stats(output: str) -> str:
    found = re.search(r"Job stats:\n(.*?)\n\n", output, re.S)
    return found.group(1) if found else "(no job stats)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--profile", action="store_true", help="cProfile our dry run too")
    args = parser.parse_args()

    video, _ = conversation_video(0.1, name="tiny")
    names = {f"v{i:05d}": video for i in range(args.videos)}
    ours_dir = prepare_workdir(CACHE / "runs" / f"dryrun-{args.videos}", names)
    snakemake = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules"]
    profile = ["--workflow-profile", str(ROOT / "profiles" / "default")]
    plans = {"ours": (snakemake + ["--snakefile", "workflow/Snakefile",
                                   "--configfile", "bench.yaml"], ours_dir)}
    for kind, body in FLOOR_BODIES.items():
        folder = CACHE / "runs" / f"dryrun-{args.videos}-floor-{kind}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "job.py").write_text("pass\n")
        (folder / "Snakefile").write_text(FLOOR_SNAKEFILE.replace("@VIDEOS@", str(args.videos))
                                          .replace("@VIDEO@", str(video))
                                          .replace("@BODY@", body))
        plans[f"floor, {kind}"] = (snakemake + ["--snakefile", "Snakefile", *profile], folder)

    results = {}
    for label, (command, cwd) in plans.items():
        runs = [dry_run(command, cwd) for _ in range(args.repeat)]
        results[label] = min(runs, key=lambda r: r[0])

    print(f"Dry run (snakemake -n) of {args.videos} videos, best of {args.repeat}")
    print(f"{'workflow':<16}{'wall s':>9}{'jobs planned':>14}{'ms/job':>9}{'ours is':>10}")
    for label, (wall, jobs, _) in results.items():
        ratio = results["ours"][0] / wall
        print(f"{label:<16}{wall:>9.1f}{jobs:>14}{1000 * wall / max(jobs, 1):>9.2f}"
              f"{ratio:>9.2f}x")
    print("target: ours <= 1.5x the floor. 'floor, script:' runs a one-line script per job "
          "as our rules do (Snakemake\nreads every job's script source while planning); "
          "'floor, shell:' is the bare engine. Walls include\nPython start and importing "
          "Snakemake (~1 s).")
    for label, (_, _, output) in results.items():
        print(f"\n{label}: Snakemake's job stats\n{job_stats(output)}")

    if args.profile:
        profiles = {}
        for label in ("ours", "floor, script:"):
            command, cwd = plans[label]
            profiles[label] = cwd / "dryrun.prof"
            dry_run([sys.executable, "-m", "cProfile", "-o", str(profiles[label])]
                    + command[1:], cwd)
        print_profile(profiles["ours"], profiles["floor, script:"])
    return 0


def cumulative(stats_file: Path) -> tuple[float, dict[str, tuple[float, float, int]]]:
    """Total seconds and function -> (cumulative s, own s, calls) from a cProfile file."""
    stats = pstats.Stats(str(stats_file))
    rows = {}
    for (path, line, function), (_, calls, own, cum, _) in stats.stats.items():
        rows[f"{short(path)}:{line}({function})"] = (cum, own, calls)
    return stats.total_tt, rows


def print_profile(ours_file: Path, floor_file: Path, top: int = 20) -> None:
    """Our own functions by cumulative time, then where ours spends more than the floor."""
    ours_total, ours = cumulative(ours_file)
    floor_total, floor = cumulative(floor_file)
    print(f"\ncProfile (times inflated by profiling): ours {ours_total:.1f} s, floor "
          f"{floor_total:.1f} s")
    print("\nour code (workflow/rules, workflow/scripts, the Snakefile), by cumulative time:")
    print(f"{'cum s':>8}{'own s':>8}{'calls':>9}  function")
    mine = [(v, k) for k, v in ours.items() if k.startswith(("rules/", "scripts/", "Snakefile"))]
    for (cum, own, calls), where in sorted(mine, reverse=True)[:top]:
        print(f"{cum:>8.2f}{own:>8.2f}{calls:>9}  {where}")
    print("\nwhere ours spends more than the floor (cumulative s, largest differences):")
    print(f"{'ours':>8}{'floor':>8}{'extra':>8}{'calls':>9}  function")
    extra = [(ours[k][0] - floor.get(k, (0.0,))[0], k) for k in ours]
    for delta, where in sorted(extra, reverse=True)[:top]:
        print(f"{ours[where][0]:>8.2f}{floor.get(where, (0.0,))[0]:>8.2f}{delta:>8.2f}"
              f"{ours[where][2]:>9}  {where}")


def short(path: str) -> str:
    for marker in ("/workflow/", "site-packages/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


if __name__ == "__main__":
    sys.exit(main())
