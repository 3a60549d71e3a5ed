"""Profiles: named sets of pipeline parameter defaults that the CLI applies before --param.

The pipeline's own defaults are the full experiment; a profile only picks other defaults, and
every parameter stays explicit in the pipeline and in the compiled YAML.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from components.common.config import ConfigError

PROFILES: dict[str, dict[str, Any]] = {
    # Minutes on a 2-core CPU: 2,000 images per split, small inputs, two epochs each.
    "quick": {
        "limit": 2000,
        "cnn_input_size": 28,
        "transfer_input_size": 75,
        "cnn_epochs": 2,
        "transfer_epochs": 2,
        "batch_size": 64,
    },
    # The real experiment: the pipeline's defaults (all images, transfer at 150 px).
    "full": {},
}


# Older parameter names still accepted by --param: `backbone=X` is `backbones=X`.
ALIASES = {"backbone": "backbones"}


def pipeline_parameters(pipeline_func) -> dict[str, inspect.Parameter]:
    """The pipeline's parameters by name (with their annotations and defaults)."""
    target = getattr(pipeline_func, "pipeline_func", pipeline_func)
    return dict(inspect.signature(target).parameters)


def _convert(name: str, text: str, annotation: Any) -> Any:
    kind = annotation if isinstance(annotation, type) else type(annotation)
    if annotation is bool or annotation == "bool":
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"--param {name}: expected true or false, got {text!r}")
        return lowered in ("true", "1", "yes")
    if annotation is int or annotation == "int":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--param {name}: expected an integer, got {text!r}") from None
    if annotation is float or annotation == "float":
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--param {name}: expected a number, got {text!r}") from None
    if kind in (dict, list):
        return json.loads(text)
    return text


def parse_params(pairs: list[str], pipeline_func) -> dict[str, Any]:
    """Turn `key=value` strings into typed pipeline arguments; unknown keys are an error."""
    known = pipeline_parameters(pipeline_func)
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip().replace("-", "_")
        name = ALIASES.get(name, name) if name not in known else name
        if not sep:
            raise ConfigError(f"--param expects key=value, got {pair!r}")
        if name not in known:
            raise ConfigError(f"--param {name}: unknown parameter; known: {', '.join(known)}")
        values[name] = _convert(name, text, known[name].annotation)
    return values


def resolve_arguments(
    pipeline_func, profile: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Profile defaults, then explicit overrides (None values are dropped)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    known = pipeline_parameters(pipeline_func)
    arguments = dict(PROFILES[profile])
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in known:
            raise ConfigError(f"unknown pipeline parameter {name!r}")
        arguments[name] = value
    return arguments
