"""Regularizer settings: defaults, the discriminated union, the factory, validation errors."""

from __future__ import annotations

import typing

import pytest
from pydantic import TypeAdapter, ValidationError

from pipeline.core.errors import ConfigError
from pipeline.regularizers import (
    REGULARIZERS,
    BatchSpectralShrinkage,
    L1Norm,
    LLSpectral,
    LowRank,
    NuclearNorm,
    RegularizerConfig,
    RepSpectral,
    RepSpectralConfig,
    build_regularizer,
    build_regularizers,
    parse_regularizer_configs,
)


def test_defaults_are_the_papers_settings():
    rep = RepSpectralConfig()
    assert (rep.strength, rep.power_steps, rep.refresh_every, rep.layers) == (1e-3, 1, 160, [])
    lr, bss = parse_regularizer_configs([{"name": "lr"}, {"name": "bss"}])
    assert (lr.rank, lr.project_every, lr.at, lr.pool) == (100, 10, ["features"], True)
    assert (bss.strength, bss.k) == (1e-3, 1)


def test_build_regularizers_from_dicts():
    regs = build_regularizers(
        [
            {"name": "rep_spectral", "strength": 0.01, "burn_in": 80, "layers": ["layer4"]},
            {"name": "ll_spectral", "refresh_every": 1},
            {"name": "lr", "at": ["features", "layer3"], "rank": [100, 500], "burn_in": 50},
            {"name": "bss", "k": 2},
            {"name": "nuclear", "strength": 0.05},
            {"name": "l1"},
        ]
    )
    types = [RepSpectral, LLSpectral, LowRank, BatchSpectralShrinkage, NuclearNorm, L1Norm]
    assert [type(r) for r in regs] == types
    rep, ll, lr, bss, nuclear, _ = regs
    assert (rep.strength, rep.burn_in, rep.layers) == (0.01, 80, ["layer4"])
    assert not rep.active(79) and rep.active(80)
    assert ll.refresh_every == 1 and ll.include_head
    assert lr.ranks == [100, 500] and lr.at == ["features", "layer3"] and lr.burn_in == 50
    assert bss.k == 2 and nuclear.strength == 0.05


def test_models_and_dicts_are_both_accepted():
    regs = build_regularizers([RepSpectralConfig(strength=0.2), {"name": "bss"}])
    assert regs[0].strength == 0.2 and isinstance(regs[1], BatchSpectralShrinkage)


@pytest.mark.parametrize(
    "raw,fragment",
    [
        ({"name": "rep_spectral", "strength": -1}, "strength"),
        ({"name": "rep_spectral", "strength": float("nan")}, "strength"),
        ({"name": "rep_spectral", "power_steps": 0}, "power_steps"),
        ({"name": "ll_spectral", "refresh_every": 0}, "refresh_every"),
        ({"name": "rep_spectral", "burn_in": -2}, "burn_in"),
        ({"name": "rep_spectral", "gamma": 0.1}, "gamma"),
        ({"name": "rep_spectral", "layers": [""]}, "layers"),
        ({"name": "lr", "at": ["features", "layer3", "layer2"]}, "at"),
        ({"name": "lr", "at": []}, "at"),
        ({"name": "lr", "at": ["features", "features"]}, "twice"),
        ({"name": "lr", "rank": [100, 500]}, "rank"),
        ({"name": "lr", "rank": 0}, "rank"),
        ({"name": "lr", "nystrom_runs": 0}, "nystrom_runs"),
        ({"name": "bss", "k": 0}, "k"),
        ({"name": "nuclear", "strength": -0.1}, "strength"),
        ({"name": "spectral"}, "name"),
        ({"strength": 1.0}, "name"),
    ],
)
def test_bad_values_are_config_errors(raw, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_regularizers([raw])


def test_union_is_discriminated_by_name():
    adapter = TypeAdapter(RegularizerConfig)
    assert type(adapter.validate_python({"name": "l1"})).__name__ == "L1Config"
    with pytest.raises(ValidationError):
        adapter.validate_python({"name": "l1", "k": 1})


def test_every_setting_builds_its_regularizer_with_its_fields():
    """The schema (core, no torch) and the classes (regularizers) name the same regularizers."""
    models = typing.get_args(typing.get_args(RegularizerConfig)[0])
    assert {m.model_fields["name"].default for m in models} == set(REGULARIZERS)
    for model in models:
        settings = model(burn_in=3)
        regularizer = build_regularizer(settings)
        assert type(regularizer) is REGULARIZERS[settings.name] and regularizer.burn_in == 3
