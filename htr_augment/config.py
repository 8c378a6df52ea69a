"""TOML configs: read with the standard library, merged over defaults, checked for typos."""
from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None


def merge(defaults: dict[str, Any], overrides: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """`overrides` over `defaults`, recursively; an unknown key is an error (catches typos)."""
    out = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if key not in defaults:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(defaults))})")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{key}' must be a table")
            out[key] = merge(defaults[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out
