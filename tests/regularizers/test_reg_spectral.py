"""σ_max of linear and conv layers against dense ground truths; power iteration; gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.regularizers import conv_frequency_matrices, conv_sigma_max, linear_sigma_max
from pipeline.regularizers.spectral import (
    ConvGeometry,
    ConvSpectralEstimator,
    MatrixSpectralEstimator,
    dft_blocks,
    make_estimator,
    polyphase_kernel,
    power_iteration,
)
from pipeline.regularizers.threads import single_threaded

RTOL = 1e-4

# (c_in, c_out, kernel, stride, (h, w)): channels 1-4, kernels 1/3/7, strides 1/2,
# odd and even sizes (odd ones only at stride 1, where the stride divides them).
GRID = [
    (1, 1, 1, 1, (5, 4)),
    (3, 2, 1, 1, (4, 4)),
    (2, 4, 1, 2, (6, 4)),
    (4, 3, 1, 2, (4, 4)),
    (1, 2, 3, 1, (5, 5)),
    (2, 3, 3, 1, (6, 5)),
    (4, 4, 3, 1, (4, 6)),
    (3, 1, 3, 1, (3, 3)),
    (2, 2, 3, 2, (6, 6)),
    (1, 3, 3, 2, (4, 8)),
    (4, 2, 3, 2, (8, 6)),
    (2, 1, 7, 1, (7, 7)),
    (3, 2, 7, 1, (8, 7)),
    (1, 4, 7, 1, (9, 8)),
    (2, 2, 7, 2, (8, 8)),
    (1, 1, 7, 2, (10, 8)),
]


def _kernel(c_out, c_in, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(c_out, c_in, k, k, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("c_in,c_out,k,stride,hw", GRID)
def test_conv_sigma_max_matches_dense_operator(c_in, c_out, k, stride, hw, dense_sigma_max):
    weight = _kernel(c_out, c_in, k, seed=c_in * 100 + k * 10 + stride)
    expected = dense_sigma_max(weight.numpy(), hw, stride)
    got = conv_sigma_max(weight, hw, stride).item()
    assert got == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize(
    "k,stride,hw", [(3, 1, (5, 6)), (3, 2, (6, 8)), (1, 2, (4, 4)), (7, 2, (8, 8))]
)
def test_dense_ground_truth_is_pytorchs_circular_conv(k, stride, hw, dense_sigma_max):
    """The index-arithmetic operator used above is the Jacobian of F.conv2d with circular padding."""
    weight = _kernel(2, 3, k, seed=7)
    pad = (k - 1) // 2

    def conv(x):
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="circular"), weight, stride=stride)

    x = torch.zeros(1, 3, *hw, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(conv, x)
    jac = jac.reshape(-1, x.numel())
    expected = torch.linalg.svdvals(jac)[0].item()
    assert dense_sigma_max(weight.numpy(), hw, stride) == pytest.approx(expected, rel=1e-10)
    assert conv_sigma_max(weight, hw, stride).item() == pytest.approx(expected, rel=RTOL)


def test_kernel_offset_does_not_change_sigma(dense_sigma_max):
    """A zero-padded ("valid"-offset) kernel gives the same singular values as a centred one."""
    weight = _kernel(3, 2, 3, seed=3)
    op_centred = dense_sigma_max(weight.numpy(), (6, 6), 2)
    shifted = torch.zeros(3, 2, 5, 5, dtype=torch.float64)
    shifted[:, :, 1:4, 2:5] = weight  # same taps, moved inside a larger kernel
    assert conv_sigma_max(shifted, (6, 6), 2).item() == pytest.approx(op_centred, rel=RTOL)


@pytest.mark.parametrize("hw", [(7, 7), (5, 8), (9, 3)])
def test_stride_not_dividing_size_uses_rounded_up_input(hw, dense_sigma_max):
    """Documented behaviour: σ_max of the circular conv on ceil(h/s)·s × ceil(w/s)·s inputs."""
    weight = _kernel(3, 2, 3, seed=11)
    rounded = tuple(-(-n // 2) * 2 for n in hw)
    got = conv_sigma_max(weight, hw, 2).item()
    assert got == pytest.approx(dense_sigma_max(weight.numpy(), rounded, 2), rel=RTOL)
    assert got == pytest.approx(conv_sigma_max(weight, rounded, 2).item(), rel=1e-12)


def test_kernel_larger_than_input_wraps_around(dense_sigma_max):
    weight = _kernel(2, 2, 7, seed=5)
    assert conv_sigma_max(weight, (4, 5), 1).item() == pytest.approx(
        dense_sigma_max(weight.numpy(), (4, 5), 1), rel=RTOL
    )


@pytest.mark.parametrize("groups,c_in,c_out", [(2, 4, 6), (4, 4, 4), (3, 3, 6)])
def test_grouped_and_depthwise_convs(groups, c_in, c_out, dense_sigma_max):
    weight = _kernel(c_out, c_in // groups, 3, seed=groups)
    for stride, hw in ((1, (5, 6)), (2, (6, 6))):
        expected = dense_sigma_max(weight.numpy(), hw, stride, groups=groups)
        got = conv_sigma_max(weight, hw, stride, groups=groups).item()
        assert got == pytest.approx(expected, rel=RTOL)


def test_dilated_conv(dense_sigma_max):
    weight = _kernel(3, 2, 3, seed=9)
    expected = dense_sigma_max(weight.numpy(), (8, 7), 1, dilation=2)
    assert conv_sigma_max(weight, (8, 7), 1, dilation=2).item() == pytest.approx(expected, rel=RTOL)


def test_flattened_kernel_is_a_different_quantity():
    """Guard against the trap of regularizing the reshaped kernel instead of the operator."""
    weight = _kernel(4, 4, 3, seed=2)
    flat = torch.linalg.svdvals(weight.reshape(4, -1))[0].item()
    assert abs(conv_sigma_max(weight, (8, 8)).item() - flat) / flat > 0.05


def test_direct_dft_blocks_match_fft():
    geom = ConvGeometry((6, 7), (2, 2), (1, 1), 2)
    weight = _kernel(4, 3, 3, seed=4)
    fft = conv_frequency_matrices(weight, (6, 7), 2, groups=2)
    dft = dft_blocks(polyphase_kernel(weight, geom), geom, torch.arange(geom.num_freqs))
    torch.testing.assert_close(dft, fft, rtol=1e-10, atol=1e-10)


def test_linear_sigma_max_and_power_iteration():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    exact = torch.linalg.svdvals(weight)[0]
    assert linear_sigma_max(weight).item() == pytest.approx(exact.item(), rel=1e-12)
    v = torch.nn.functional.normalize(torch.randn(5, generator=gen, dtype=torch.float64), dim=0)
    _, sigma = power_iteration(weight, v, 200)
    assert sigma.item() == pytest.approx(exact.item(), rel=RTOL)


def test_complex_batched_power_iteration():
    gen = torch.Generator().manual_seed(1)
    m = torch.randn(5, 3, 4, 2, generator=gen, dtype=torch.float64)
    matrices = torch.view_as_complex(m.contiguous())
    v = torch.nn.functional.normalize(torch.randn(5, 4, dtype=torch.complex128), dim=-1)
    _, sigma = power_iteration(matrices, v, 300)
    torch.testing.assert_close(sigma, torch.linalg.svdvals(matrices)[:, 0], rtol=RTOL, atol=0)


def test_matrix_estimator_converges_to_svd():
    layer = nn.Linear(9, 6).double()
    est = make_estimator(layer, seed=3)
    assert isinstance(est, MatrixSpectralEstimator)
    for _ in range(300):
        value = est.value(layer.weight, 1)
    exact = torch.linalg.svdvals(layer.weight)[0].item()
    assert value.sqrt().item() == pytest.approx(exact, rel=RTOL)
    assert est.exact(layer.weight).item() == pytest.approx(exact, rel=1e-12)


def test_one_by_one_strided_conv_uses_matrix_norm(dense_sigma_max):
    conv = nn.Conv2d(4, 6, 1, stride=2, bias=False).double()
    assert isinstance(make_estimator(conv, (6, 6)), MatrixSpectralEstimator)
    expected = dense_sigma_max(conv.weight.detach().numpy(), (6, 6), 2)
    assert linear_sigma_max(conv.weight).item() == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("stride,groups,hw", [(1, 1, (7, 6)), (2, 1, (8, 6)), (2, 2, (6, 6))])
def test_conv_estimator_power_iteration_converges_to_exact(stride, groups, hw):
    weight = _kernel(6, 4 // groups, 3, seed=stride + groups)
    geom = ConvGeometry(hw, (stride, stride), (1, 1), groups)
    est = ConvSpectralEstimator(weight, geom, top_frequencies=4, init_power_steps=50)
    for _ in range(5):  # a refresh every 20 steps, as in training
        est.refresh(weight, 1)
        for _ in range(20):
            value = est.value(weight, 1)
    exact = conv_sigma_max(weight, hw, stride, groups=groups).item()
    assert value.sqrt().item() == pytest.approx(exact, rel=RTOL)
    assert est.exact(weight).item() == pytest.approx(exact, rel=1e-12)


def test_candidate_value_is_the_stored_vector_quadratic_form():
    """Between refreshes: σ² = max_t ‖K̂(f_t) v_t‖² with v held fixed (kernel-space evaluation)."""
    weight = _kernel(5, 3, 3, seed=6)
    geom = ConvGeometry((6, 8), (2, 2))
    est = ConvSpectralEstimator(weight, geom, top_frequencies=3, init_power_steps=2)
    est.refresh(weight, 1)
    g, f = est.candidates[:, 0], est.candidates[:, 1]
    blocks = dft_blocks(polyphase_kernel(weight, geom), geom, f)[g, torch.arange(len(f))]
    v = torch.view_as_complex(est.v[g, f].contiguous())
    expected = (blocks @ v.unsqueeze(-1)).abs().pow(2).sum((-2, -1)).max()
    torch.testing.assert_close(est.value(weight, 0), expected, rtol=1e-12, atol=0)
    before = est.v.clone()
    est.value(weight, 0)
    assert torch.equal(before, est.v), "steps=0 must not move the vectors"


def test_gradcheck_conv_sigma_max():
    for stride, hw in ((1, (4, 5)), (2, (4, 6))):
        weight = _kernel(2, 2, 3, seed=stride).requires_grad_()
        assert torch.autograd.gradcheck(
            lambda w, s=stride, hw=hw: conv_sigma_max(w, hw, s), (weight,)
        )


def test_gradcheck_estimator_values():
    weight = _kernel(3, 2, 3, seed=8)
    est = ConvSpectralEstimator(weight, ConvGeometry((6, 6), (2, 2)), 3, 5)
    est.refresh(weight, 1)
    assert torch.autograd.gradcheck(lambda w: est.value(w, 0), (weight.clone().requires_grad_(),))
    layer = nn.Linear(4, 3).double()
    lin = make_estimator(layer)
    w = layer.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w: lin.value(w, 0), (w,))


def test_conv_sigma_max_rejects_non_4d():
    with pytest.raises(ValueError):
        conv_sigma_max(torch.randn(3, 3), (4, 4))


def test_exact_sigma_on_numpy_grid_dense_small_case(dense_sigma_max):
    """A 1-channel 3×3 conv at stride 1 is a 2-D circulant: σ_max = max |DFT(kernel)|."""
    weight = _kernel(1, 1, 3, seed=12)
    padded = np.zeros((5, 6))
    padded[:3, :3] = weight[0, 0].numpy()
    expected = np.abs(np.fft.fft2(padded)).max()
    assert conv_sigma_max(weight, (5, 6)).item() == pytest.approx(expected, rel=1e-10)
    assert dense_sigma_max(weight.numpy(), (5, 6)) == pytest.approx(expected, rel=1e-10)


def test_single_threaded_restores_the_thread_count():
    torch.set_num_threads(2)
    with single_threaded(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(KeyError), single_threaded(torch.device("cpu")):
        raise KeyError("restored even on error")
    assert torch.get_num_threads() == 2
