"""The attack stage end to end on a tiny finetuned model: output schema, byte determinism, the
model-independent sample draw, parameter errors, and oracle precision."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from pipeline.__main__ import main

FT = ["--target", "digits_5to9", "--backbone", "none", "--backbone_seed", "0"]
FT += ["--regularizer", "none", "--seed", "0"]
OUT = Path("metrics/attack/finetune/digits_5to9/none/backbone_seed0/none/seed0")

# End to end: prepare, pretrain and finetune once, then the stage itself (about 30 CPU-seconds).
pytestmark = pytest.mark.slow


def _set(**attack):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["attack"].update(attack)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A workdir with the prepared target and a finetuned model (built once per module)."""
    from tests.conftest import tiny_params

    root = tmp_path_factory.mktemp("attack_stage")
    params = tiny_params()
    params["attack"].update(n_samples=6, iterations=3, max_probes=200, budgets=[300, 1000])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for dataset in ("digits_0to4", "digits_5to9"):
            assert main(["prepare", "--dataset", dataset]) == 0
        assert main(["pretrain", "--variant", "none", "--seed", "0"]) == 0
        assert main(["finetune", *FT]) == 0
    return root


@pytest.fixture
def stage_dir(finetuned, monkeypatch):
    monkeypatch.chdir(finetuned)
    original = (finetuned / "params.yaml").read_text()
    yield finetuned
    (finetuned / "params.yaml").write_text(original)


def test_outputs_follow_the_schema_and_are_byte_deterministic(stage_dir):
    assert main(["attack", "--kind", "finetune", *FT]) == 0
    first = {p: (OUT / p).read_bytes() for p in ("summary.json", "samples.csv")}
    assert main(["attack", "--kind", "finetune", *FT]) == 0
    assert {p: (OUT / p).read_bytes() for p in first} == first

    s = json.loads(first["summary.json"])
    assert s["methods"] == ["tangent", "hsja"] and s["budgets"] == [300, 1000]
    assert s["n_samples"] == 6 and s["success_rate"] == 1.0
    assert not any("second" in k for k in s)
    rows = list(csv.DictReader(first["samples.csv"].decode().splitlines()))
    assert list(rows[0]) == [
        "index", "label", "method", "distance", "queries", "success", "d_300", "d_1000"
    ]  # fmt: skip
    assert len(rows) == 6 * 3 and [r["method"] for r in rows[:3]] == ["tangent", "hsja", "best"]
    for i in range(6):
        t, h, b = rows[3 * i : 3 * i + 3]
        assert t["index"] == h["index"] == b["index"]
        assert float(b["distance"]) == min(float(t["distance"]), float(h["distance"]))
        assert int(t["queries"]) <= 1000 and int(h["queries"]) <= 1000  # the largest budget
    best = [float(r["distance"]) for r in rows if r["method"] == "best"]
    assert s["mean_distance"] == pytest.approx(sum(best) / len(best))
    for m in ("tangent", "hsja"):
        by = s["by_method"][m]
        mine = [float(r["distance"]) for r in rows if r["method"] == m]
        assert by["mean_distance"] == pytest.approx(sum(mine) / len(mine))
        assert by["at_queries"]["1000"] <= by["at_queries"]["300"]
        assert by["mean_distance"] >= s["mean_distance"]


def test_samples_do_not_depend_on_the_model_but_on_the_seeds(stage_dir):
    """The draw is a permutation from (attack.seed, run seed): a larger n_samples extends it."""
    _set(n_samples=3, methods=["tangent"])
    assert main(["attack", "--kind", "finetune", *FT]) == 0
    few = [
        r["index"] for r in csv.DictReader((OUT / "samples.csv").open()) if r["method"] == "best"
    ]
    _set(n_samples=5, methods=["tangent"])
    assert main(["attack", "--kind", "finetune", *FT]) == 0
    more = [
        r["index"] for r in csv.DictReader((OUT / "samples.csv").open()) if r["method"] == "best"
    ]
    assert more[:3] == few
    _set(n_samples=5, methods=["tangent"], seed=7)
    assert main(["attack", "--kind", "finetune", *FT]) == 0
    other = [
        r["index"] for r in csv.DictReader((OUT / "samples.csv").open()) if r["method"] == "best"
    ]
    assert other != more


def test_too_many_samples_is_a_config_error_unless_allowed(stage_dir, capsys):
    _set(n_samples=100_000, methods=["tangent"], iterations=1, budgets=[200])
    assert main(["attack", "--kind", "finetune", *FT]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attack.n_samples" in err[0] and "correctly classified" in err[0]
    _set(n_samples=100_000, methods=["tangent"], iterations=1, budgets=[200], allow_fewer=True)
    assert main(["attack", "--kind", "finetune", *FT]) == 0
    s = json.loads((OUT / "summary.json").read_text())
    assert 0 < s["n_samples"] == round(s["test_acc"] * _test_size()) < 100_000


def _test_size() -> int:
    meta = json.loads(Path("artifacts/prepared/digits_5to9/test/meta.json").read_text())
    return int(meta["num_samples"])


def test_bf16_oracle_runs_on_cpu(stage_dir):
    """bf16 rounds the logits, so the boundary (and even which samples are correct) can move;
    benchmarks/attack_precision.py measures by how much. Here: it runs and succeeds."""
    _set(n_samples=4, methods=["tangent"])
    assert main(["attack", "--kind", "finetune", *FT]) == 0
    fp32 = json.loads((OUT / "summary.json").read_text())
    _set(n_samples=4, methods=["tangent"], precision="bf16")
    assert main(["attack", "--kind", "finetune", *FT]) == 0
    bf16 = json.loads((OUT / "summary.json").read_text())
    assert bf16["success_rate"] == 1.0
    assert 0 < bf16["mean_distance"] < 10 * fp32["mean_distance"]
