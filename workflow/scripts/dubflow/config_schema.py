"""The config schema, the one place for every key's default and allowed range.

The workflow validates the whole config once, before any job (``settings.validate_config``).
Code that runs without it (command-line tools, ``run_ffmpeg(config=None)``, a test that
calls a stage with a few keys) reads its section through ``section()``: the same
validator on the same file, so the same defaults and checks, never a second copy of them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from dubflow.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
# Filled sections by their given values: ffmpeg's runner asks for its section on every
# call, and reading the schema takes ~70 ms.
_FILLED: dict[tuple[str, str], dict] = {}


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> None:
    """Validate ``config`` and fill in the schema's defaults, in place; one sentence if bad."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(schema_path))
    except WorkflowError as error:
        raise ConfigError(describe_validation_error(error, "the config")) from None


def section(name: str, values: dict | None = None) -> dict[str, Any]:
    """Config section ``name``: ``values`` checked, the schema's defaults filled in."""
    key = (name, json.dumps(values, sort_keys=True, default=str))
    if key not in _FILLED:
        config = {name: copy.deepcopy(values) if values else {}}
        validate_config(config)
        _FILLED[key] = config[name]
    return copy.deepcopy(_FILLED[key])


def describe_validation_error(error: Exception, what: str, noun: str = "key") -> str:
    """Turn snakemake's wrapped jsonschema.ValidationError into one line naming the key.

    ``noun`` is what a property is called for the reader: a config "key", a sheet "column".
    A failed ``pattern`` is explained by the schema's ``description`` when it has one,
    since a regular expression is no help to most readers.
    """
    # snakemake raises WorkflowError while handling the ValidationError: it is the context.
    inner = error.__cause__ or error.__context__
    if not hasattr(inner, "validator") or not hasattr(inner, "absolute_path"):
        return f"{what} is invalid: {str(error).splitlines()[0]}"
    key = ".".join(str(p) for p in inner.absolute_path)
    if inner.validator == "additionalProperties":
        unknown = sorted(set(inner.instance) - set(inner.schema.get("properties", {})))
        allowed = ", ".join(sorted(inner.schema.get("properties", {})))
        where = f" under '{key}'" if key else ""
        return (
            f"{what} has unknown {noun}(s) {', '.join(map(repr, unknown))}{where}; "
            f"allowed {noun}s are: {allowed}"
        )
    if inner.validator == "required":
        return f"{what} is missing a required {noun}: {inner.message}" + (
            f" (under '{key}')" if key else ""
        )
    if inner.validator == "pattern" and inner.schema.get("description"):
        return (f"{what} {noun} '{key}' is invalid: {inner.instance!r} is not allowed; "
                f"{inner.schema['description']}")
    return f"{what} {noun} '{key or '(top level)'}' is invalid: {inner.message}"
