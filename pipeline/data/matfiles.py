"""Reading the MATLAB index files that Flowers102 and Stanford Dogs ship instead of text lists.

``scipy.io.loadmat`` returns 2-D arrays (and cells as nested object arrays); these helpers
flatten them and turn a missing or unreadable file into a one-line ``DatasetError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core.errors import DatasetError
from pipeline.data.base import one_line


def load_mat(path: Path, fields: Sequence[str], layout: str) -> dict[str, np.ndarray]:
    """The named variables of one .mat file; ``layout`` ends every error message."""
    if not path.is_file():
        raise DatasetError(f"{path} not found: {layout}")
    # Only the two datasets with .mat index files need scipy: every stage imports this module.
    import scipy.io

    try:
        content = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... on bad files
        raise DatasetError(f"cannot read {path}: {one_line(e)}: {layout}") from None
    missing = [f for f in fields if f not in content]
    if missing:
        raise DatasetError(f"{path} lacks field(s) {', '.join(missing)}: {layout}")
    return {f: content[f] for f in fields}


def mat_ints(array: np.ndarray, where: str) -> list[int]:
    """A MATLAB row/column vector of whole numbers as a flat list of ints.

    ``where`` (``<file> field <name>``) starts the one-line error for text, NaN, infinities or
    fractions, which a plain ``int()`` would reject with a traceback or silently truncate.
    """
    values = np.asarray(array)
    if values.dtype.kind not in "iuf":
        what = "text" if values.dtype.kind in "SU" else f"{values.dtype} values"
        raise DatasetError(f"{where} holds {what}; expected whole numbers")
    flat = values.ravel()
    if values.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)))
        if bad.size:
            k = int(bad[0])
            raise DatasetError(
                f"{where} holds {flat[k].item()!r} at position {k + 1} (of {flat.size}); "
                "expected whole numbers"
            )
    return [int(x) for x in flat]


def mat_strings(array: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (an object array of 1-element arrays) as a flat list."""
    out = []
    for cell in np.asarray(array, dtype=object).ravel():
        value = cell
        while isinstance(value, np.ndarray):
            value = value.ravel()[0] if value.size else ""
        out.append(str(value))
    return out
