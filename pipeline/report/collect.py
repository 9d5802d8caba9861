"""Read every stage summary under ``metrics/`` into flat rows."""

from __future__ import annotations

import json
from pathlib import Path


def _summaries(root: Path) -> list[dict]:
    return (
        [json.loads(p.read_text()) for p in sorted(root.rglob("summary.json"))]
        if root.is_dir()
        else []
    )


def collect_results(metrics: str | Path = "metrics") -> dict[str, list[dict]]:
    """``pretrain``, ``ssl``, ``finetune`` and ``readout`` rows; the last two joined with their attacks."""
    metrics = Path(metrics)
    attacks = {
        (a["kind"], a["target"], a["backbone"], a.get("regularizer"), a.get("seed")): a
        for a in _summaries(metrics / "attack")
    }
    fields = ("mean_distance", "median_distance", "std_distance", "success_rate", "mean_queries")

    def join(row: dict, key: tuple) -> dict:
        attack = attacks.get(key, {})
        return {**row, **{f: attack.get(f) for f in fields}}

    finetune = [
        join(r, ("finetune", r["target"], r["backbone"], r["regularizer"], r["seed"]))
        for r in _summaries(metrics / "finetune")
    ]
    readout = [
        join(r, ("readout", r["target"], r["backbone"], None, None))
        for r in _summaries(metrics / "readout")
    ]
    return {
        "pretrain": _summaries(metrics / "pretrain"),
        "ssl": _summaries(metrics / "ssl"),
        "finetune": finetune,
        "readout": readout,
    }
