"""Apply: run Snakemake in the background to rebuild a video after review, one run at a time.

The app never builds anything itself: it runs the same command a user would, in the
project folder, so the engine decides what is out of date (the edited language's
translate, the one re-voiced line, mix, mux, the QA page). Snakemake's own progress lines
("3 of 7 steps (43%) done") are read back from the run's log for the page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

STEPS = re.compile(r"(\d+) of (\d+) steps \((\d+)%\) done")
ERROR = re.compile(r"^(?:dubflow: .+|.*Error.*|.*error:.+)$")
LOG_TAIL_LINES = 60


@dataclass
class Run:
    """The state of the latest rebuild, as the page shows it."""

    state: str = "idle"  # idle | running | done | failed
    started: float = 0.0
    finished: float = 0.0
    done_steps: int = 0
    total_steps: int = 0
    log: str = ""
    error: str = ""
    number: int = 0


def snakemake_command(root: Path, targets: list[str], configfiles: list[str],
                      snakefile: str | None, cores: int) -> list[str]:
    """The command a user would type in ``root``; the workflow's Snakefile when the
    folder has none of its own (a project folder beside the dubflow checkout)."""
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    command = [exe]
    # --configfile takes several values: it must not be last before the targets
    for configfile in configfiles:
        command += ["--configfile", configfile]
    if snakefile:
        command += ["--snakefile", snakefile]
    elif not any((root / rel).is_file() for rel in ("Snakefile", "workflow/Snakefile")):
        command += ["--snakefile", str(Path(__file__).resolve().parents[3] / "Snakefile")]
    return [*command, "--cores", str(cores), *targets]


class Rebuilder:
    """At most one Snakemake run at a time; its log in ``logs/review/``."""

    def __init__(self, root: Path, name: str, command: list[str]) -> None:
        self.root, self.name, self.command = root, name, command
        self.run = Run()
        self._lock = threading.Lock()
        self.log_path = root / "logs" / "review" / f"{name}.apply.log"

    def busy(self) -> bool:
        return self.run.state == "running"

    def start(self, on_done) -> bool:
        """Start a run, ``on_done`` after it succeeds; False (nothing started) while one runs."""
        with self._lock:
            if self.busy():
                return False
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.run = Run(state="running", started=time.time(), number=self.run.number + 1)
            threading.Thread(target=self._run, args=(on_done,), daemon=True).start()
            return True

    def _run(self, on_done) -> None:
        with open(self.log_path, "w", encoding="utf-8") as log:
            log.write("$ " + " ".join(self.command) + "\n")
            log.flush()
            try:
                code = subprocess.run(self.command, cwd=self.root, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
            except OSError as error:
                log.write(f"could not start snakemake: {error}\n")
                code = -1
        status = self.status()
        failed = code != 0
        if not failed:
            try:
                on_done()
            except Exception as error:  # the rebuilt files cannot be read
                failed, status.error = True, str(error)
        status.state = "failed" if failed else "done"
        if failed and not status.error:
            status.error = first_error(status.log) or f"snakemake exited with code {code}"
        status.finished = time.time()
        self.run = status

    def status(self) -> Run:
        """The run with its progress and log tail read from the log file now."""
        current = self.run
        if current.state == "idle":
            return current
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        steps = STEPS.findall(text)
        done, total = (int(steps[-1][0]), int(steps[-1][1])) if steps else (0, 0)
        return replace(current, done_steps=done, total_steps=total,
                       log="\n".join(text.splitlines()[-LOG_TAIL_LINES:]))


def first_error(log: str) -> str:
    """The first one-sentence error a stage printed (``dubflow: ...``), else the first
    line that looks like an error."""
    lines = log.splitlines()
    for line in lines:
        if line.startswith("dubflow: "):
            return line[len("dubflow: "):]
    for line in lines:
        if ERROR.match(line.strip()):
            return line.strip()
    return ""
