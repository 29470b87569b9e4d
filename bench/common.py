"""Helpers shared by the bench scripts: cached media, one Snakemake run, its figures.

Everything generated lives outside the repository, under ``~/.cache/dubflow-bench``
(or ``$DUBFLOW_BENCH_CACHE``): media is made once and reused by every later run; each
bench gets its own working folder there, wiped before a cold run.

A run is the real workflow through the Snakemake CLI (so the repository's
``profiles/default`` applies, as for a user), timed from outside. Per-job figures come
from Snakemake's own ``benchmarks/`` files; a sampler that reads ``/proc`` every 0.25 s
adds what those files cannot say: the exact peak RSS of each job process (the kernel's
high-water mark, ``VmHWM``; Snakemake samples RSS only every 30 s after a job's first
15 s) and how many of its threads actually used the CPU.
"""

from __future__ import annotations

import csv
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("DUBFLOW_BENCH_CACHE", "~/.cache/dubflow-bench")).expanduser()
for folder in ("workflow/scripts", "tools", "tests"):
    if str(ROOT / folder) not in sys.path:
        sys.path.insert(0, str(ROOT / folder))

TICK = os.sysconf("SC_CLK_TCK")
# A Snakemake ``script:`` job runs as ``python .snakemake/scripts/tmpXXXX.<script>.py``.
SCRIPT_JOB = re.compile(r"\.snakemake/scripts/tmp[^.\s/]+\.(\w+)\.py")


# ---------------------------------------------------------------------------------------
# Media, generated once
# ---------------------------------------------------------------------------------------


def conversation_video(minutes: float, voices=("joe", "espeak_f3"),
                       name: str | None = None) -> tuple[Path, Path]:
    """A cached mp4 of a generated conversation and its reference turns (JSON)."""
    from conversation import long_conversation, write_wav
    from demo_media import make_video

    name = name or f"conversation-{minutes:g}min-{'-'.join(voices)}"
    video, reference = CACHE / "media" / f"{name}.mp4", CACHE / "media" / f"{name}.json"
    if not (video.is_file() and reference.is_file()):
        started = time.monotonic()
        audio, turns = long_conversation(minutes, voices=tuple(voices))
        speech = write_wav(CACHE / "media" / f".{name}.speech.wav", audio)
        make_video(speech, video)
        speech.unlink()
        reference.write_text(json.dumps([t.__dict__ for t in turns]))
        print(f"generated {video} ({len(audio) / 16000 / 60:.1f} min) in "
              f"{time.monotonic() - started:.0f} s", flush=True)
    return video, reference


def media_duration(video: Path) -> float:
    from dubflow.ffmpeg_safe import probe

    return probe(video, stage="bench").duration_s


# ---------------------------------------------------------------------------------------
# A working folder and one Snakemake run
# ---------------------------------------------------------------------------------------


WORKFLOW_FILES = ("workflow", "config", "profiles")


def prepare_workdir(workdir: Path, samples: dict[str, Path], config: dict | None = None,
                    wipe: bool = True) -> Path:
    """A folder with samples.tsv (name -> video), bench.yaml and ``workflow/``, a copy of
    the repository's workflow as it is now; cold state if ``wipe``.

    The copy keeps a long bench on one version of the code: edits made in the repository
    meanwhile would otherwise make Snakemake re-run jobs ("Code has changed since last
    execution") between the full and the incremental run. models/ is linked, not copied.
    Wiping removes outputs, Snakemake's metadata and the per-line translation and TTS
    caches (``cache/``, relative to the working folder by default), so a run is cold.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    snapshot = workdir / "dubflow"
    shutil.rmtree(snapshot, ignore_errors=True)
    snapshot.mkdir()
    for item in WORKFLOW_FILES:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, snapshot / item,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, snapshot / item)
    (snapshot / "models").symlink_to(ROOT / "models")
    if wipe:
        for stale in ("out", "work", "logs", "benchmarks", "cache", "edits", "speakers",
                      ".snakemake"):
            shutil.rmtree(workdir / stale, ignore_errors=True)
    rows = ["name\tpath"] + [f"{name}\t{path}" for name, path in samples.items()]
    (workdir / "samples.tsv").write_text("\n".join(rows) + "\n")
    import yaml

    settings = {"samples": "samples.tsv", **(config or {})}
    (workdir / "bench.yaml").write_text(yaml.safe_dump(settings))
    return workdir


@dataclass
class Run:
    """One Snakemake invocation as seen from outside."""

    wall_s: float
    returncode: int
    output: str
    started: float  # time.time() at launch
    jobs: dict[int, JobProcess] = field(default_factory=dict)  # pid -> sampled job process
    running: list[int] = field(default_factory=list)  # runnable job threads, per sample
    cpu_s: float = 0.0  # CPU time of snakemake and every job it ran
    machine_cpu_s: float = 0.0  # CPU time of the whole machine meanwhile

    def other_load(self) -> str:
        """How busy the machine was with other work: it inflates every figure."""
        other = max(0.0, self.machine_cpu_s - self.cpu_s)
        return (f"other processes used {other:.0f} CPU s during the run "
                f"({other / self.wall_s:.2f} of {os.cpu_count()} cores on average)")

    def job_stats(self) -> list[str]:
        """Snakemake's 'Job stats' tables, as printed (one per DAG it planned)."""
        return re.findall(r"Job stats:\n(.*?)\n\n", self.output, re.S)

    def steps_done(self) -> str:
        found = re.findall(r"(\d+ of \d+ steps \([^)]*\) done)", self.output)
        return found[-1] if found else "no job ran"

    def jobs_run(self) -> list[str]:
        """Rule names of the jobs that were started, in order."""
        return re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", self.output, re.M)


def snakemake(workdir: Path, *args: str, sample: bool = True, log: Path | None = None) -> Run:
    """``python -m snakemake -s dubflow/workflow/Snakefile --configfile bench.yaml ARGS`` in workdir."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", "dubflow/workflow/Snakefile",
               "--configfile", "bench.yaml", *args]
    started, clock = time.time(), time.monotonic()
    before, machine, own = (resource.getrusage(resource.RUSAGE_CHILDREN), machine_cpu(),
                            _own_cpu())
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    sampler = ProcessSampler(process.pid) if sample else None
    if sampler:
        sampler.start()
    output = process.communicate()[0]
    wall = time.monotonic() - clock
    after, machine = resource.getrusage(resource.RUSAGE_CHILDREN), machine_cpu() - machine
    machine -= _own_cpu() - own  # the sampler's share is ours, not other work
    if sampler:
        sampler.stop()
    if log:
        log.write_text(output)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Run(wall, process.returncode, output, started, sampler.jobs if sampler else {},
               sampler.running if sampler else [], cpu, machine)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK  # all but idle and iowait


# ---------------------------------------------------------------------------------------
# Snakemake's benchmark files
# ---------------------------------------------------------------------------------------


@dataclass
class Bench:
    """One row of benchmarks/{name}/{job}.tsv, plus when the job ran."""

    job: str
    s: float
    max_rss_mb: float
    cpu_s: float
    end: float  # the file's mtime: written when the job finished

    @property
    def start(self) -> float:
        return self.end - self.s


def read_benchmarks(folder: Path, since: float = 0.0) -> dict[str, Bench]:
    """job -> Bench for the files written after ``since`` (a time.time())."""
    rows = {}
    for tsv in sorted(folder.glob("*.tsv")):
        mtime = tsv.stat().st_mtime
        if mtime < since:
            continue
        with open(tsv, newline="") as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        rss = float(row["max_rss"]) if row["max_rss"] not in ("", "NA", "-") else float("nan")
        cpu = float(row["cpu_time"]) if row["cpu_time"] not in ("", "NA", "-") else float("nan")
        rows[tsv.stem] = Bench(tsv.stem, float(row["s"]), rss, cpu, mtime)
    return rows


def busy_seconds(rows) -> float:
    """Length of the union of the jobs' [start, end] intervals (jobs may overlap)."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted((r.start, r.end) for r in rows):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


# ---------------------------------------------------------------------------------------
# /proc sampler: exact peak memory and thread use of each job process
# ---------------------------------------------------------------------------------------


@dataclass
class JobProcess:
    """A ``script:`` job's Python process (and its children, e.g. ffmpeg) as sampled."""

    pid: int
    script: str
    first: float
    last: float = 0.0
    hwm_mb: float = 0.0  # VmHWM of the Python process: its exact peak RSS
    tree_rss_mb: float = 0.0  # largest sampled RSS sum of it and its children
    max_threads: int = 0  # most threads alive at once (Python process)
    max_running: int = 0  # most threads in state R at one sample (whole tree)
    thread_cpu: dict[int, float] = field(default_factory=dict)  # tid -> CPU s (whole tree)

    def busy_threads(self, share: float = 0.10) -> int:
        """Threads that used at least ``share`` of one core over the job's life."""
        life = max(self.last - self.first, 0.25)
        return sum(1 for cpu in self.thread_cpu.values() if cpu >= share * life)

    @property
    def cpu_s(self) -> float:
        return sum(self.thread_cpu.values())


def _stat(path: str) -> list[str] | None:
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


class ProcessSampler(threading.Thread):
    """Every ``interval`` s: the descendants of ``root``, and for each job process the
    peak memory and the CPU time of every thread of its tree."""

    def __init__(self, root: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.jobs: dict[int, JobProcess] = {}
        self.running: list[int] = []  # per sample: threads in state R over all job trees
        self._done = threading.Event()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def sample(self) -> None:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _stat(f"/proc/{entry}/stat")
                if fields:
                    parents[int(entry)] = int(fields[1])
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)

        def tree(pid: int) -> list[int]:
            found, todo = [], [pid]
            while todo:
                current = todo.pop()
                found.append(current)
                todo.extend(children.get(current, []))
            return found

        now, running = time.time(), 0
        for pid in tree(self.root):
            job = self.jobs.get(pid)
            if job is None:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                match = SCRIPT_JOB.search(cmdline.decode(errors="replace"))
                if not match or b"python" not in cmdline.split(b" ")[0]:
                    continue
                job = self.jobs[pid] = JobProcess(pid, match.group(1), now)
            running += self._sample_job(job, tree(pid), now)
        self.running.append(running)

    def _sample_job(self, job: JobProcess, pids: list[int], now: float) -> int:
        rss = running = 0
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss += int(values.get("VmRSS", "0 kB").split()[0])
            if pid == job.pid:
                job.hwm_mb = max(job.hwm_mb, int(values.get("VmHWM", "0 kB").split()[0]) / 1024)
                job.max_threads = max(job.max_threads, int(values.get("Threads", "0")))
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                fields = _stat(f"/proc/{pid}/task/{tid}/stat")
                if not fields:
                    continue
                running += fields[0] == "R"
                job.thread_cpu[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
        job.tree_rss_mb = max(job.tree_rss_mb, rss / 1024)
        job.max_running = max(job.max_running, running)
        job.last = now
        return running


def threads_table(jobs: dict[int, JobProcess], threads_of: dict[str, int]) -> list[str]:
    """One row per job process: configured threads against the threads that ran."""
    lines = [f"{'job process':<14}{'threads:':>9}{'alive':>7}{'busy':>6}{'max R':>7}"
             f"{'CPU s':>8}{'wall s':>8}{'cores':>7}",
             "  (alive = most threads at once; busy = threads that used >= 10 % of a core over "
             "the job; max R = most threads running or runnable in one 0.25 s sample, "
             "children included; cores = CPU s / wall s)"]
    for job in sorted(jobs.values(), key=lambda j: j.first):
        life = max(job.last - job.first, 0.25)
        lines.append(f"{job.script:<14}{threads_of.get(job.script, 1):>9}{job.max_threads:>7}"
                     f"{job.busy_threads():>6}{job.max_running:>7}{job.cpu_s:>8.1f}"
                     f"{life:>8.1f}{job.cpu_s / life:>7.2f}")
    return lines


def rule_threads(cores: int) -> dict[str, int]:
    """script name -> threads its job gets: the rule's ``threads:``, capped by the cores."""
    found = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for body in re.split(r"^(?:rule|checkpoint) ", smk.read_text(), flags=re.M)[1:]:
            script = re.search(r'scripts/(\w+)\.py"', body)
            threads = re.search(r"^\s+threads:\s*(\d+)", body, re.M)
            if script:
                found[script.group(1)] = min(int(threads.group(1)) if threads else 1, cores)
    return found
