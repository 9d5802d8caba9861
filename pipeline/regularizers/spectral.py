"""Top singular value σ_max of weight layers seen as linear operators.

* Linear layer: σ_max of its weight matrix.
* Conv2d: σ_max of the convolution as a linear map on images of the layer's real input size
  ``h × w`` with **circular** (periodic) boundary handling. That operator is block-circulant, so
  a 2-D DFT block-diagonalizes it (Sedghi et al. 2018; Senderovich et al. 2022 for stride ``s``):
  split the kernel, zero-padded to ``h × w``, into its ``s_h·s_w`` polyphase components
  ``K[:, :, i::s_h, j::s_w]`` (each ``h/s_h × w/s_w``), stack them on the input-channel axis and
  take the 2-D DFT; at every frequency this gives a complex ``c_out × (c_in·s_h·s_w)`` matrix, and
  the operator's singular values are the union of theirs. Flattening the kernel into a matrix
  would be a different quantity.

  Zero-padded convs (the usual ``padding=k//2``) are regularized through this circular
  surrogate; it is exact only for ``padding_mode="circular"``. The padding offset itself does
  not matter: shifting the kernel multiplies each frequency block by unit-modulus phases, which
  leaves singular values unchanged.

  Edge cases, all handled by :func:`conv_frequency_matrices`:
  * kernels larger than the input wrap around (taps are summed modulo the image size), which is
    exactly what a circular conv does;
  * dilation spreads the taps before the split; groups make the operator block-diagonal, so
    σ_max is the max over groups (depthwise convs included);
  * if ``h`` (or ``w``) is not a multiple of the stride, the operator is not block-circulant.
    We then compute σ_max of the circular conv on the input **rounded up** to the next multiple
    of the stride, ``ceil(h/s)·s`` — a slightly larger periodic image, not the ``h × w`` map.

Computing every frequency every step is the expensive part, so :class:`ConvSpectralEstimator`
amortizes it: a *refresh* (every ``refresh_every`` optimizer steps) runs warm-started batched
power iteration over all frequencies and remembers the few frequencies with the largest
estimates; between refreshes the differentiable value only evaluates those candidates. At a
single frequency ``f`` the block applied to the stored vector is exact and needs no FFT:
``K̂(f) v = Σ_{c,a,b} K[:, c, a, b] · v[c, a mod s_h, b mod s_w] · exp(-2πi(u·⌊a/s_h⌋/H +
v·⌊b/s_w⌋/W))``, i.e. one thin matrix product with the kernel in its own memory layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.regularizers.threads import single_threaded

# Complex entries per frequency chunk in a refresh or exact SVD: bounds transient memory.
_CHUNK_ELEMENTS = 1 << 22


class _KernelProduct(torch.autograd.Function):
    """``x @ kernelᵀ`` whose backward (the kernel's gradient) is single-threaded on CPU as well."""

    @staticmethod
    def forward(ctx, kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(kernel, x)
        with single_threaded(kernel.device):
            return x @ kernel.T

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kernel, x = ctx.saved_tensors
        with single_threaded(grad.device):
            grad_kernel = grad.T @ x if ctx.needs_input_grad[0] else None
            grad_x = grad @ kernel if ctx.needs_input_grad[1] else None
        return grad_kernel, grad_x


def kernel_product(kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x @ kernelᵀ`` for a 2-D ``kernel`` ``(rows, n)`` and ``x`` ``(k, n)``: ``(k, rows)``."""
    return _KernelProduct.apply(kernel, x)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise ValueError(f"expected an int or a pair, got {value!r}")
    return (int(value[0]), int(value[1]))


def _real_dtype(weight: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (tests, gradcheck); anything else is computed in float32."""
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class ConvGeometry:
    """Everything besides the kernel that fixes a conv as a linear operator."""

    input_hw: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @classmethod
    def of(cls, conv: nn.Conv2d, input_hw: tuple[int, int]) -> ConvGeometry:
        return cls(_pair(input_hw), _pair(conv.stride), _pair(conv.dilation), conv.groups)

    @property
    def padded_hw(self) -> tuple[int, int]:
        """Input size rounded up to a multiple of the stride (equal to it when it divides)."""
        (h, w), (sh, sw) = self.input_hw, self.stride
        return (math.ceil(h / sh) * sh, math.ceil(w / sw) * sw)

    @property
    def freq_hw(self) -> tuple[int, int]:
        """Size ``(H, W)`` of each polyphase component, i.e. of the DFT grid."""
        (ph, pw), (sh, sw) = self.padded_hw, self.stride
        return (ph // sh, pw // sw)

    @property
    def num_freqs(self) -> int:
        """Frequencies in the one-sided spectrum ``H × (W//2 + 1)``; the rest are conjugates."""
        H, W = self.freq_hw
        return H * (W // 2 + 1)

    def canonical_mask(self) -> torch.Tensor:
        """False for the one-sided frequencies whose conjugate is also in the one-sided set.

        For a real kernel, the matrix at ``-f`` is the conjugate of the one at ``f`` (same singular
        values); on the columns ``v = 0`` and ``v = W/2`` both appear, and keeping one of each pair
        stops the candidate list from spending two slots on one value.
        """
        H, W = self.freq_hw
        Wh = W // 2 + 1
        u = torch.arange(H).unsqueeze(1).expand(H, Wh)
        v = torch.arange(Wh).unsqueeze(0).expand(H, Wh)
        self_conjugate_column = (v == 0) | ((W % 2 == 0) & (v == W // 2))
        keep = ~self_conjugate_column | (u <= (H - u) % H)
        return keep.reshape(-1)


def _fold(kernel: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Sum taps modulo ``size`` along ``dim``: a kernel wider than a periodic image wraps around."""
    length = kernel.shape[dim]
    if length <= size:
        return kernel
    reps = math.ceil(length / size)
    pad = [0, 0] * (kernel.dim() - 1 - dim) + [0, reps * size - length]
    kernel = F.pad(kernel, pad)
    shape = kernel.shape[:dim] + (reps, size) + kernel.shape[dim + 1 :]
    return kernel.reshape(shape).sum(dim)


def polyphase_kernel(weight: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """Kernel as ``(G, c_out/G, c_in/G, A, s_h, B, s_w)``: tap ``(p·s_h + i, q·s_w + j)`` at ``[p, i, q, j]``.

    Dilation is applied and taps are folded modulo the (stride-rounded) image size first, so
    component ``(i, j)`` at coarse position ``(p, q)`` is ``K[:, :, p·s_h + i, q·s_w + j]`` of the
    kernel zero-padded to the image; ``A ≤ H`` and ``B ≤ W``.
    """
    c_out, c_in_g, kh, kw = weight.shape
    groups = geom.groups
    if c_out % groups:
        raise ValueError(f"c_out={c_out} is not divisible by groups={groups}")
    (dh, dw), (sh, sw), (ph, pw) = geom.dilation, geom.stride, geom.padded_hw
    if dh > 1 or dw > 1:
        dilated = weight.new_zeros(c_out, c_in_g, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        dilated[:, :, ::dh, ::dw] = weight
        weight = dilated
    weight = _fold(_fold(weight, ph, 2), pw, 3)
    A, B = math.ceil(weight.shape[2] / sh), math.ceil(weight.shape[3] / sw)
    if (A * sh, B * sw) != tuple(weight.shape[2:]):
        weight = F.pad(weight, (0, B * sw - weight.shape[3], 0, A * sh - weight.shape[2]))
    return weight.reshape(groups, c_out // groups, c_in_g, A, sh, B, sw)


def conv_frequency_matrices(
    weight: torch.Tensor,
    input_hw: tuple[int, int],
    stride: int | tuple[int, int] = 1,
    *,
    groups: int = 1,
    dilation: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """Per-frequency blocks of the circular conv operator, by FFT: ``(G, H·(W//2+1), r, c)``.

    ``r = c_out/G`` and ``c = (c_in/G)·s_h·s_w`` with columns ordered (channel, row phase, column
    phase). Only the one-sided spectrum is returned; the other frequencies are complex
    conjugates with the same singular values. Differentiable in ``weight``.
    """
    geom = ConvGeometry(_pair(input_hw), _pair(stride), _pair(dilation), groups)
    poly = polyphase_kernel(weight.to(_real_dtype(weight)), geom)
    G, r, c, _, sh, _, sw = poly.shape
    H, W = geom.freq_hw
    spectrum = torch.fft.rfft2(poly.permute(0, 1, 2, 4, 6, 3, 5), s=(H, W))
    spectrum = spectrum.permute(0, 5, 6, 1, 2, 3, 4)  # (G, H, W', r, c, s_h, s_w)
    return spectrum.reshape(G, geom.num_freqs, r, c * sh * sw)


def _max_svdval(matrices: torch.Tensor) -> torch.Tensor:
    """Largest singular value over a batch ``(..., r, c)``, chunked over the leading axis."""
    flat = matrices.reshape(-1, *matrices.shape[-2:])
    per_matrix = max(1, flat.shape[-1] * flat.shape[-2])
    chunk = max(1, _CHUNK_ELEMENTS // per_matrix)
    return torch.stack(
        [torch.linalg.svdvals(flat[i : i + chunk]).amax() for i in range(0, flat.shape[0], chunk)]
    ).amax()


def linear_sigma_max(weight: torch.Tensor) -> torch.Tensor:
    """Exact σ_max of a weight matrix (any trailing dims are flattened into columns)."""
    return torch.linalg.svdvals(weight.reshape(weight.shape[0], -1).to(_real_dtype(weight)))[0]


def conv_sigma_max(
    weight: torch.Tensor,
    input_hw: tuple[int, int],
    stride: int | tuple[int, int] = 1,
    *,
    groups: int = 1,
    dilation: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """Exact σ_max of a bias-free Conv2d acting on circularly padded ``input_hw`` images.

    Max over frequencies and groups of the top singular value of each block from
    :func:`conv_frequency_matrices` (SVD of every block). Differentiable. When ``input_hw`` is
    not a multiple of the stride, this is σ_max on the input rounded up to the next multiple of
    the stride (see the module docstring). A 1×1 kernel is a channel-mixing matrix at every
    frequency, so its σ_max is the matrix norm of ``weight`` per group, for any stride.
    """
    if weight.dim() != 4:
        raise ValueError(
            f"expected a (c_out, c_in/groups, kh, kw) kernel, got {tuple(weight.shape)}"
        )
    if weight.shape[2:] == (1, 1):
        blocks = weight.to(_real_dtype(weight)).reshape(groups, weight.shape[0] // groups, -1)
        return _max_svdval(blocks)
    matrices = conv_frequency_matrices(weight, input_hw, stride, groups=groups, dilation=dilation)
    return _max_svdval(matrices)


def dft_taps(poly: torch.Tensor) -> torch.Tensor:
    """The polyphase kernel as a complex ``(A·B) × (G·r·c·s_h·s_w)`` matrix for :func:`dft_blocks`.

    Computing it once per refresh, not once per chunk of frequencies, saves a kernel-sized copy
    per chunk.
    """
    G, r, c, A, sh, B, sw = poly.shape
    cdtype = torch.complex128 if poly.dtype == torch.float64 else torch.complex64
    return poly.permute(3, 5, 0, 1, 2, 4, 6).reshape(A * B, -1).to(cdtype)


def dft_blocks(
    poly: torch.Tensor, geom: ConvGeometry, freqs: torch.Tensor, taps: torch.Tensor | None = None
) -> torch.Tensor:
    """Operator blocks ``(G, T, r, c)`` at one-sided frequency indices ``freqs`` by a direct DFT.

    ``K̂_ij(u, v) = Σ_{p,q} K[p·s_h + i, q·s_w + j] · exp(-2πi(u·p/H + v·q/W))`` with
    ``u = f // (W//2+1)``, ``v = f % (W//2+1)``: the same numbers as the FFT in
    :func:`conv_frequency_matrices`, but only at the requested frequencies, computed as one
    complex matrix product over the tiny ``A × B`` polyphase support. ``taps`` is
    ``dft_taps(poly)`` when the caller already has it.
    """
    G, r, c, A, sh, B, sw = poly.shape
    H, W = geom.freq_hw
    Wh = W // 2 + 1
    u, v = (freqs // Wh).to(poly.dtype), (freqs % Wh).to(poly.dtype)
    p = torch.arange(A, device=poly.device, dtype=poly.dtype)
    q = torch.arange(B, device=poly.device, dtype=poly.dtype)
    angle = (-2 * math.pi) * (u[:, None, None] * p[:, None] / H + v[:, None, None] * q / W)
    phase = torch.polar(torch.ones_like(angle), angle).reshape(freqs.shape[0], A * B)
    blocks = phase @ (dft_taps(poly) if taps is None else taps)  # (T, G·r·c·s²), written once
    return blocks.reshape(-1, G, r, c * sh * sw).transpose(0, 1)


def _normalize(x: torch.Tensor, fallback: torch.Tensor, eps: float = 1e-30) -> torch.Tensor:
    """Unit vectors along the last axis; where ``x`` vanished, keep ``fallback`` (already unit)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return torch.where(norm > eps, x / norm.clamp_min(eps), fallback)


def _matvec(matrices: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``M x`` for batches ``(..., r, c)`` and ``(..., c)``."""
    return (matrices @ x.unsqueeze(-1)).squeeze(-1)


def _rmatvec(matrices: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``Mᴴ y`` as ``conj(yᴴ M)``: reads ``M`` row-major instead of through a strided transpose."""
    return (y.conj().unsqueeze(-2) @ matrices).squeeze(-2).conj()


def power_iteration(
    matrices: torch.Tensor, v: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched power iteration for the top right singular vector; complex or real.

    ``matrices``: ``(..., r, c)``; ``v``: ``(..., c)`` unit vectors (warm start). Each step is
    ``u ← M v / ‖M v‖``, ``v ← Mᴴ u / ‖Mᴴ u‖``. Returns the new ``v`` and the estimate ``‖Mᴴ u‖``
    of the last step (``‖M v‖`` for zero steps): a lower bound on σ_max of each matrix, at least
    ``‖M v‖`` of the previous iterate, and exact once ``v`` has converged.
    """
    if steps < 1:
        return v, torch.linalg.vector_norm(_matvec(matrices, v), dim=-1)
    for _ in range(steps):
        u = _normalize(_matvec(matrices, v), torch.zeros_like(v[..., :1]))
        w = _rmatvec(matrices, u)
        v = _normalize(w, v)
    return v, torch.linalg.vector_norm(w, dim=-1)


def _squared_norm(x: torch.Tensor) -> torch.Tensor:
    """``‖x‖²`` along the last axis, through real arithmetic (no |z| kink at zero)."""
    if x.is_complex():
        x = torch.view_as_real(x).flatten(-2)
    return x.pow(2).sum(-1)


def _random_unit(shape: tuple[int, ...], complex_: bool, dtype, device, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(*shape, 2 if complex_ else 1, generator=gen, dtype=torch.float64)
    v = torch.view_as_complex(v) if complex_ else v.squeeze(-1)
    v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return (torch.view_as_real(v) if complex_ else v).to(device=device, dtype=dtype)


def _forget_ready(module: nn.Module, _incompatible_keys) -> None:
    module._invalidate()


class SpectralEstimator(nn.Module):
    """Persistent, warm-started power-iteration state for one layer's σ_max.

    ``refresh`` re-estimates from scratch-cheap warm starts (no autograd); ``value`` returns the
    differentiable ``σ²`` with the stored vectors held constant, optionally after ``steps`` more
    power steps on the matrices it evaluates anyway; ``exact`` is the full SVD for logging.
    Vectors are registered buffers, so checkpoints resume them exactly. Subclasses register a
    boolean ``ready`` buffer; it is mirrored in Python so a training step does not synchronize
    with the GPU to read it.
    """

    def __init__(self):
        super().__init__()
        self._invalidate()
        self.register_load_state_dict_post_hook(_forget_ready)

    def _invalidate(self) -> None:
        """Drop Python-side caches of buffer contents (after loading a state dict)."""
        self._ready = False

    def is_ready(self) -> bool:
        """Whether a refresh has happened (in this process or before the checkpoint)."""
        if not self._ready:
            self._ready = bool(self.ready)
        return self._ready

    def _mark_ready(self) -> None:
        self.ready.fill_(True)
        self._ready = True

    def refresh(self, weight: torch.Tensor, steps: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def value(self, weight: torch.Tensor, steps: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def exact(self, weight: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class MatrixSpectralEstimator(SpectralEstimator):
    """σ_max of a weight matrix: Linear layers, and 1×1 convs (per group; stride-independent)."""

    def __init__(
        self, weight: torch.Tensor, groups: int = 1, init_power_steps: int = 20, seed: int = 0
    ):
        super().__init__()
        self.groups = groups
        self.init_power_steps = init_power_steps
        cols = weight[0].numel() if weight.dim() > 1 else 1
        dtype = _real_dtype(weight)
        self.register_buffer("v", _random_unit((groups, cols), False, dtype, weight.device, seed))
        self.register_buffer("ready", torch.tensor(False, device=weight.device))

    def _matrices(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.to(_real_dtype(weight)).reshape(
            self.groups, weight.shape[0] // self.groups, -1
        )

    @torch.no_grad()
    def refresh(self, weight: torch.Tensor, steps: int) -> None:
        if not self.is_ready():
            steps = max(steps, self.init_power_steps)
        matrices = self._matrices(weight.detach())
        v, _ = power_iteration(matrices, self.v.to(matrices.dtype), steps)
        self.v.copy_(v)
        self._mark_ready()

    def value(self, weight: torch.Tensor, steps: int) -> torch.Tensor:
        """``max_g ‖W_g v_g‖²`` with ``v`` held constant, then ``steps`` power steps for next time."""
        if not self.is_ready():
            self.refresh(weight, steps)
        matrices = self._matrices(weight)
        v = self.v.to(matrices.dtype, copy=True)  # the buffer is updated below; autograd keeps v
        if self.groups == 1:  # reshape (a view), not matrices[0]: cheaper to backpropagate
            y = kernel_product(weight.to(matrices.dtype).reshape(weight.shape[0], -1), v)
        else:
            y = _matvec(matrices, v)
        value = _squared_norm(y).amax()
        if steps:
            with torch.no_grad():
                m = matrices.detach()
                u = _normalize(y.detach(), torch.zeros_like(v[..., :1]))
                v = _normalize(_rmatvec(m, u), v)
                if steps > 1:
                    v, _ = power_iteration(m, v, steps - 1)
            self.v.copy_(v)
        return value

    @torch.no_grad()
    def exact(self, weight: torch.Tensor) -> torch.Tensor:
        return _max_svdval(self._matrices(weight))


class ConvSpectralEstimator(SpectralEstimator):
    """σ_max of a k×k Conv2d on its recorded input size, amortized across optimizer steps.

    Buffers: ``v`` — one complex unit vector per (group, one-sided frequency), stored as a real
    ``(..., 2)`` view; ``candidates`` — ``(group, frequency)`` of the ``top_frequencies`` largest
    estimates at the last refresh; ``ready`` — whether a refresh has happened.

    A refresh runs ``steps`` power steps at every frequency, then up to ``refine_steps`` more on
    the ``pool_factor × top_frequencies`` best (capped at about two extra passes over the
    spectrum, and by memory), and keeps the best of those as candidates.

    Between refreshes the value is ``max_t ‖K̂(f_t) v_t‖²`` over the candidates only. Taking the
    argmax from the last refresh is what makes a step cheap; keeping a few candidates (and
    stepping their vectors every step) covers a top frequency that overtakes another between
    refreshes. A frequency outside the candidates that becomes the largest is only seen at
    the next refresh.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        geom: ConvGeometry,
        top_frequencies: int = 4,
        init_power_steps: int = 20,
        seed: int = 0,
        pool_factor: int = 8,
        refine_steps: int = 10,
    ):
        super().__init__()
        self.geom = geom
        self.top_frequencies = top_frequencies
        self.init_power_steps = init_power_steps
        self.pool_factor = pool_factor
        self.refine_steps = refine_steps
        c_out, c_in_g = weight.shape[:2]
        sh, sw = geom.stride
        self.rows, self.cols = c_out // geom.groups, c_in_g * sh * sw
        dtype = _real_dtype(weight)
        shape = (geom.groups, geom.num_freqs, self.cols)
        self.register_buffer("v", _random_unit(shape, True, dtype, weight.device, seed))
        count = min(top_frequencies, geom.groups * geom.num_freqs)
        self.register_buffer(
            "candidates", torch.zeros(count, 2, dtype=torch.long, device=weight.device)
        )
        self.register_buffer("ready", torch.tensor(False, device=weight.device))
        self.register_buffer("canonical", geom.canonical_mask().to(weight.device), persistent=False)

    def _vectors(self, dtype: torch.dtype, *index) -> torch.Tensor:
        return torch.view_as_complex(self.v[index].to(dtype).contiguous())

    def _store(self, vectors: torch.Tensor, *index) -> None:
        self.v[index] = torch.view_as_real(vectors).to(self.v.dtype)

    @torch.no_grad()
    def refresh(self, weight: torch.Tensor, steps: int) -> None:
        """Power steps at every frequency (in chunks of frequencies); new candidates."""
        if not self.is_ready():
            steps = max(steps, self.init_power_steps)
        rdtype = _real_dtype(weight)
        poly = polyphase_kernel(weight.detach().to(rdtype), self.geom)
        n_freqs = self.geom.num_freqs
        chunk = max(1, _CHUNK_ELEMENTS // max(1, self.geom.groups * self.rows * self.cols))
        freqs = torch.arange(n_freqs, device=weight.device)
        taps = dft_taps(poly)
        sigmas = []
        for f0 in range(0, n_freqs, chunk):
            span = slice(f0, min(n_freqs, f0 + chunk))
            blocks = dft_blocks(poly, self.geom, freqs[span], taps)
            v, sigma = power_iteration(blocks, self._vectors(rdtype, slice(None), span), steps)
            self._store(v, slice(None), span)
            sigmas.append(sigma)
        sigma = torch.cat(sigmas, dim=1).masked_fill(~self.canonical, -1.0).reshape(-1)
        # Estimates after a few warm-started steps are close to each other when the spectrum
        # is flat, so ranking them directly picks the wrong frequencies. Converge a pool of the
        # best ones further (cheap: only the pool's blocks) and rank that instead.
        count = self.candidates.shape[0]
        pool_size = min(sigma.numel(), max(count, min(self.pool_factor * count, chunk)))
        # at most ~2 extra passes' worth of block products, so small spectra stay cheap
        refine_steps = max(1, min(self.refine_steps, 2 * sigma.numel() // pool_size))
        pool = torch.topk(sigma, pool_size)
        g, f = pool.indices // n_freqs, pool.indices % n_freqs
        blocks = dft_blocks(poly, self.geom, f, taps)[g, torch.arange(g.numel(), device=g.device)]
        v, refined = power_iteration(blocks, self._vectors(rdtype, g, f), refine_steps)
        self._store(v, g, f)
        top = torch.topk(refined, self.candidates.shape[0]).indices
        self.candidates.copy_(torch.stack([g[top], f[top]], dim=1))
        self._phase_cache = None
        self._mark_ready()

    def _invalidate(self) -> None:
        super()._invalidate()
        self._phase_cache: torch.Tensor | None = None

    def _phases(self, dtype: torch.dtype, A: int, B: int) -> torch.Tensor:
        """``φ_t[p, q] = exp(-2πi(u_t·p/H + v_t·q/W))`` at the candidates, ``(T, 1, A, 1, B, 1)``.

        Cached until the candidates change (refresh or state load).
        """
        cached = self._phase_cache
        if cached is not None and cached.real.dtype == dtype and cached.device == self.v.device:
            return cached
        H, W = self.geom.freq_hw
        Wh = W // 2 + 1
        f = self.candidates[:, 1]
        u, v = (f // Wh).to(dtype), (f % Wh).to(dtype)
        p = torch.arange(A, device=f.device, dtype=dtype)
        q = torch.arange(B, device=f.device, dtype=dtype)
        angle = (-2 * math.pi) * (u[:, None, None] * p[:, None] / H + v[:, None, None] * q / W)
        self._phase_cache = torch.polar(torch.ones_like(angle), angle).reshape(-1, 1, A, 1, B, 1)
        return self._phase_cache

    def _multiply(self, taps: torch.Tensor, x: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
        """Per candidate ``K x_t`` (or ``Kᵀ x_t``) for real taps ``(G, rows, n)``, complex ``x``.

        With one group this is a single thin GEMM of the stacked real and imaginary parts
        against the kernel in its own layout (no copy), oriented so BLAS streams the kernel once;
        with groups, each candidate uses its own group's block.
        """
        T = x.shape[0]
        if taps.shape[0] == 1:
            kernel = taps.reshape(taps.shape[1], taps.shape[2])  # a view of the weight
            stacked = torch.cat([x.real, x.imag], dim=0)  # (2T, ·)
            y = stacked @ kernel if adjoint else kernel_product(kernel, stacked)
            return torch.complex(y[:T], y[T:])
        block = taps[self.candidates[:, 0]]
        if adjoint:
            block = block.transpose(1, 2)
        y = torch.bmm(block, torch.stack([x.real, x.imag], dim=-1))  # (T, ·, 2)
        return torch.view_as_complex(y.contiguous())

    def value(self, weight: torch.Tensor, steps: int) -> torch.Tensor:
        """``max_t ‖K̂(f_t) v_t‖²`` over the candidates, computed in kernel space.

        ``K̂(f) v = Σ_{c,a,b} K[:, c, a, b] · v[c, a mod s_h, b mod s_w] · φ[a div s_h, b div s_w]``,
        so each candidate costs one column of a GEMM with the kernel in its own memory layout;
        no per-frequency matrix is formed. Afterwards ``steps`` power steps (no autograd) advance
        the candidates' vectors for the next call, reusing ``K̂ v`` for the first half-step.
        """
        if not self.is_ready():
            self.refresh(weight, steps)
            steps = 0
        rdtype = _real_dtype(weight)
        poly = polyphase_kernel(weight.to(rdtype), self.geom)
        G, r, c, A, sh, B, sw = poly.shape
        taps = poly.reshape(G, r, -1)  # a view of the weight for plain stride-1 convs
        phase = self._phases(rdtype, A, B)
        g, f = self.candidates[:, 0], self.candidates[:, 1]
        v = self._vectors(rdtype, g, f).reshape(-1, c, 1, sh, 1, sw)
        y = self._multiply(taps, (v * phase).flatten(1))  # (T, r) = K̂(f_t) v_t
        value = _squared_norm(y).amax()
        if steps:
            with torch.no_grad():
                y = y.detach()
                for step in range(steps):
                    if step:
                        y = self._multiply(taps.detach(), (v * phase).flatten(1))
                    u = _normalize(y, torch.zeros_like(y[:, :1]))
                    w = self._multiply(taps.detach(), u, adjoint=True).reshape(-1, c, A, sh, B, sw)
                    new = (w * phase.conj()).sum(dim=(2, 4))  # K̂(f)ᴴ u
                    v = _normalize(new.flatten(1), v.flatten(1)).reshape(v.shape)
            self._store(v.flatten(1), g, f)
        return value

    @torch.no_grad()
    def exact(self, weight: torch.Tensor) -> torch.Tensor:
        g = self.geom
        return conv_sigma_max(weight, g.input_hw, g.stride, groups=g.groups, dilation=g.dilation)


def make_estimator(
    module: nn.Module,
    input_hw: tuple[int, int] | None = None,
    top_frequencies: int = 4,
    init_power_steps: int = 20,
    seed: int = 0,
) -> SpectralEstimator:
    """The estimator for a Linear or Conv2d layer (a conv needs its recorded input size)."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        return MatrixSpectralEstimator(weight, 1, init_power_steps, seed)
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"no spectral estimator for {type(module).__name__}")
    if weight.shape[2:] == (1, 1):
        return MatrixSpectralEstimator(weight, module.groups, init_power_steps, seed)
    if input_hw is None:
        raise ValueError("a k×k conv needs the spatial size of its input")
    geom = ConvGeometry.of(module, input_hw)
    return ConvSpectralEstimator(weight, geom, top_frequencies, init_power_steps, seed)
