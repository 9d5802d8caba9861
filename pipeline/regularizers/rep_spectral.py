"""rep-spectral and ll-spectral: ``(γ/2)·Σ_l σ_max(W_l)²`` over weight layers.

rep-spectral (paper eq. 3) penalizes every Conv2d/Linear layer of the backbone Φ and **not** the
readout: it bounds ``‖∇Φ‖ ≤ Π σ_max(W_l)`` in the lower bound on the adversarial distance,
which is about the representation. ll-spectral (Yoshida & Miyato 2017) is the same plus the
readout layer. readout-spectral penalizes the readout alone: what a public implementation of
"ll-spectral" effectively computed (its layer walk did not recurse into nested modules), kept as
a named variant so that result can be compared with the two above.

BatchNorm is never a regularized layer of its own. With ``fold_bn`` each conv that feeds a
BatchNorm2d is regularized through the composed eval-mode operator ``diag(γ/sqrt(var + ε))·K``
(:mod:`pipeline.regularizers.batchnorm_fold`): without it, a conv followed by BN can shrink its
kernel while BN's running variance shrinks with it, leaving the network's function unchanged.

σ_max comes from :mod:`pipeline.regularizers.spectral`: convs on their real input size
(recorded in :meth:`attach`), with power iteration refreshed over all frequencies every
``refresh_every`` optimizer steps and the differentiable value evaluated at the top candidate
frequencies in between. The penalty is an ordinary loss term; nothing writes to weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.models.dataflow import find_batchnorm_after
from pipeline.regularizers.base import Regularizer, StepContext
from pipeline.regularizers.batchnorm_fold import folded_weight
from pipeline.regularizers.layers import (
    backbone_of,
    record_input_sizes,
    select_weight_layers,
    unwrap,
)
from pipeline.regularizers.spectral import SpectralEstimator, make_estimator
from pipeline.regularizers.threads import single_threaded

HEAD_NAME = "head"


def _key(name: str) -> str:
    """Module names contain dots, which ``nn.ModuleDict`` keys may not."""
    return name.replace(".", ":")


def _forget_last_refresh(module: nn.Module, _incompatible_keys) -> None:
    module._last_refresh = None


class RepSpectral(Regularizer):
    """``(γ/2)·Σ σ_max(W_l)²`` over the backbone's Conv2d and Linear layers (readout excluded).

    Parameters: ``strength`` γ; ``burn_in`` first active epoch (0-based); ``power_steps`` power
    iterations per refresh (and per step on the candidates if ``track_candidates``);
    ``refresh_every`` optimizer steps between full-spectrum refreshes; ``layers`` module-name
    prefixes within the backbone (empty = all); ``top_frequencies`` candidates kept per conv;
    ``fold_bn`` regularizes each conv together with the BatchNorm2d after it (eval-mode running
    statistics; a conv without one is a :class:`ConfigError`). Linear layers stay unfolded.
    The first refresh runs at least ``init_power_steps`` steps, since the vectors start random.

    The power-iteration state is created by :meth:`attach` (its shapes depend on each conv's
    input size), so a checkpoint's ``state_dict`` is loaded after ``attach`` on the same
    architecture and resolution.
    """

    name = "rep_spectral"
    include_head = False

    def __init__(
        self,
        strength: float = 1e-3,
        burn_in: int = 0,
        power_steps: int = 1,
        refresh_every: int = 160,
        layers: Sequence[str] = (),
        top_frequencies: int = 4,
        track_candidates: bool = True,
        init_power_steps: int = 20,
        seed: int = 0,
        fold_bn: bool = False,
    ):
        super().__init__(strength, burn_in)
        if power_steps < 1 or refresh_every < 1 or top_frequencies < 1:
            raise ValueError("power_steps, refresh_every and top_frequencies must be >= 1")
        self.power_steps = int(power_steps)
        self.refresh_every = int(refresh_every)
        self.layers = list(layers)
        self.top_frequencies = int(top_frequencies)
        self.track_candidates = bool(track_candidates)
        self.init_power_steps = int(init_power_steps)
        self.seed = int(seed)
        self.fold_bn = bool(fold_bn)
        self.estimators = nn.ModuleDict()
        self.register_buffer("last_refresh", torch.tensor(-1, dtype=torch.long))
        # (name, module) pairs of the model; a plain list so the model's weights do not become
        # this module's parameters or state.
        self._targets: list[tuple[str, nn.Module]] = []
        self._batchnorms: dict[str, tuple[str, nn.BatchNorm2d]] = {}  # conv name -> its BN
        self._attached = False
        self._last_refresh: int | None = None  # mirror of the buffer: no GPU sync per step
        self.register_load_state_dict_post_hook(_forget_last_refresh)

    # -- setup -------------------------------------------------------------------------------
    def _select(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The backbone weight layers to regularize (the readout is added by ``include_head``)."""
        return select_weight_layers(backbone_of(model), self.layers)

    def attach(self, model: nn.Module, example_inputs: torch.Tensor) -> None:
        """Select the layers, record every conv's input size, create the power-iteration state."""
        backbone = backbone_of(model)
        targets = self._select(model)
        convs = {
            n: m for n, m in targets if isinstance(m, nn.Conv2d) and m.weight.shape[2:] != (1, 1)
        }
        sizes = record_input_sizes(backbone, convs, example_inputs) if convs else {}
        unused = sorted(set(convs) - set(sizes))
        if unused:
            warnings.warn(
                f"{self.name}: skipping convs never called in a forward pass: {', '.join(unused)}",
                stacklevel=2,
            )
            targets = [(n, m) for n, m in targets if n not in unused]
        self._batchnorms = self._pair_batchnorms(backbone, targets, example_inputs)
        if self.include_head:
            targets.append((HEAD_NAME, unwrap(model).head))
        estimators = {}
        for index, (name, module) in enumerate(targets):
            estimators[_key(name)] = make_estimator(
                module,
                sizes.get(name),
                self.top_frequencies,
                self.init_power_steps,
                self.seed + index,
            )
        self.estimators = nn.ModuleDict(estimators)
        self._targets = targets
        self._attached = True
        self.last_refresh.fill_(-1)
        self._last_refresh = -1

    def _pair_batchnorms(
        self, backbone: nn.Module, targets: list[tuple[str, nn.Module]], example: torch.Tensor
    ) -> dict[str, tuple[str, nn.BatchNorm2d]]:
        if not self.fold_bn:
            return {}
        convs = {n: m for n, m in targets if isinstance(m, nn.Conv2d)}
        pairs = find_batchnorm_after(backbone, convs, example) if convs else {}
        missing = [n for n in convs if n not in pairs]
        if missing:
            raise ConfigError(
                f"{self.name}: fold_bn needs a BatchNorm2d right after every regularized conv; "
                f"none found after {', '.join(missing)} (set fold_bn: false, or restrict `layers`)"
            )
        return pairs

    def _operator_weight(self, name: str, module: nn.Module) -> torch.Tensor:
        """The weight whose σ_max is penalized: the BN-folded kernel, or the layer's own."""
        pair = self._batchnorms.get(name)
        return module.weight if pair is None else folded_weight(module, pair[1], pair[0])

    @property
    def batchnorm_pairs(self) -> dict[str, str]:
        """``conv name -> BatchNorm name`` of the folded pairs (empty without ``fold_bn``)."""
        return {conv: bn for conv, (bn, _) in self._batchnorms.items()}

    @property
    def layer_names(self) -> list[str]:
        """Names of the regularized layers (backbone-relative; the readout is ``"head"``)."""
        return [name for name, _ in self._targets]

    def _pairs(self) -> list[tuple[str, nn.Module, SpectralEstimator]]:
        if not self._attached:
            raise RuntimeError(f"{self.name}: call attach(model, example_inputs) first")
        return [(n, m, self.estimators[_key(n)]) for n, m in self._targets]

    # -- training ----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Power iteration over every frequency of every layer (no autograd)."""
        pairs = self._pairs()
        if not pairs:
            return
        with single_threaded(pairs[0][1].weight.device):
            for name, module, estimator in pairs:
                estimator.refresh(self._operator_weight(name, module), self.power_steps)

    def _refresh_due(self, step: int) -> bool:
        if self._last_refresh is None:
            self._last_refresh = int(self.last_refresh)
        last = self._last_refresh
        return last < 0 or step < last or step - last >= self.refresh_every

    def penalty(self, ctx: StepContext) -> torch.Tensor:
        pairs = self._pairs()
        if not pairs:
            return torch.zeros(())
        steps = self.power_steps if self.track_candidates else 0
        if self._refresh_due(ctx.step):
            self.refresh()
            self.last_refresh.fill_(ctx.step)
            self._last_refresh = ctx.step
            steps = 0
        device = pairs[0][1].weight.device
        with torch.autocast(device_type=device.type, enabled=False), single_threaded(device):
            total = sum(
                est.value(self._operator_weight(name, module), steps) for name, module, est in pairs
            )
        return 0.5 * self.strength * total

    # -- logging -----------------------------------------------------------------------------
    @torch.no_grad()
    def exact_sigma_max(self) -> dict[str, float]:
        """Exact σ_max per layer: full SVD over all frequencies for convs."""
        pairs = self._pairs()
        if not pairs:
            return {}
        with single_threaded(pairs[0][1].weight.device):
            return {
                name: float(est.exact(self._operator_weight(name, module)))
                for name, module, est in pairs
            }

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        sigmas = self.exact_sigma_max()
        out = {f"sigma_max/{name}": value for name, value in sigmas.items()}
        out["penalty_value"] = 0.5 * self.strength * sum(s * s for s in sigmas.values())
        return out


class LLSpectral(RepSpectral):
    """ll-spectral: rep-spectral plus the readout layer's ``σ_max(W_L)²`` (key ``sigma_max/head``)."""

    name = "ll_spectral"
    include_head = True


class ReadoutSpectral(RepSpectral):
    """``(γ/2)·σ_max(W_head)²``: the readout alone, no backbone layer (key ``sigma_max/head``).

    The variant a public ll-spectral implementation ran in effect; the backbone gets no gradient.
    """

    name = "readout_spectral"
    include_head = True

    def __init__(self, strength: float = 1e-3, burn_in: int = 0, **kwargs):
        if kwargs.get("fold_bn") or kwargs.get("layers"):
            raise ConfigError(
                "readout_spectral regularizes the readout only: no layers, no fold_bn"
            )
        super().__init__(strength, burn_in, **kwargs)

    def _select(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        backbone_of(model)  # same model contract as the others: a SplitModel
        return []


def spectral_summary(model: nn.Module, example: torch.Tensor, fold_bn: bool = False) -> dict:
    """Exact σ_max of every backbone weight layer (convs as operators) and ``Σ σ_max²``.

    With ``fold_bn`` each conv is measured together with the BatchNorm2d after it (eval-mode
    operator); a conv without one is a :class:`ConfigError`. Returns ``sum_sigma_max_sq``,
    ``max_sigma_max`` and ``layers`` (how many layers were measured).
    """
    probe = RepSpectral(strength=0.0, fold_bn=fold_bn)
    probe.attach(model, example.to(next(model.parameters()).device))
    sigmas = list(probe.exact_sigma_max().values())
    return {
        "sum_sigma_max_sq": float(sum(v * v for v in sigmas)),
        "max_sigma_max": float(max(sigmas, default=0.0)),
        "layers": len(sigmas),
    }
