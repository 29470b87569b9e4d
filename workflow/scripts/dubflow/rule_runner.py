"""The thin glue between a Snakemake ``script:`` rule and a stage function.

Every stage script ends with ``run_rule(snakemake, "stage", function, ...)``. This gives all
stages the same behaviour, so none of them has to remember it:

- the rule's own log file (``log:``, one per video and stage) gets INFO lines and, on
  failure, the full detail (traceback, ffmpeg stderr tail);
- the terminal gets one sentence per failure, prefixed with ``dubflow:``, never a traceback;
- SIGTERM (Snakemake cancelling, a cluster timeout) unwinds the stack, so the atomic-write
  context managers remove their temp files instead of leaving ``.partial`` files behind;
- the math libraries use exactly the rule's ``threads:`` (oversubscribing 2 cores with
  per-library thread pools made inference several times slower);
- a status record beside the log (stage_record.py) says running, done or failed with the
  sentence: the batch summary reads it, and one left at ``running`` shows a job killed from
  outside (out of memory, a cluster's time limit, scancel).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from typing import Any
from collections.abc import Callable

from dubflow import stage_record
from dubflow.atomic import remove_stale_temps
from dubflow.errors import DubflowError
from dubflow.redaction import RedactingFilter, redact

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Pin thread pools of numpy/onnxruntime/CTranslate2 to the rule's threads."""
    for variable in THREAD_ENV:
        os.environ[variable] = str(max(1, threads))


def setup_logging(log_path: str) -> logging.Logger:
    """INFO and above to the rule's log file; the terminal only hears about failures."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.handlers.clear()
    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    return logging.getLogger("dubflow")


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_rule(snakemake: Any, stage: str, function: Callable[..., Any], **kwargs: Any) -> None:
    """Run ``function(**kwargs)`` as the body of rule ``stage``; exit 1 with one sentence on failure."""
    log_path = snakemake.log[0]  # every rule has one: `snakemake --lint` (a test) wants it
    log = setup_logging(log_path)
    limit_threads(snakemake.threads)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    log.info("stage %s for %s (threads=%s)", stage, snakemake.wildcards.get("name", "?"),
             snakemake.threads)
    for output in snakemake.output:
        for stale in remove_stale_temps(output):
            log.warning("removed %s, left by an interrupted run", stale)
    record = stage_record.started(stage, snakemake.wildcards.get("name", "?"), log_path)
    try:
        function(**kwargs)
    except DubflowError as error:
        log.error("%s", error)
        if error.detail:
            log.error("detail:\n%s", error.detail)
        log.debug("traceback:\n%s", traceback.format_exc())
        _fail(str(error), record)
    except SystemExit as stop:  # SIGTERM: Snakemake cancelling, scancel, a time limit
        log.error("stopped by a signal (exit %s) before the stage finished", stop.code)
        stage_record.finished(record, "stopped", "stopped by SIGTERM before it finished")
        raise
    except Exception as error:  # noqa: BLE001 - the one place that turns bugs into a sentence
        log.error("unexpected error:\n%s", traceback.format_exc())
        inputs = ", ".join(map(str, snakemake.input)) or "(no input)"
        _fail(
            f"stage {stage} failed on {inputs} with an unexpected {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}; the traceback is in "
            f"{log_path} (please report it)",
            record,
        )
    stage_record.finished(record, "done")
    log.info("stage %s done", stage)


def _fail(sentence: str, record: stage_record.StageRecord) -> None:
    stage_record.finished(record, "failed", redact(sentence))
    print(f"dubflow: {redact(sentence)}", file=sys.stderr, flush=True)
    logging.shutdown()
    sys.exit(1)
