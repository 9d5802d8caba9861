"""The report stage end to end on a synthetic metrics tree (no training, no attack)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.core.config import ReportSpec
from pipeline.core.errors import PipelineError
from pipeline.stages import report
from tests.report.synthetic import write_model, write_pretrain

TARGET = "digits_5to9"


def _distances(rng, base: float, shift: float, indices) -> dict[str, dict[int, float]]:
    tangent = {i: base + 0.1 * (i % 7) + shift + 0.01 * rng.standard_normal() for i in indices}
    hsja = {i: d * 1.2 for i, d in tangent.items()}  # hsja finds worse (larger) distances
    return {"tangent": tangent, "hsja": hsja}


def build_tree(metrics: Path, seeds=(0, 1), n: int = 30) -> None:
    """Backbones none / rep_spectral / ll_spectral finetuned with none, one with bss; readouts."""
    rng = np.random.default_rng(0)
    write_pretrain(metrics, "none", 0.80)
    write_pretrain(metrics, "rep_spectral", 0.79)
    variants = {  # (backbone, regularizer): (Δ shift, accuracy)
        ("none", "none"): (0.0, 0.95),
        ("rep_spectral", "none"): (0.3, 0.94),
        ("ll_spectral", "none"): (0.1, 0.90),
        ("none", "bss"): (0.05, 0.951),
    }
    for seed in seeds:
        # Models of one seed share most indices; each skips a different few.
        for k, ((backbone, reg), (shift, acc)) in enumerate(variants.items()):
            indices = [i for i in range(n + 4) if (i + k) % 9 != 0][:n]
            write_model(
                metrics,
                "finetune",
                TARGET,
                backbone,
                _distances(rng, 1.0 + 0.05 * seed, shift, indices),
                regularizer=reg,
                seed=seed,
                acc=acc + 0.001 * seed,
            )
    for backbone, shift, acc in (("none", 0.0, 0.85), ("rep_spectral", 0.2, 0.86)):
        dist = _distances(rng, 0.8, shift, range(n))
        write_model(metrics, "readout", TARGET, backbone, dist, acc=acc)


def _cfg(**kw):
    return SimpleNamespace(report=ReportSpec(title="Synthetic", bootstrap_resamples=500, **kw))


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_tree(tmp_path / "metrics")
    return tmp_path


def test_report_writes_tables_statistics_and_figures(tree):
    out = report.run(_cfg())
    assert out["finetune_groups"] == 4 and out["readout_groups"] == 2
    assert out["comparisons"] == 3 * 3 + 1 * 3  # (best, tangent, hsja) per non-baseline variant
    md = (tree / "reports" / "transfer.md").read_text()
    assert "| digits_5to9 | rep_spectral | none | 2 |" in md
    assert "mean Δ (tangent) | mean Δ (hsja) | mean Δ (best)" in md
    assert "the ranking of the 4 variants by mean Δ is the same under tangent and hsja" in md
    assert "percentile-bootstrap intervals (500 resamples, seed 0)" in md
    # rep_spectral/none is 0.3 further from the boundary on every sample: significant.
    rep = [line for line in md.splitlines() if line.startswith("| finetune | rep_spectral/none")]
    assert len(rep) == 3 and all(" *" in line for line in rep)
    assert "| finetune | rep_spectral/none | best | 52 | 2 | +0.30" in md
    assert "The claim that rep_spectral/none gives the largest mean Δ" in md and "holds" in md
    for name in (
        "finetune_digits_5to9.png",
        "readout_digits_5to9.png",
        "queries_finetune_digits_5to9.png",
        "queries_readout_digits_5to9.png",
        "tradeoff.png",
        "pretrain_sigma.png",
    ):
        path = tree / "reports" / "figures" / name
        assert path.stat().st_size > 5000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{name}" in md
    with (tree / "reports" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 2 + 2
    assert {"mean_distance", "mean_distance_tangent", "mean_distance_hsja", "at1000_hsja"} <= set(
        rows[0]
    )


def test_pairs_count_only_common_indices(tree):
    report.run(_cfg())
    md = (tree / "reports" / "transfer.md").read_text()
    # k = 0 (none/none) and k = 1 (rep_spectral/none) skip different indices: count them.
    a = {i for i in range(34) if i % 9 != 0}
    b = {i for i in range(34) if (i + 1) % 9 != 0}
    common = len(set(sorted(a)[:30]) & set(sorted(b)[:30]))
    assert common < 30
    assert f"rep_spectral/none | best | {2 * common} | 2 |" in md


def test_report_is_byte_identical_when_run_twice(tree):
    report.run(_cfg())
    first = _digest(tree / "reports")
    shutil.rmtree(tree / "reports")
    report.run(_cfg())
    assert _digest(tree / "reports") == first
    assert len(first) >= 8


def test_t_interval_option_is_described(tree):
    report.run(_cfg(interval="t"))
    md = (tree / "reports" / "transfer.md").read_text()
    assert "Student t-intervals" in md and "bootstrap" not in md


def test_single_method_and_old_samples_schema(tmp_path, monkeypatch):
    """A tree from an attack that wrote one method and no method column still reports."""
    monkeypatch.chdir(tmp_path)
    metrics = tmp_path / "metrics"
    for backbone, shift in (("none", 0.0), ("rep_spectral", 0.5)):
        run_id = write_model(
            metrics,
            "finetune",
            TARGET,
            backbone,
            {"tangent": {i: 1.0 + shift + 0.01 * i for i in range(10)}},
            regularizer="none",
            seed=0,
        )
        samples = metrics / "attack" / "finetune" / run_id / "samples.csv"
        lines = ["index,label,distance,queries,success"]
        lines += [f"{i},0,{1.0 + shift + 0.01 * i},100,True" for i in range(10)]
        samples.write_text("\n".join(lines) + "\n")
    report.run(_cfg())
    md = (tmp_path / "reports" / "transfer.md").read_text()
    assert "only one attack method (tangent) was run" in md
    assert "| finetune | rep_spectral/none | best | 10 | 1 | +0.5 [+0.5, +0.5] * |" in md


def test_malformed_samples_file_is_a_one_line_error(tree):
    bad = tree / "metrics/attack/finetune" / TARGET / "none/none/seed0/samples.csv"
    bad.write_text("idx,dist\n1,2\n")
    with pytest.raises(PipelineError, match=r"samples.csv: missing column\(s\) index, distance"):
        report.run(_cfg())


def test_malformed_summary_is_a_one_line_error(tree):
    bad = tree / "metrics/finetune" / TARGET / "none/none/seed0/summary.json"
    bad.write_text(json.dumps({"target": TARGET}))
    with pytest.raises(PipelineError, match="summary.json: missing key"):
        report.run(_cfg())
