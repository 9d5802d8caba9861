"""Torch files that hold data only (models, checkpoints): written atomically, read back
without ever running code from them.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import ArtifactError
from pipeline.core.io import remove_temp, resource_errors, temp_path


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write to a temporary name beside the target, then rename: a crash never leaves half a file.

    ``obj`` is first reduced to tensors, numbers, strings and plain containers (see
    :func:`to_plain`), the only things :func:`load_torch_file` accepts back. A refused write
    (disk full, read-only, file-size limit) is a one-line ResourceError naming ``path``.
    """
    path = Path(path)
    plain = to_plain(obj)
    tmp = temp_path(path)
    with resource_errors(path, kept=f"the previous {path.name} (if any) is intact"):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # A Python file, not a path: torch's own writer reports a failed write as a
            # RuntimeError without the errno; through Python's the OSError is its context.
            with open(tmp, "wb") as f:
                torch.save(plain, f)
            os.replace(tmp, path)
        finally:
            remove_temp(tmp)


_NDARRAY = "__ndarray__"


def to_plain(obj: Any) -> Any:
    """``obj`` with numpy arrays and scalars turned into tensors and Python numbers.

    ``torch.load(weights_only=True)`` refuses any other class (numpy's RNG state is an array,
    metrics are often numpy floats); an array keeps its exact bytes, dtype and shape.
    """
    if isinstance(obj, torch.Tensor | str | bytes | int | float | bool | type(None)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("cannot store a numpy object array in a torch file")
        raw = np.ascontiguousarray(obj).reshape(-1).view(np.uint8)
        return {_NDARRAY: torch.from_numpy(raw.copy()), "dtype": obj.dtype.str, "shape": obj.shape}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        kind = OrderedDict if isinstance(obj, OrderedDict) else dict
        return kind((k, to_plain(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(to_plain(v) for v in obj) if type(obj) in (list, tuple) else list(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a torch file (data only)")


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain`: tagged byte tensors become numpy arrays again."""
    if isinstance(obj, dict):
        if _NDARRAY in obj:
            raw = obj[_NDARRAY].numpy().tobytes()
            return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        return type(obj)((k, from_plain(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(from_plain(v) for v in obj)
    return obj


def load_torch_file(path: str | Path, what: str, map_location: Any = "cpu") -> Any:
    """Read a torch file without ever running code from it; a bad file is one-line ArtifactError.

    ``weights_only=True`` makes torch's unpickler refuse every class beyond tensors, numbers,
    strings and containers, so a crafted file cannot import or call anything.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the error says it
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a corrupt file can raise almost anything; name it and move on
        raise ArtifactError(f"{what} {path} is unreadable: {_load_failure(exc)}") from None
    return from_plain(obj)


def _load_failure(exc: Exception) -> str:
    text = str(exc)
    code = re.search(r"GLOBAL ([\w.]+)|Unsupported global: GLOBAL ([\w.]+)", text)
    if code:
        name = code.group(1) or code.group(2)
        return f"it references code ({name}), refused: a model or checkpoint holds data only"
    if isinstance(exc, EOFError) or "central directory" in text or "zip archive" in text:
        return "truncated or not a torch file"
    first = " ".join(text.split("\n")[0].split())
    if "Weights only load failed" in text:
        op = re.search(r"Unsupported operand \d+", text)
        return f"not a torch file ({op.group(0) if op else 'unexpected content'})"
    return f"not a torch file ({type(exc).__name__}: {first[:160]})"
