"""The parameter schema: defaults validate, and every kind of bad value is a one-line error."""

from __future__ import annotations

import pytest

from pipeline.core.config import apply_overrides, load_config, read_params, validate
from pipeline.core.errors import ConfigError
from tests.conftest import REPO, tiny_params


def test_default_params_validate():
    cfg = load_config(REPO / "params.yaml")
    run = cfg.pretrain.run.variants
    assert run and run == [v for v in cfg.pretrain.variants if v in run]  # declared, in order
    assert set(cfg.finetune.run.backbones) <= set(cfg.backbone_names())
    # Pretraining seeds are the unit of replication: the paired test needs at least two, and
    # every backbone is finetuned at seeds its pretraining stage trains.
    assert len(cfg.pretrain.run.seeds) >= 2
    assert set(cfg.finetune.run.backbone_seeds) <= set(cfg.pretrain.run.seeds)
    assert set(cfg.finetune.run.backbone_seeds) <= set(cfg.ssl.run.seeds)


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        (["pretrain.train.epochs=0"], ["pretrain.train.epochs", "greater than or equal to 1"]),
        (["pretrain.train.epochs=many"], ["pretrain.train.epochs", "integer"]),
        (["pretrain.train.optimizer.lr_head=-1"], ["lr_head", "greater than 0"]),
        (["pretrain.train.bogus=1"], ["unknown key 'pretrain.train.bogus'", "allowed:", "epochs"]),
        (
            ["pretrain.model.arch=vgg"],
            ["pretrain.model.arch", "unknown model arch 'vgg'", "resnet50"],
        ),
        (["pretrain.data.source=mnist"], ["pretrain.data.source", "'mnist'", "cifar10"]),
        (["pretrain.train.schedule.kind=linear"], ["schedule.kind", "'cosine'"]),
        (
            ["pretrain.run.variants=[none, nope]"],
            ["pretrain.run.variants", "'nope'", "allowed: none"],
        ),
        (["finetune.run.backbones=[ghost]"], ["finetune.run.backbones", "'ghost'"]),
        (
            ["finetune.run.targets=[cifar100]"],
            ["finetune.run.targets", "'cifar100'", "digits_5to9"],
        ),
        (
            ["pretrain.variants.rep_spectral=[{name: rep_spectral, strength: -1}]"],
            ["pretrain.variants.rep_spectral.0.strength", "greater than or equal to 0"],
        ),
        (
            ["pretrain.variants.rep_spectral=[{name: spectral_magic}]"],
            ["pretrain.variants.rep_spectral.0", "rep_spectral", "bss"],
        ),
        (
            ["pretrain.variants.rep_spectral=[{name: rep_spectral, gamma: 1}]"],
            ["unknown key", "gamma", "strength"],
        ),
    ],
)
def test_bad_parameters_name_the_key_and_allowed_values(override, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "params.yaml", override)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_override_parses_yaml_values_and_creates_sections():
    data = apply_overrides({"a": {"b": 1}}, ["a.b=2.5", "a.c=[1, 2]", "d.e=null"])
    assert data == {"a": {"b": 2.5, "c": [1, 2]}, "d": {"e": None}}


def test_override_into_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="a.b is not a section"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c=2"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="parameter file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_backbone_names_must_be_unique_across_supervised_and_ssl():
    params = tiny_params()
    if "ssl" not in params:
        pytest.skip("no ssl section in the default params")
    name = next(iter(params["pretrain"]["variants"]))
    params["ssl"]["variants"][name] = {"method": "simclr"}
    with pytest.raises(ConfigError, match="unique"):
        validate(params)


def test_every_config_file_validates():
    files = sorted((REPO / "configs").glob("*.yaml"))
    assert len(files) >= 8, files  # the settings the README and tests/test_configs.py name
    for path in files:
        data = read_params(path)  # its extends: chain composed
        assert "extends" not in data, path
        cfg = validate(data, source=str(path))
        # What validation returns is itself a valid parameter file (DVC reads params back).
        dump = cfg.model_dump(mode="json")
        assert validate(dump).model_dump(mode="json") == dump, path


def _refusal(params: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate(params)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("section", ["pretrain", "ssl"])
def test_a_list_run_is_refused_naming_the_key(section):
    """The old shape ``run: [variants]``: refused with the mapping to write instead."""
    params = tiny_params()
    variants = params[section]["run"]["variants"]
    params[section]["run"] = variants
    message = _refusal(params)
    assert f"{section}.run" in message and "not a list" in message, message
    assert f"run: {{variants: {variants}, seeds: [0]}}" in message, message


def test_backbone_seed_not_pretrained_is_refused_naming_the_key():
    params = tiny_params()
    params["pretrain"]["run"]["seeds"] = [0, 1]
    params["finetune"]["run"]["backbone_seeds"] = [0, 2]
    message = _refusal(params)
    assert "finetune.run.backbone_seeds" in message and "seed 2" in message, message
    assert "pretrain.run.seeds [0, 1]" in message, message
    params["finetune"]["run"]["backbone_seeds"] = [1, 0]  # a subset, in any order: fine
    assert validate(params).finetune.run.backbone_seeds == [1, 0]


def test_ssl_backbone_seed_is_checked_against_ssl_seeds():
    params = tiny_params()
    ssl_variant = params["ssl"]["run"]["variants"][0]
    params["pretrain"]["run"]["seeds"] = [0, 1]  # seed 1 pretrained, but not by ssl
    params["finetune"]["run"].update(backbones=["none", ssl_variant], backbone_seeds=[0, 1])
    message = _refusal(params)
    assert "finetune.run.backbone_seeds" in message and repr(ssl_variant) in message, message
    assert "ssl.run.seeds [0]" in message, message


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("pretrain.run.seeds", ("pretrain", "run", "seeds")),
        ("ssl.run.seeds", ("ssl", "run", "seeds")),
        ("finetune.run.backbone_seeds", ("finetune", "run", "backbone_seeds")),
        ("finetune.run.seeds", ("finetune", "run", "seeds")),
    ],
)
def test_duplicate_seeds_are_refused_naming_the_key(key, path):
    params = tiny_params()
    section, run, field = path
    params[section][run][field] = [0, 0]
    message = _refusal(params)
    assert key in message and "distinct" in message, message


def test_seeds_multiply_the_pretraining_and_transfer_instances():
    from pipeline.plan import plan

    params = tiny_params()
    params["pretrain"]["run"] = {"variants": ["none", "rep_spectral"], "seeds": [3, 5]}
    params["finetune"]["run"].update(backbone_seeds=[5], seeds=[0, 1])
    ids = [i.id for i in plan(validate(params))]
    pretrain = sorted(i for i in ids if i.startswith("pretrain@"))
    assert pretrain == ["pretrain@none-3", "pretrain@none-5",
                        "pretrain@rep_spectral-3", "pretrain@rep_spectral-5"]  # fmt: skip
    finetune = [i for i in ids if i.startswith("finetune@")]
    assert sorted(finetune) == [
        f"finetune@digits_5to9-{b}-5-none-{s}" for b in ("none", "rep_spectral") for s in (0, 1)
    ]
    readout = {i for i in ids if i.startswith("readout@")}
    assert readout == {"readout@digits_5to9-none-5", "readout@digits_5to9-rep_spectral-5"}


def test_raw_dataset_elsewhere_names_the_root_it_got():
    params = tiny_params()
    params["prepare"]["outputs"]["cifar10"] = {"source": "cifar10", "root": "/mnt/elsewhere"}
    params["prepare"]["raw"] = ["cifar10"]
    with pytest.raises(ConfigError) as err:
        validate(params)
    message = str(err.value)
    assert "data/cifar10" in message and "got '/mnt/elsewhere'" in message, message
    assert "{" not in message


def test_a_baseline_the_dag_does_not_run_is_refused_naming_the_key():
    params = tiny_params()
    params["finetune"]["run"]["backbones"] = ["rep_spectral"]  # its baseline `none` not run
    message = _refusal(params)
    assert "report.baseline: 'rep_spectral' is compared with 'none'" in message, message
    params["report"]["primary"]["baselines"] = {"rep_spectral": None}  # declared: not compared
    validate(params)
    params["report"]["primary"]["baselines"] = {"rep_spectrall": "none"}
    assert "report.primary.baselines: unknown backbone 'rep_spectrall'" in _refusal(params)


def test_instance_ids_that_would_collide_are_refused():
    """finetune@T-n-1-0-r-0 is backbone n-1, seed 0, regularizer r and backbone n, seed 1,
    regularizer 0-r: names may hold "-", DVC's separator."""
    from pipeline.plan import plan

    params = tiny_params()
    params["pretrain"]["variants"].update({"n": [], "n-1": []})
    params["pretrain"]["run"] = {"variants": ["n", "n-1"], "seeds": [0, 1]}
    params["finetune"]["regularizers"].update({"r": [], "0-r": []})
    params["finetune"]["run"].update(
        backbones=["n", "n-1"], backbone_seeds=[0, 1], regularizers=["r", "0-r"], seeds=[0]
    )
    params["report"]["baseline"] = "r"
    params["report"]["primary"]["baselines"] = {"n": None, "n-1": None}
    with pytest.raises(ConfigError, match="share the id finetune@digits_5to9-n-1-0-r-0"):
        plan(validate(params))
