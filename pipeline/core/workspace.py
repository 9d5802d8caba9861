"""DVC's model of parameters: the workspace's ``params.yaml`` *is* the experiment.

``dvc.yaml`` reads ``params.yaml``; so does ``dvc exp run -S``. Running another setting file
therefore means writing it (its ``extends:`` chain composed, ``--set`` values applied) into
``params.yaml`` first, never over uncommitted edits::

    python -m pipeline use-params configs/transfer-cifar10.yaml && dvc repro
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_write_text
from pipeline.core.params_file import apply_overrides, read_params

# Left out of every stage's code deps (pipeline.core.codedeps):
NOT_A_STAGE_DEPENDENCY = (
    "writes params.yaml (use-params); stages read it through pipeline.core.config"
)

WORKSPACE_PARAMS = "params.yaml"


def composed_params(params: str, overrides: list[str]) -> str | None:
    """The text ``params.yaml`` must hold for this run; None when it already does."""
    if Path(params).resolve() == Path(WORKSPACE_PARAMS).resolve() and not overrides:
        return None
    data = apply_overrides(read_params(params), overrides)
    text = yaml.safe_dump(data, sort_keys=False)
    current = Path(WORKSPACE_PARAMS)
    try:
        if current.is_file() and yaml.safe_load(current.read_text()) == data:
            return None
    except (yaml.YAMLError, UnicodeDecodeError):  # unreadable: it does not hold this run's
        pass
    return text


def _unsaved(path: str) -> str | None:
    """Why replacing ``path`` could lose a user's edits, or None when git holds them all.

    Outside git (or without git) nothing can tell a hand edit from the original, so the file
    counts as unsaved: the user moves it aside or commits it, never loses it silently.
    """
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", path], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return f"{path} is not in a git repository, so its edits could not be recovered"
    if out.stdout.strip():
        return f"{path} has uncommitted edits (dvc exp run -S leaves its values there)"
    return None


def apply_params(params: str, overrides: list[str]) -> bool:
    """Write ``--params``/``--set`` into ``params.yaml``; True when it changed.

    Refuses (ConfigError) rather than overwrite uncommitted edits to ``params.yaml`` with
    another file. ``--set`` alone (``params`` is ``params.yaml`` itself) goes on top of the
    edits, as ``dvc exp run -S`` does: nothing is lost (only comments, as with any write).
    """
    load_config(params, overrides)  # a bad file or override fails here, before anything
    text = composed_params(params, overrides)
    if text is None:
        return False
    current = Path(WORKSPACE_PARAMS)
    on_top = Path(params).resolve() == current.resolve()
    unsaved = None
    if not on_top and current.is_file() and not _written_by_us(current):
        unsaved = _unsaved(WORKSPACE_PARAMS)
    if unsaved:
        raise ConfigError(
            f"{unsaved}, and running {params} would replace it: commit it (git commit "
            "params.yaml), keep it as an experiment (dvc exp save) and drop it (git checkout "
            "params.yaml), move it aside, or run the edited params.yaml itself (no --params, "
            "and --set for what should differ)"
        )
    atomic_write_text(current, text)
    atomic_write_text(APPLIED, _digest(text.encode()))
    return True


# What apply_params last wrote: replacing that is no loss (a user's edit changes the digest).
APPLIED = Path(".dvc/tmp/params-applied.sha256")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _written_by_us(path: Path) -> bool:
    try:
        return APPLIED.read_text().strip() == _digest(path.read_bytes())
    except OSError:
        return False


def use_params_main(argv: list[str]) -> int:
    """``python -m pipeline use-params FILE [--set k=v ...]``: make FILE the workspace's experiment."""
    from pipeline.core.cli import Parser

    parser = Parser(prog="python -m pipeline use-params", description=use_params_main.__doc__)
    parser.add_argument("file", help="a parameter file, e.g. configs/transfer-cifar10.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ns = parser.parse_args(argv)
    changed = apply_params(ns.file, ns.overrides)
    print(f"params.yaml {'now holds' if changed else 'already holds'} {ns.file}")
    return 0
