"""Parameter files as plain mappings: YAML reading, ``extends:`` composition, ``--set`` overrides.

What :func:`pipeline.core.config.load_config` reads before it validates, and the helpers that
work on the raw mapping (:func:`merge`, :func:`lookup`). A file that is not YAML, not text or
not a mapping is a one-line :class:`~pipeline.core.errors.ConfigError` naming its position.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import ConfigError

EXTENDS = "extends"


def read_params(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A parameter file as one mapping, its ``extends:`` chain composed.

    A setting file may start with ``extends: <file>`` (relative to itself) and then state only
    what differs: mappings merge key by key, anything else (lists, numbers, ``null``) replaces
    the base's value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as text ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    base = data.pop(EXTENDS, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: {EXTENDS} must be the path of a parameter file")
    base_path = (path.parent / base).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ConfigError(f"{path}: {EXTENDS} {base} makes a cycle")
    return merge(read_params(base_path, (*_seen, path.resolve())), data)


def lookup(dump: dict, dotted: str) -> Any:
    """The value at ``a.b.c`` of a config dump; KeyError naming the key when absent."""
    node: Any = dump
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line:column: not valid YAML (problem)``, the position an editor jumps to."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    context = getattr(exc, "context", None)
    return f"{where}: not valid YAML ({problem}" + (f", {context})" if context else ")")


def merge(base: dict, overlay: dict) -> dict:
    """``overlay`` on top of ``base``: mappings merge recursively, other values replace."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``section.key=value`` overrides; the value is parsed as YAML (numbers, lists, null)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        keys = [k for k in dotted.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k) if isinstance(node, dict) else None
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is not a section")
            node = nxt
        node[keys[-1]] = value
    return data
