"""TOML configs: read with the standard library, merged over defaults, checked for typos."""
from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


def load_config(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A TOML file as a dict. A top-level `extends = "other.toml"` (relative to this file) reads
    that file first and lays this one over it, so a variant states only what it changes; a list
    (`extends = ["stage.toml", "gpu_batch64.toml"]`) lays each over the one before, then this file.
    Paths inside a config keep their own rule (e.g. a benchmark's `recognizer` is relative to the
    file named on the command line), so extend configs of the same folder."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        where = f" (extended by {_chain[-1]})" if _chain else ""
        raise ConfigError(f"{path}: config file not found{where}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    bases = data.pop("extends", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not (isinstance(bases, list) and bases and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"{path}: 'extends' must be a file name or a list of file names")
    chain = _chain + (path.resolve(),)
    out: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if base_path.resolve() in chain:
            raise ConfigError(f"{path}: 'extends' makes a cycle: "
                              + " -> ".join(str(p) for p in chain + (base_path.resolve(),)))
        out = _overlay(out, load_config(base_path, chain))
    return _overlay(out, data)


def _overlay(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = (_overlay(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict)
                    else value)
    return out


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
