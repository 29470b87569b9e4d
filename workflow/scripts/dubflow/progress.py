"""Progress lines in a stage's log for long jobs (`tail -f logs/<name>/<stage>.log`).

Snakemake shows which jobs run and how many are done; inside a 20-minute transcription
it shows nothing. These lines say how far a job is and roughly how long it has left,
at most every ``every_s`` seconds, so a log stays short on a 2-hour film.
"""

from __future__ import annotations

import logging
import time


class Progress:
    def __init__(self, total: float, what: str, unit: str = "", every_s: float = 15.0,
                 logger: logging.Logger | None = None) -> None:
        self.total = max(float(total), 1e-9)
        self.what, self.unit, self.every_s = what, unit, every_s
        self.log = logger or logging.getLogger("dubflow.progress")
        self.started = self.last = time.monotonic()

    def update(self, done: float) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s or done <= 0:
            return
        self.last = now
        share = min(done / self.total, 1.0)
        left = (now - self.started) * (1 - share) / share
        self.log.info("%s: %.0f%% (%.0f of %.0f%s), about %.0f s left", self.what,
                      100 * share, done, self.total, self.unit, left)
