"""The review app's two waits, on the bench's 10-minute video: hearing an edited line
(preview) and rebuilding after a one-line Apply.

1. Preview: the app (tools/review.py, started as a user starts it) is asked for a few
   lines of typical length with a new text each (never voiced before, so nothing comes
   from the TTS cache); prints each latency and the median. Target: 2 s.
2. Apply: one line's text changed through the app's Apply, which writes
   edits/<name>.pt.tsv and runs Snakemake in the background; prints the time until the
   app reports the rebuild done, against the full run's wall time from bench/run.py's
   last results (target: at most 10 %), and the synthesize log's "1 synthesized".

The working folder is ``~/.cache/dubflow-bench/runs/review-<m>min``: built cold the first
time, or seeded from bench/run.py's folder of the same length when that one exists (its
outputs and caches copied), then brought up to date with the workflow as it is now by
one untimed Snakemake run, so the Apply measures the edit only.

    python bench/review_speed.py                 # 10 minutes
    python bench/review_speed.py --minutes 2     # a quick look
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import CACHE, ROOT, conversation_video, prepare_workdir, snakemake

VOICES = ("joe", "espeak_f3")  # bench/run.py's conversation


def workspace(minutes: float, cores: int, update: bool = True) -> tuple[Path, str]:
    """A built, up-to-date working folder and the video's name."""
    name = f"conv{minutes:g}"
    video, _ = conversation_video(minutes, VOICES)
    workdir = CACHE / "runs" / f"review-{minutes:g}min"
    built = CACHE / "runs" / f"run-{minutes:g}min"
    if not (workdir / "out" / f"{name}.mkv").is_file() and (built / "out" / f"{name}.mkv").is_file():
        print(f"seeding {workdir} from {built}", flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(built, workdir, symlinks=True,
                        ignore=shutil.ignore_patterns("edits", "dubflow"))
    cold = not (workdir / "out" / f"{name}.mkv").is_file()
    shutil.rmtree(workdir / "edits", ignore_errors=True)  # every run edits the same line
    if not cold and not update:
        return workdir, name
    prepare_workdir(workdir, {name: video}, wipe=cold)
    started = time.monotonic()
    run = snakemake(workdir, "--cores", str(cores), sample=False,
                    log=workdir / "catch-up.log")
    if run.returncode != 0:
        raise SystemExit(f"the build failed; see {workdir / 'catch-up.log'}")
    print(f"{'built' if cold else 'brought up to date'} in {time.monotonic() - started:.0f} s "
          f"({run.steps_done()})", flush=True)
    return workdir, name


def start_app(workdir: Path, name: str, cores: int) -> tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "review.py"), str(workdir), "--name", name,
         "--configfile", "bench.yaml", "--snakefile", "dubflow/workflow/Snakefile",
         "--cores", str(cores)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", proc.stdout.readline())
    if not found:
        proc.kill()
        raise SystemExit("the review app did not start")
    return proc, found.group(1), found.group(2)


def post(base: str, token: str, path: str, payload: dict):
    import requests

    return requests.post(base + path, json=payload, headers={"X-Review-Token": token},
                         timeout=600)


def typical_lines(lines: list[dict], count: int) -> list[dict]:
    """Lines of about the median length, spread over the video."""
    spoken = [line for line in lines if len(line["text"].split()) >= 4]
    median = statistics.median(len(line["text"]) for line in spoken)
    typical = [line for line in spoken if abs(len(line["text"]) - median) <= 0.2 * median]
    step = max(1, len(typical) // count)
    return typical[::step][:count]


def main() -> int:
    import requests

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="media length (10)")
    parser.add_argument("--cores", type=int, default=2, help="cores for the rebuild (2)")
    parser.add_argument("--lines", type=int, default=5, help="lines to preview (5)")
    parser.add_argument("--no-update", action="store_true",
                        help="use the folder as it is (a quick second look; the Apply then "
                             "also redoes what the last one changed)")
    args = parser.parse_args()
    workdir, name = workspace(args.minutes, args.cores, update=not args.no_update)
    translation = json.loads((workdir / "work" / name / "pt" / "translation.json").read_text())
    proc, base, token = start_app(workdir, name, args.cores)
    try:
        started = time.monotonic()
        # the app makes a first preview while warming up; this waits for it
        first = translation["lines"][0]
        post(base, token, "/api/preview", {"lang": "pt", "id": first["id"], "text": first["text"]})
        print(f"\napp ready (voices loaded, first preview made) in "
              f"{time.monotonic() - started:.1f} s")
        # then the page's video proxy, which the warm-up encodes once for this dub: previews
        # made while it encodes share the 2 cores with it (measured: median 3.7 s, not 1.9)
        import requests

        clock = time.monotonic()
        requests.get(f"{base}/video/pt", params={"token": token}, timeout=1800)
        print(f"video proxy ready {time.monotonic() - clock:.1f} s later (made once per dub; "
              f"previews are timed after it)")

        print("\n1. Preview of an edited line (new text, so synthesized)")
        times = []
        for line in typical_lines(translation["lines"], args.lines):
            text = "Bem, " + line["text"][0].lower() + line["text"][1:]
            clock = time.monotonic()
            response = post(base, token, "/api/preview",
                            {"lang": "pt", "id": line["id"], "text": text})
            seconds = time.monotonic() - clock
            if response.status_code != 200:
                print(f"  line {line['id']}: refused: {response.json()['error']}")
                continue
            info = json.loads(response.headers["X-Preview"])
            times.append(seconds)
            print(f"  line {line['id']} ({len(text)} characters, {info['natural_s']:.1f} s "
                  f"spoken, {', '.join(info['flags']) or 'fits'}): {seconds:.2f} s")
        if times:
            print(f"preview latency: median {statistics.median(times):.2f} s, max "
                  f"{max(times):.2f} s (target 2 s)")

        print("\n2. Apply of a one-line edit (rebuild in the background)")
        line = translation["lines"][len(translation["lines"]) // 2]
        clock = time.monotonic()
        # a text never voiced before (the TTS cache outlives runs), so the line is synthesized
        words = line["text"].rstrip(".!?").split()
        shift = int(time.time()) % max(1, len(words) - 1) + 1
        reworded = " ".join(words[shift:] + words[:shift]) + "."
        response = post(base, token, "/api/apply", {"lang": "pt", "edits": {line["id"]: reworded}})
        if response.status_code != 202:
            print(f"refused: {response.json()['error']}")
            return 1
        while True:
            status = requests.get(f"{base}/api/status?token={token}", timeout=30).json()
            if status["state"] in ("done", "failed"):
                break
            time.sleep(0.5)
        wall = time.monotonic() - clock
        if status["state"] == "failed":
            print(f"the rebuild failed: {status['error']}\n{status['log']}")
            return 1
        results = CACHE / "results" / f"run-{args.minutes:g}min.json"
        full = json.loads(results.read_text())["wall_s"] if results.is_file() else None
        share = f" = {wall / full:.1%} of the full run's {full:.0f} s (target <= 10 %)" if full else ""
        print(f"apply: line {line['id']} rebuilt in {wall:.1f} s{share}; "
              f"{status['done']} of {status['total']} steps")
        log = (workdir / "logs" / name / "synthesize.pt.log").read_text()
        found = re.findall(r"\d+ lines: \d+ synthesized, \d+ from cache", log)
        print(f"synthesize.pt log: {found[-1] if found else '(no such line)'}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
