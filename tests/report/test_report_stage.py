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

from pipeline.core.config import PrimaryTest, ReportSpec
from pipeline.core.errors import PipelineError
from pipeline.stages import report
from tests.report.synthetic import write_model, write_pretrain

TARGET = "digits_5to9"
SEEDS = (0, 1, 2, 3, 4)


def _distances(rng, base: float, factor: float, indices) -> dict[str, dict[int, float]]:
    tangent = {i: (base + 0.1 * (i % 7)) * factor for i in indices}
    tangent = {i: d * (1 + 0.01 * rng.standard_normal()) for i, d in tangent.items()}
    hsja = {i: d * 1.2 for i, d in tangent.items()}  # hsja finds worse (larger) distances
    return {"tangent": tangent, "hsja": hsja}


# (backbone, regularizer): (Δ factor per pretraining seed, accuracy)
VARIANTS = {
    ("none", "none"): ((1.0, 1.0, 1.0, 1.0, 1.0), 0.95),
    ("rep_spectral", "none"): ((1.30, 1.25, 1.35, 1.28, 1.32), 0.949),  # clearly ≥ 10% larger
    ("ll_spectral", "none"): ((1.10, 0.90, 1.05, 0.95, 1.0), 0.95),  # no effect over seeds
    ("lr", "none"): ((1.06, 1.05, 1.07, 1.06, 1.05), 0.90),  # small effect, costs accuracy
}


def build_tree(metrics: Path, n: int = 30, settle: dict | None = None) -> None:
    """Four finetuned variants over five pretraining seeds (seed-level effects), readouts."""
    rng = np.random.default_rng(0)
    for backbone in ("none", "rep_spectral"):
        for s in SEEDS:
            write_pretrain(metrics, backbone, 0.8, seed=s)
    for s in SEEDS:
        seed_base = 1.0 + 0.2 * rng.standard_normal()  # networks of one seed share a level
        for k, ((backbone, reg), (factors, acc)) in enumerate(VARIANTS.items()):
            indices = [i for i in range(n + 4) if (i + k) % 9 != 0][:n]
            write_model(
                metrics, "finetune", TARGET, backbone,
                _distances(rng, seed_base, factors[s], indices),
                regularizer=reg, seed=0, backbone_seed=s, acc=acc + 0.001 * s,
                settle=(settle or {}).get(backbone, 40.0),
            )  # fmt: skip
        for backbone, factor in (("none", 1.0), ("rep_spectral", 1.2)):
            dist = _distances(rng, 0.8 * seed_base, factor, range(n))
            write_model(
                metrics, "readout", TARGET, backbone, dist, backbone_seed=s, acc=0.85 + 0.01 * s
            )


BACKBONES = ["none", "rep_spectral", "ll_spectral", "lr"]


def _cfg(seeds=SEEDS, **primary):
    """The report's parameters plus the run matrices that say which runs it reads."""
    seeds = list(seeds)
    return SimpleNamespace(
        report=ReportSpec(
            title="Synthetic", bootstrap_resamples=999, primary=PrimaryTest(**primary)
        ),
        pretrain=SimpleNamespace(
            run=SimpleNamespace(variants=["none", "rep_spectral"], seeds=seeds)
        ),
        ssl=None,
        finetune=SimpleNamespace(
            run=SimpleNamespace(
                targets=[TARGET],
                backbones=BACKBONES,
                backbone_seeds=seeds,
                regularizers=["none"],
                seeds=[0],
            )  # fmt: skip
        ),
    )


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _row(md: str, variant: str) -> str:
    rows = [line for line in md.splitlines() if line.startswith(f"| {variant} |")]
    assert len(rows) == 1, rows
    return rows[0]


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_tree(tmp_path / "metrics")
    return tmp_path


def test_report_declares_the_test_and_answers_per_variant(tree):
    out = report.run(_cfg())
    md = (tree / "reports" / "transfer.md").read_text()
    assert out["primary_tests"] == 3 + 1  # three finetuned variants, one readout variant
    assert "Declared before the run" in md and "Holm-adjusted" in md
    assert "finetune rep_spectral/none: 5 seeds (5 runs)" in md
    verdicts = out["verdicts"]
    assert verdicts[f"finetune:{TARGET}:rep_spectral/none"] == "yes"
    assert verdicts[f"finetune:{TARGET}:ll_spectral/none"] == "no"
    # lr: a real but small effect with an accuracy cost: only "partly", naming what failed
    assert verdicts[f"finetune:{TARGET}:lr/none"] in ("partly", "no")
    lr = _row(md, "lr/none")
    assert "**yes**" not in lr
    rep = _row(md, "rep_spectral/none")
    assert "| none/none | 5 |" in rep and "**yes**" in rep
    ratio = float(rep.split("|")[5].split()[0])
    assert 1.25 < ratio < 1.35  # the seeds' factors average 1.30
    assert "Yes, for rep_spectral/none." in md
    for name in ("finetune_digits_5to9.png", "readout_digits_5to9.png", "tradeoff.png",
                 "queries_finetune_digits_5to9.png", "pretrain_sigma.png"):  # fmt: skip
        path = tree / "reports" / "figures" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{name}" in md
    with (tree / "reports" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 5 + 2 * 5
    assert {"backbone_seed", "mean_distance_tangent", "at1000_hsja"} <= set(rows[0])


def test_holm_is_applied_across_the_variants_of_a_target(tree):
    report.run(_cfg())
    md = (tree / "reports" / "transfer.md").read_text()
    ps = []
    for variant in ("rep_spectral/none", "ll_spectral/none", "lr/none"):
        cells = [c.strip() for c in _row(md, variant).split("|")]
        ps.append((float(cells[6]), float(cells[7])))
    raw = sorted(p for p, _ in ps)
    # Holm: the smallest p is multiplied by 3, and adjusted p's never fall below the raw ones
    smallest = min(ps)
    assert smallest[1] == pytest.approx(min(1.0, 3 * raw[0]), rel=1e-2)
    assert all(adj >= p for p, adj in ps)


def test_one_pretraining_seed_is_not_testable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = tmp_path / "metrics"
    rng = np.random.default_rng(1)
    for backbone, factor in (("none", 1.0), ("rep_spectral", 2.0)):
        write_model(
            metrics, "finetune", TARGET, backbone, _distances(rng, 1.0, factor, range(20)),
            regularizer="none", seed=0, backbone_seed=0,
        )  # fmt: skip
    out = report.run(_cfg(seeds=[0]))
    # Twice the distance on every sample, but one trained network per arm: no claim.
    assert out["verdicts"] == {f"finetune:{TARGET}:rep_spectral/none": "not testable"}


def test_unconverged_distances_get_no_verdict_and_no_rank(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # rep_spectral's distances still fall 20% per doubling at the last budget
    build_tree(tmp_path / "metrics", settle={"rep_spectral": 8000.0})
    out = report.run(_cfg())
    assert out["verdicts"][f"finetune:{TARGET}:rep_spectral/none"] == "not converged"
    md = (tmp_path / "reports" / "transfer.md").read_text()
    assert "| **no** |" in md  # the convergence table marks them
    ranked = [line for line in md.splitlines() if line.startswith("* Ranked by Δ ratio")]
    assert ranked and "rep_spectral" not in ranked[0]  # the finetuning section comes first
    assert "lr/none" in ranked[0]


def test_censored_samples_are_kept_and_counted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_tree(tmp_path / "metrics")
    # The regularized model's hardest sample of seed 0 was not fooled at all.
    run_id = f"{TARGET}/rep_spectral/backbone_seed0/none/seed0"
    path = tmp_path / "metrics/attack/finetune" / run_id / "samples.csv"
    rows = list(csv.DictReader(path.open()))
    # index 1 is attacked by both arms (index 0 is not: the baseline skipped it)
    hit = next(r for r in rows if r["index"] == "1" and r["method"] == "tangent")
    hit["distance"] = "inf"
    for k in hit:
        if k.startswith("d_"):
            hit[k] = ""
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    report.run(_cfg())
    md = (tmp_path / "reports" / "transfer.md").read_text()
    rep = _row(md, "rep_spectral/none")
    assert "(1/0)" in rep  # one censored variant sample, counted, not dropped
    # its model's drop is measured on the samples fooled at both budgets, the censored one apart
    row = [line for line in md.splitlines() if line.startswith(f"| finetune {run_id} |")]
    assert len(row) == 1 and row[0].endswith("| 1 | yes |"), row


def test_report_is_byte_identical_when_run_twice(tree):
    report.run(_cfg())
    first = _digest(tree / "reports")
    shutil.rmtree(tree / "reports")
    report.run(_cfg())
    assert _digest(tree / "reports") == first
    assert len(first) >= 6


def test_malformed_samples_file_is_a_one_line_error(tree):
    bad = tree / "metrics/attack/finetune" / TARGET / "none/backbone_seed0/none/seed0/samples.csv"
    bad.write_text("idx,dist\n1,2\n")
    with pytest.raises(PipelineError, match=r"samples.csv: missing column\(s\) index, distance"):
        report.run(_cfg())


def test_malformed_summary_is_a_one_line_error(tree):
    bad = tree / "metrics/finetune" / TARGET / "none/backbone_seed0/none/seed0/summary.json"
    bad.write_text(json.dumps({"target": TARGET}))
    with pytest.raises(PipelineError, match="summary.json: missing key"):
        report.run(_cfg())


def test_a_declared_baseline_replaces_none_and_null_skips(tree):
    out = report.run(_cfg(baselines={"rep_spectral": None, "lr": "ll_spectral"}))
    verdicts = out["verdicts"]
    assert f"finetune:{TARGET}:rep_spectral/none" not in verdicts  # null: not compared
    assert f"readout:{TARGET}:rep_spectral" not in verdicts
    md = (tree / "reports" / "transfer.md").read_text()
    assert "| lr/none | ll_spectral/none |" in md  # compared with its declared baseline
    assert "| ll_spectral/none | none/none |" in md


def test_runs_outside_the_plan_are_not_read(tree):
    """A hand run (another finetuning seed) lies in metrics/ but is no instance of the DAG."""
    rng = np.random.default_rng(5)
    write_model(
        tree / "metrics", "finetune", TARGET, "none", _distances(rng, 5.0, 1.0, range(30)),
        regularizer="none", seed=7, backbone_seed=0, acc=0.1,
    )  # fmt: skip
    report.run(_cfg())
    md = (tree / "reports" / "transfer.md").read_text()
    assert "1 summaries under metrics/ belong to no run" in md
    assert "finetune none/none: 5 seeds (5 runs)" in md
    with (tree / "reports" / "results.csv").open() as f:
        assert all(row["seed"] != "7" for row in csv.DictReader(f))


def test_a_failed_report_leaves_the_previous_one(tree):
    report.run(_cfg())
    before = _digest(tree / "reports")
    bad = tree / "metrics/attack/finetune" / TARGET / "none/backbone_seed1/none/seed0/samples.csv"
    bad.write_text("idx,dist\n1,2\n")
    with pytest.raises(PipelineError):
        report.run(_cfg())
    assert _digest(tree / "reports") == before
    assert sorted(p.name for p in (tree / "reports").iterdir()) == [
        "figures", "headline.json", "plots", "results.csv", "transfer.md"
    ]  # fmt: skip


def test_a_malformed_history_is_a_one_line_error_and_keeps_the_report(tree):
    report.run(_cfg())
    before = _digest(tree / "reports")
    bad = tree / "metrics/pretrain/rep_spectral/seed2/history.json"
    bad.write_text('[{"epoch": 1, "sum_sigma_max_sq": "not a number"}]')
    with pytest.raises(PipelineError, match="history.json: not a training history"):
        report.run(_cfg())
    assert _digest(tree / "reports") == before
