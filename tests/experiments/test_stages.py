"""The XOR and digits stages end to end on tiny settings: every output file, sane metrics."""

from __future__ import annotations

import json

import pytest
import yaml

from pipeline.experiments import digits_mlp, strength_sweep, summary, xor
from pipeline.experiments.config import ExperimentsConfig
from tests.conftest import REPO


def _tiny_config(tmp_path) -> ExperimentsConfig:
    params = yaml.safe_load((REPO / "experiments" / "params.yaml").read_text())
    params["run"]["progress"] = False
    x = params["xor"]
    x.update(out=str(tmp_path / "xor"), seeds=[0], epochs=60, log_every=20)
    for regs in x["variants"].values():
        for r in regs:
            r.update(burn_in=40, strength=0.01)
    x["attack"]["iterations"] = 2
    x["maps"].update(steps=9, stats_steps=9)
    d = params["digits_mlp"]
    d.update(out=str(tmp_path / "digits"), seeds=[0], hidden=[16], epochs=4, n_attack=5)
    for regs in d["variants"].values():
        for r in regs:
            r.update(burn_in=2)
    d["attack"]["iterations"] = 2
    d["check_iterations"] = 3
    sw = params["strength_sweep"]
    sw.update(out=str(tmp_path / "sweep"), seeds=[0], strengths=[0.0, 0.05], widths=[2, 4, 4, 4],
              image_size=8, epochs=3, burn_in=1, n_attack=4)  # fmt: skip
    sw["attack"]["iterations"] = 2
    params["diagnostics"]["out"] = str(tmp_path / "diag")
    params["summary"]["out"] = str(tmp_path / "summary.md")
    return ExperimentsConfig.model_validate(params)


@pytest.mark.slow  # runs two paper experiments end to end: about 10 CPU-seconds
def test_xor_and_digits_stages_write_every_output(tmp_path):
    cfg = _tiny_config(tmp_path)
    xor.run(cfg)
    out = tmp_path / "xor"
    for name in ("metrics.json", "runs.csv", "groups.csv", "sigma_history.csv",
                 "fig2_distance.png", "fig2_exact_margin.png", "fig3_maps_wd0.png",
                 "fig3_maps_wd0.0001.png", "fig4_sigma.png"):  # fmt: skip
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["branch_epoch"] == 40 and len(m["runs"]) == 2 * 4
    for r in m["runs"]:
        assert r["train_acc"] == 1.0 and r["mean_distance"] > 0 and r["mean_grid_margin"] > 0
        assert r["sigma_branch/head"] > 0 and r["sigma_final/backbone.net.1"] > 0
    # Variants share the plain phase: identical σ_max at the branch epoch for one seed and wd.
    same = {r["sigma_branch/head"] for r in m["runs"] if r["seed"] == 0 and r["weight_decay"] == 0}
    assert len(same) == 1

    digits_mlp.run(cfg)
    out = tmp_path / "digits"
    for name in ("metrics.json", "runs.csv", "groups.csv", "fig5_supervised.png",
                 "fig6_readout.png"):  # fmt: skip
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert (m["train_size"], m["test_size"]) == (1347, 450)
    variants = {"none", "ll_spectral", "rep_spectral", "readout_spectral"}
    assert {r["variant"] for r in m["runs"]} == variants
    for r in m["runs"]:
        assert 0.5 < r["test_acc"] <= 1 and 0.5 < r["readout_test_acc"] <= 1
        assert r["attacked"] == 5 and r["mean_distance"] > 0 and r["readout_mean_distance"] > 0
        assert r["check_iterations"] == 3  # seed 0 is also attacked longer

    strength_sweep.run(cfg)
    out = tmp_path / "sweep"
    for name in ("metrics.json", "sweep.csv", "curves.csv", "tradeoff.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert [(r["mode"], r["strength"]) for r in m["runs"]] == [
        ("none", 0.0),
        ("plain", 0.05),
        ("folded", 0.05),
    ]
    for r in m["runs"]:
        assert 0 < r["target_acc"] <= 1 and r["mean_distance"] > 0 and r["attacked"] == 4
        assert r["sum_sigma_sq_plain"] > 0 and r["sum_sigma_sq_folded"] > 0
    # Both curves start at the shared unregularized baseline.
    starts = [points[0] for points in m["curves"].values()]
    assert starts[0]["target_acc_mean"] == starts[1]["target_acc_mean"]

    summary.run(cfg)
    text = (tmp_path / "summary.md").read_text()
    assert "`xor_fig2`" in text and "`digits_fig6_distance`" in text
    assert "`xor_readout_only`" in text and "Strength sweep" in text
    assert "at CPU scale?" in text
    assert (tmp_path / "diagnostics_overview.png").is_file()
