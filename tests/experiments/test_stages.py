"""The XOR and digits stages end to end on tiny settings: every output file, sane metrics."""

from __future__ import annotations

import json

import yaml

from pipeline.experiments import digits_mlp, summary, xor
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
    params["diagnostics"]["out"] = str(tmp_path / "diag")
    params["summary"]["out"] = str(tmp_path / "summary.md")
    return ExperimentsConfig.model_validate(params)


def test_xor_and_digits_stages_write_every_output(tmp_path):
    cfg = _tiny_config(tmp_path)
    xor.run(cfg)
    out = tmp_path / "xor"
    for name in ("metrics.json", "runs.csv", "groups.csv", "sigma_history.csv",
                 "fig2_distance.png", "fig2_exact_margin.png", "fig3_maps_wd0.png",
                 "fig3_maps_wd0.0001.png", "fig4_sigma.png"):  # fmt: skip
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["branch_epoch"] == 40 and len(m["runs"]) == 2 * 3
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
    assert {r["variant"] for r in m["runs"]} == {"none", "ll_spectral", "rep_spectral"}
    for r in m["runs"]:
        assert 0.5 < r["test_acc"] <= 1 and 0.5 < r["readout_test_acc"] <= 1
        assert r["attacked"] == 5 and r["mean_distance"] > 0 and r["readout_mean_distance"] > 0
        assert r["check_iterations"] == 3  # seed 0 is also attacked longer

    summary.run(cfg)
    text = (tmp_path / "summary.md").read_text()
    assert "`xor_fig2`" in text and "`digits_fig6_distance`" in text
    assert (tmp_path / "diagnostics_overview.png").is_file()
