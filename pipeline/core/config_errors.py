"""One-line messages for schema errors of ``params.yaml``.

pydantic reports every problem with a location of its own making (union tags, ``[key]``
markers); :func:`format_error` turns the first into ``<label>: <key>: <what is wrong>``, where
the label is the ``--set`` that caused it (:func:`override_behind`) or else the file.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.core.regularizer_config import RegularizerConfig


def format_error(
    exc: ValidationError, root: type[BaseModel], source: str, overrides: list[str] = ()
) -> str:
    """One line: what is wrong, labelled by the ``--set`` that caused it, else by the file."""
    err = exc.errors()[0]
    raw_loc = err["loc"]
    is_key = bool(raw_loc) and raw_loc[-1] == "[key]"
    if is_key:  # a mapping's key (a name), which the message quotes: report its mapping
        raw_loc = raw_loc[:-2]
    loc = _dotted(raw_loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _resolve(root, list(err["loc"][:-1]))
        allowed = ", ".join(parent.model_fields) if _is_model(parent) else ""
        msg = f"unknown key {loc!r}" + (f"; allowed: {allowed}" if allowed else "")
    elif kind == "missing":
        msg = f"{loc}: required key is missing"
    elif kind == "union_tag_invalid":
        msg = f"{loc}.name: {err['msg']}"
    else:
        got = err.get("input")
        shown = "" if is_key or isinstance(got, dict | list) else f" (got {got!r})"
        text = err["msg"].removeprefix("Value error, ")
        msg = f"{loc}: {text}{shown}" if loc else text
    more = len(exc.errors()) - 1
    label = override_behind(loc, msg, overrides, created=kind == "extra_forbidden") or source
    return f"{label}: {msg}" + (f" [+{more} more problem(s)]" if more else "")


def override_behind(loc: str, msg: str, overrides: list[str], created: bool = False) -> str | None:
    """The last ``--set`` that wrote the failing key (or a section above it), or whose key the
    message names (a cross-key check such as burn-in versus epochs); None if the file is to blame.

    ``created``: the failing key is an unknown one, so a ``--set`` of a key below it made it.
    """
    # A model-level check reports no location; its message starts with the key instead.
    key = loc or msg.split(":", 1)[0].strip("' ").removeprefix("unknown key ")
    for item in reversed(overrides):
        dotted = ".".join(k for k in item.split("=", 1)[0].strip().split(".") if k)
        if not dotted:
            continue
        if key == dotted or key.startswith(dotted + "."):
            return f"--set {item}"
        if created and dotted.startswith(key + "."):
            return f"--set {item}"
        if re.search(rf"(?<![\w.]){re.escape(dotted)}(?![\w])", msg):
            return f"--set {item}"
    return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _resolve(tp: Any, loc: list) -> Any:
    """The type found at an error location, following models, dicts, lists and tagged unions."""
    for part in loc:
        stripped = _strip(tp, part)
        if _is_model(stripped) and _tag_of(stripped) == part and not _is_model(_strip(tp, None)):
            tp = stripped  # the location names the union member: consume it
            continue
        tp = stripped
        if _is_model(tp):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            return None
    return _strip(tp, None)


def _strip(tp: Any, part: Any) -> Any:
    """Unwrap Annotated/Optional, and pick the member of a tagged union named by ``part``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            tagged = [m for m in members if _is_model(m) and _tag_of(m) == part]
            if tagged:
                return tagged[0]
            if len(members) == 1:
                tp = members[0]
            else:
                return tp
        else:
            return tp


def _tag_of(model: Any) -> str | None:
    field = model.model_fields.get("name")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if len(args) == 1 else None


def _dotted(loc: tuple) -> str:
    """``a.b.0.c`` without the discriminator value pydantic inserts after a union's list index."""
    tags = _regularizer_tags()
    parts = [
        str(p)
        for i, p in enumerate(loc)
        if not (i > 0 and isinstance(loc[i - 1], int) and isinstance(p, str) and p in tags)
    ]
    return ".".join(parts)


def _regularizer_tags() -> set[str]:
    union = _strip(RegularizerConfig, None)
    return {t for m in typing.get_args(union) if (t := _tag_of(m))}
