"""Error types that carry one sentence a user can act on.

Every failure a user can cause (bad media, missing model, bad config value) is raised as a
``DubflowError`` subclass whose message names the file, the stage and the fix. The rule
runner prints that sentence to the terminal and keeps the detail (tracebacks, stderr) in
the rule's log, so a batch run over a season never ends in a traceback wall.
"""

from __future__ import annotations


class DubflowError(Exception):
    """Base class: ``str(error)`` is the one sentence shown to the user."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        # Long diagnostic text (stderr tail, paths tried); goes to the log, not the terminal.
        self.detail = detail


class InputError(DubflowError):
    """The input media or sheet is unusable (corrupt, no audio stream, missing file)."""


class ModelError(DubflowError):
    """A model folder is missing or incomplete."""


class ConfigError(DubflowError):
    """A config value is wrong in a way the JSON Schema cannot express."""


class FFmpegError(DubflowError):
    """An ffmpeg/ffprobe call failed; raised only by ffmpeg_safe."""

    def __init__(
        self,
        message: str,
        *,
        detail: str = "",
        stage: str = "",
        path: str = "",
        returncode: int | None = None,
        stderr_tail: str = "",
        transient: bool = False,
    ) -> None:
        super().__init__(message, detail=detail or stderr_tail)
        self.stage = stage
        self.path = path
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.transient = transient
