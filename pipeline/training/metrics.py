"""Per-epoch history as plain CSV/JSON, the files ``dvc plots`` and the report read."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.io import write_csv, write_json


def write_history(history: list[dict], directory: str | Path) -> None:
    """``history.csv`` (for ``dvc plots``) and ``history.json`` (every column, for reports)."""
    directory = Path(directory)
    write_csv(directory / "history.csv", history)
    write_json(directory / "history.json", history)
