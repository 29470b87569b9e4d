"""Keep tokens out of every log, error and printed config.

Tokens (a Hugging Face token for an optional pyannote pipeline, say) come only from the
environment. Their values are known here, so every log line is scrubbed of them before it
is written, whatever code produced it (ours, a library's, a traceback).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

MASK = "***"
# Environment variables whose values are secrets, by name.
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL)", re.I)
# Config keys whose values are secrets (a token pasted into a config by mistake).
SECRET_KEY = re.compile(r"(^|_)(token|secret|password|api_?key)$", re.I)
MIN_SECRET_LEN = 6  # shorter values would mask ordinary words


def secret_values() -> list[str]:
    """Values of the environment variables that hold secrets, longest first."""
    values = {
        value
        for name, value in os.environ.items()
        if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LEN
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, MASK)
    return text


def masked_config(config: Any) -> Any:
    """A copy of the config with secret-named keys and secret values masked."""
    if isinstance(config, dict):
        return {
            key: (MASK if SECRET_KEY.search(str(key)) and value else masked_config(value))
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [masked_config(item) for item in config]
    if isinstance(config, str):
        return redact(config)
    return config


class RedactingFilter(logging.Filter):
    """Scrubs secret values from a record's final text (message, args and traceback)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = secret_values()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = redact(record.getMessage(), self.secrets)
            record.args = None
            if record.exc_info:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info),
                                         self.secrets)
                record.exc_info = None
        return True
