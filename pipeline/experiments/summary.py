"""``reports/papers/summary.md``: each paper claim next to what was measured, with a verdict.

The pieces: :mod:`~pipeline.experiments.claims` (each claim's declared tests, bound to the
stages' runs), :mod:`~pipeline.experiments.verdicts` (Holm across claims, the verdict rules),
:mod:`~pipeline.experiments.render` (the markdown). This module reads the metrics and writes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.core.io import atomic_write_text
from pipeline.experiments import plots
from pipeline.experiments.claims import (  # noqa: F401 (re-exported: the summary's public names)
    READOUT_ONLY,
    diagnostics_claims,
    digits_claims,
    numeric_items,
    readout_only_claims,
    xor_claims,
)
from pipeline.experiments.config import ExperimentsConfig
from pipeline.experiments.render import (  # noqa: F401
    attack_check_section,
    cost_section,
    diagnostics_section,
    digits_table,
    readout_only_section,
    render,
    sweep_section,
    xor_table,
)
from pipeline.experiments.util import cpu_seconds
from pipeline.experiments.verdicts import (  # noqa: F401
    CONTRADICTED,
    DESCRIPTIVE,
    MISSING,
    NOT,
    PARTLY,
    REPRODUCED,
    AllOf,
    Claim,
    Comparison,
    judge,
)

log = logging.getLogger(__name__)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_diagnostics(cfg: ExperimentsConfig) -> dict[str, dict]:
    out = {}
    for name in cfg.diagnostics.backbones:
        m = _load(Path(cfg.diagnostics.out) / name / "metrics.json")
        if m is not None:
            out[name] = m
    return out


def _xy(mapping: dict) -> tuple[list[float], list[float]]:
    items = numeric_items(mapping)
    return [float(k) for k, _ in items], [v for _, v in items]


def overview_figure(d: dict[str, dict], path: Path) -> None:
    """Variance ratio, compression and noise accuracy of every backbone in one figure."""
    panels = [
        ("variance ratio (LR Fig. 2)", "r (singular directions)", "variance ratio",
         {n: (list(range(1, len(m["variance_ratio"]) + 1)), m["variance_ratio"])
          for n, m in d.items()}),
        ("compression (LR Table 5)", "k (PCA dims)", "test accuracy",
         {n: _xy(m["compression_accuracy"]) for n, m in d.items()}),
        ("pixel noise (LR Table 4)", "p", "finetuned test accuracy",
         {n: _xy(m["noise_accuracy"]) for n, m in d.items() if m.get("noise_accuracy")}),
    ]  # fmt: skip
    plots.line_panels(panels, "Backbones of the main DAG on the transfer target", path,
                      logx=(True, True, False))  # fmt: skip


def all_claims(xor: dict | None, digits: dict | None, diag: dict, cfg: ExperimentsConfig):
    """Every claim of the summary, judged together (one Holm family across all of them)."""
    claims = (
        xor_claims(xor)
        + digits_claims(digits, cfg.summary.accuracy_tolerance)
        + diagnostics_claims(diag)
    )
    return judge(claims, cfg.summary.alpha)


def _costs(stages, diag: dict) -> dict[str, float]:
    costs = {name: m["cpu_seconds"] for name, m in stages if m and "cpu_seconds" in m}
    if diag:
        costs["diagnostics"] = sum(m.get("cpu_seconds", 0.0) for m in diag.values())
    costs["summary"] = cpu_seconds()
    return costs


def run(cfg: ExperimentsConfig) -> dict:
    """Read the stages' metrics, judge every claim, write the summary (and overview figure)."""
    xor = _load(Path(cfg.xor.out) / "metrics.json")
    digits = _load(Path(cfg.digits_mlp.out) / "metrics.json")
    sweep = _load(Path(cfg.strength_sweep.out) / "metrics.json")
    diag = load_diagnostics(cfg)
    claims = all_claims(xor, digits, diag, cfg)
    out = Path(cfg.summary.out)
    overview_figure(diag, out.parent / "diagnostics_overview.png")  # a DVC output: always written
    readout_only = next((c for c in claims if c.key == "xor_readout_only"), None)
    alpha = cfg.summary.alpha
    sections = {
        "XOR numbers (rep-spectral F.1)": xor_table(xor),
        "Digits MLP numbers (rep-spectral F.2)": digits_table(digits),
        "Readout-only ll-spectral (a public implementation's variant)": readout_only_section(
            readout_only, xor, digits
        ),
        "Strength sweep: accuracy vs distance, plain vs BatchNorm-folded": sweep_section(
            sweep, alpha
        ),
        "Backbone diagnostics (main DAG, transfer target)": diagnostics_section(diag),
        "Attack length check": attack_check_section(digits),
        "Cost": cost_section(
            _costs((("xor", xor), ("digits_mlp", digits), ("strength_sweep", sweep)), diag),
            cfg.summary.budget_minutes,
        ),
    }
    atomic_write_text(out, render(claims, sections, cfg.notes, alpha))
    counts = {}
    for c in claims:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    log.info("summary: %s", counts)
    return {"claims": [c.key for c in claims], "verdicts": counts}
