"""Metrics as plain functions over tensors: code usage, collapse-theory probes, PSNR and SSIM.

Code usage (what "collapse" means operationally): a codebook of K codes collapses when few of them are
ever selected. :func:`utilization` is the fraction of the K codes used at least once, :func:`perplexity`
is ``exp`` of the entropy of the usage distribution (K for uniform use, 1 when one code takes every
token). :class:`CodeUsageWindow` tracks both over a sliding window of training steps, plus dead codes.

Building blocks of the collapse-theory probes (``benchmark.probes`` holds the probes themselves, with
what each tests and its value by construction): :func:`gradient_coverage` is the fraction of effective
code vectors a gradient step would move — by construction VQ's batch usage and SimVQ's 1.0, so it
documents the mechanism of Zhu et al. 2024 (arXiv 2411.02038) and is no evidence for it;
:func:`effective_rank` (Roy & Vetterli 2007) measures how many directions a set of vectors spans.

Reconstruction: :func:`psnr` (mean of per-image PSNR, not PSNR of the batch mean MSE) and :func:`ssim`
(Wang et al. 2004, Gaussian 11×11 window, σ = 1.5), both over float images ``(N, C, H, W)``.
"""
from __future__ import annotations

import warnings
from collections import deque

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantizers.base import Quantizer, check_float, check_int


# ----------------------------------------------------------------------------- code usage
def code_counts(indices: Tensor, codebook_size: int) -> Tensor:
    """How often each of the ``codebook_size`` codes occurs in ``indices`` (any shape): int64 ``(K,)``.

    Raises ValueError for non-integer indices or indices outside ``[0, codebook_size)``.
    """
    codebook_size = check_int("codebook_size", codebook_size, minimum=1)
    if not isinstance(indices, Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool \
            or indices.is_complex():
        kind = indices.dtype if isinstance(indices, Tensor) else type(indices).__name__
        raise ValueError(f"indices must be an integer tensor; got {kind}")
    flat = indices.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= codebook_size):
        raise ValueError(
            f"indices must lie in [0, codebook_size={codebook_size}); "
            f"got values in [{int(flat.min())}, {int(flat.max())}]"
        )
    return torch.bincount(flat, minlength=codebook_size)


def _check_counts(counts: Tensor) -> Tensor:
    if not isinstance(counts, Tensor) or counts.dim() != 1 or counts.numel() == 0:
        shape = tuple(counts.shape) if isinstance(counts, Tensor) else type(counts).__name__
        raise ValueError(f"counts must be a non-empty 1-D tensor (one count per code); got {shape}")
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    return counts


def utilization(counts: Tensor) -> float:
    """Fraction of the K codes used at least once: ``#{k : counts[k] > 0} / K``, in [0, 1]."""
    counts = _check_counts(counts)
    return float((counts > 0).sum()) / counts.numel()


def perplexity(counts: Tensor) -> float:
    """``exp(H(p))`` with ``p = counts / sum(counts)`` and H the entropy in nats: the effective number of
    codes in use, in [1, K]. Raises ValueError when every count is zero (no usage to measure)."""
    counts = _check_counts(counts).double()
    total = counts.sum()
    if total <= 0:
        raise ValueError("perplexity needs at least one used code; counts sum to zero")
    p = counts[counts > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


class CodeUsageWindow:
    """Code usage over the most recent training steps.

    ``update(indices, step)`` records the codes one step selected. Then, relative to the latest step
    ``t`` seen, :meth:`utilization` and :meth:`perplexity` describe the usage pooled over steps
    ``(t - window, t]`` and :meth:`dead_fraction` is the fraction of codes used in none of the steps
    ``(t - dead_window, t]``. Before ``dead_window`` steps have passed, a code not yet used counts as dead.
    Several updates with the same step (gradient accumulation) pool into that step.

    Memory stays proportional to the tokens per step, not to K × window: each step keeps only its
    distinct codes and their counts; the pooled window counts and each code's last-used step are dense.
    """

    def __init__(self, codebook_size: int, window: int, dead_window: int):
        self.codebook_size = check_int("codebook_size", codebook_size, minimum=1)
        self.window = check_int("window", window, minimum=1)
        self.dead_window = check_int("dead_window", dead_window, minimum=1)
        self._window_counts = torch.zeros(self.codebook_size, dtype=torch.long)
        self._recent: deque[tuple[int, Tensor, Tensor]] = deque()  # (step, codes, counts) per update
        self._last_used = torch.full((self.codebook_size,), -1, dtype=torch.long)  # -1: never used
        self._latest_step: int | None = None

    def update(self, indices: Tensor, step: int) -> None:
        """Record the code indices selected at ``step`` (steps must not decrease)."""
        step = check_int("step", step, minimum=0)
        if self._latest_step is not None and step < self._latest_step:
            raise ValueError(f"step must not decrease; got {step} after {self._latest_step}")
        counts = code_counts(indices.detach().cpu(), self.codebook_size)
        codes = counts.nonzero().squeeze(1)
        used = counts[codes]
        self._latest_step = step
        self._recent.append((step, codes, used))
        self._window_counts.index_add_(0, codes, used)
        self._last_used[codes] = step
        self._forget_before(step - self.window + 1)

    def _forget_before(self, first_kept_step: int) -> None:
        while self._recent and self._recent[0][0] < first_kept_step:
            _, codes, used = self._recent.popleft()
            self._window_counts.index_add_(0, codes, -used)

    def _require_updates(self) -> None:
        if self._latest_step is None:
            raise ValueError("CodeUsageWindow has no usage yet; call update(indices, step) first")

    def counts(self) -> Tensor:
        """Pooled counts ``(K,)`` over the last ``window`` steps (a copy)."""
        self._require_updates()
        return self._window_counts.clone()

    def utilization(self) -> float:
        """Fraction of the K codes used at least once within the last ``window`` steps."""
        self._require_updates()
        return utilization(self._window_counts)

    def perplexity(self) -> float:
        """``exp(entropy)`` of the usage pooled over the last ``window`` steps."""
        self._require_updates()
        return perplexity(self._window_counts)

    def dead_fraction(self) -> float:
        """Fraction of the K codes not used within the last ``dead_window`` steps."""
        self._require_updates()
        first_live_step = self._latest_step - self.dead_window + 1
        dead = (self._last_used < first_live_step) | (self._last_used < 0)
        return float(dead.sum()) / self.codebook_size


# ----------------------------------------------------------------------------- collapse probes
def effective_rank(matrix: Tensor) -> float:
    """Effective rank (Roy & Vetterli, "The effective rank: a measure of effective dimensionality",
    EUSIPCO 2007): ``exp(H(p))`` with ``p = s / sum(s)``, s the singular values, H in nats.

    ``matrix`` is ``(..., d)``: leading dims are flattened, so each row is one vector (a ``(K, d)``
    codebook, or encoder outputs ``(batch, tokens, d)``). Lies in [1, min(rows, d)]; equals the rank for
    a matrix whose non-zero singular values are equal. A zero matrix has effective rank 0. Computed in
    float64 so tiny singular values of a collapsed codebook do not turn into noise.
    """
    if not isinstance(matrix, Tensor) or matrix.dim() < 2:
        shape = tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
        raise ValueError(f"matrix must have at least 2 dims (rows, d); got {shape}")
    rows = matrix.detach().reshape(-1, matrix.shape[-1]).double()
    if rows.numel() == 0:
        raise ValueError(f"matrix must not be empty; got shape {tuple(matrix.shape)}")
    if not torch.isfinite(rows).all():
        raise ValueError("matrix contains NaN or infinite values")
    singular_values = torch.linalg.svdvals(rows)
    total = singular_values.sum()
    if total <= 0:
        return 0.0
    p = singular_values[singular_values > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


class _EffectiveCodebook(nn.Module):
    """``forward()`` returns ``quantizer.codebook()``, so torch.func.functional_call can evaluate the
    effective codebook with substituted parameters (functional_call only calls ``forward``)."""

    def __init__(self, quantizer: Quantizer):
        super().__init__()
        self.quantizer = quantizer

    def forward(self) -> Tensor:
        return self.quantizer.codebook()


def gradient_coverage(quantizer: Quantizer) -> float | None:
    """Fraction of effective code vectors that the current gradients would move: the collapse probe of
    Zhu et al. 2024 (arXiv 2411.02038, Sec. 3).

    Call after ``loss.backward()`` and before ``optimizer.step()``. With θ the quantizer's parameters
    that hold a ``.grad`` and ``q(θ) = quantizer.codebook()`` ``(K, d)``, the first-order change of the
    codebook along a descent step is the Jacobian-vector product ``J_q(θ) · (−∇θ)`` (torch.func.jvp over
    torch.func.functional_call). A row k counts as covered when its change is non-zero.

    Vanilla VQ: exactly the fraction of codes selected in the batch (only they get a gradient).
    SimVQ (q = W(C)): every row moves through W, so 1.0. Measuring the gradient rather than "did the row
    change after optimizer.step()" matters: Adam's momentum and weight decay move rows that received no
    gradient this step.

    These values hold **by construction**: 1.0 for SimVQ even when its training collapses, the batch's
    selected fraction for VQ whatever happens to its dead codes. The probe restates the mechanism the paper
    describes; it is not evidence for or against the paper's theory (issue 12). It is logged as
    ``keys.PROBE_CODES_WITH_GRADIENT`` through :func:`benchmark.probes.codes_with_gradient`, whose module
    lists the probes that can be evidence (dead-code revival, unused-code distance, distribution gap).

    Returns None where the probe does not apply: the quantizer does not learn its codebook by gradient
    (``learns_codebook_by_gradient`` False: EMA-VQ, whose forward pass moves exactly the codes assigned
    in the batch, which the trainer logs instead; FSQ/LFQ fixed grids), has no codebook, or no parameter
    holds a gradient.
    """
    if not isinstance(quantizer, Quantizer):
        raise ValueError(f"quantizer must be a quantizers.Quantizer; got {type(quantizer).__name__}")
    if not quantizer.learns_codebook_by_gradient:
        return None
    wrapper = _EffectiveCodebook(quantizer)
    graded = {name: p for name, p in wrapper.named_parameters() if p.grad is not None}
    if not graded:
        return None
    primals = {name: p.detach() for name, p in graded.items()}
    tangents = {name: -p.grad.detach() for name, p in graded.items()}

    def codebook_of(params: dict[str, Tensor]) -> Tensor:
        return torch.func.functional_call(wrapper, params, ())

    with warnings.catch_warnings():
        # torch's first forward-mode AD call scripts its jvp decompositions and warns that
        # torch.jit.script is deprecated: torch-internal, nothing the caller can act on
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        codebook, change = torch.func.jvp(codebook_of, (primals,), (tangents,))
    if codebook is None:
        return None
    moved_rows = change.reshape(codebook.shape[0], -1).ne(0).any(dim=1)
    return float(moved_rows.sum()) / codebook.shape[0]


def moved_fraction(before: Tensor, after: Tensor, rtol: float = 0.0) -> float:
    """Fraction of rows of a ``(K, d)`` codebook that changed between ``before`` and ``after``.

    A row k counts as moved when ``||after_k − before_k|| > rtol · ||before_k||``; the default rtol = 0
    counts any change. For EMA-VQ pass a small rtol such as 1e-6: its Laplace
    smoothing (VQ-VAE App. A.1) rescales *every* row by a data-free global factor each update (relative
    size below 1e-6 in early training, measured), so rtol = 0 reports 1.0 while rtol = 1e-6 reports the
    rows that received tokens; this is why the trainer's EMA probe is the batch's assigned fraction.
    """
    rtol = check_float("rtol", rtol, minimum=0.0)
    for name, t in (("before", before), ("after", after)):
        if not isinstance(t, Tensor) or t.dim() != 2:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (K, d) codebook; got {shape}")
    if before.shape != after.shape:
        raise ValueError(f"before and after must have the same shape; got {tuple(before.shape)} "
                         f"and {tuple(after.shape)}")
    before, after = before.detach(), after.detach().to(before.device)
    change = (after - before).norm(dim=1)
    moved = change > rtol * before.norm(dim=1) if rtol > 0 else change > 0
    return float(moved.sum()) / before.shape[0]


# ----------------------------------------------------------------------------- reconstruction
def _check_image_pair(originals: Tensor, reconstructions: Tensor, data_range: float) -> float:
    for name, t in (("originals", originals), ("reconstructions", reconstructions)):
        if not isinstance(t, Tensor) or t.dim() != 4 or not t.dtype.is_floating_point:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a float tensor (N, C, H, W); got {shape}")
        if t.shape[0] == 0:
            raise ValueError(f"{name} must hold at least one image")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals and reconstructions must have the same shape; got "
                         f"{tuple(originals.shape)} and {tuple(reconstructions.shape)}")
    return check_float("data_range", data_range, minimum=0.0, inclusive=False)


def psnr(originals: Tensor, reconstructions: Tensor, data_range: float = 1.0) -> float:
    """Mean over images of ``10·log10(data_range² / MSE_i)``, MSE_i over one image's C×H×W values.

    Per-image, then averaged (the convention of image-restoration papers); PSNR of the batch-mean MSE
    would weight bad images less. An exact reconstruction has infinite PSNR (returned as ``inf``).
    """
    data_range = _check_image_pair(originals, reconstructions, data_range)
    diff = originals.detach().double() - reconstructions.detach().double().to(originals.device)
    mse = diff.pow(2).flatten(1).mean(dim=1)
    per_image = 10.0 * torch.log10(data_range ** 2 / mse)  # mse == 0 -> +inf
    return float(per_image.mean())


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    kernel = torch.exp(-coords.pow(2) / (2 * sigma ** 2))
    return kernel / kernel.sum()


SSIM_WINDOW = 11   # Wang et al. 2004, Sec. III-C: 11×11 circular-symmetric Gaussian, σ = 1.5
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def ssim(originals: Tensor, reconstructions: Tensor, data_range: float = 1.0) -> float:
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004, Eq. 13), mean over images.

    Local means, variances and covariance under an 11×11 Gaussian window (σ = 1.5), population (not
    sample) covariances, ``C1 = (0.01·L)²``, ``C2 = (0.03·L)²`` with L = data_range. Each channel is
    compared separately and the SSIM map is averaged over the positions where the window fits inside the
    image (no padding), then over channels and images. This equals scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=L, channel_axis=0)`` averaged over images. Images must be at least 11×11.
    """
    data_range = _check_image_pair(originals, reconstructions, data_range)
    n, c, h, w = originals.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}; got {h}x{w}")
    x = originals.detach().double().reshape(n * c, 1, h, w)
    y = reconstructions.detach().double().to(x.device).reshape(n * c, 1, h, w)
    g = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, x.dtype, x.device)

    def blur(t: Tensor) -> Tensor:  # separable Gaussian filter, valid region only
        t = F.conv2d(t, g.view(1, 1, 1, -1))
        return F.conv2d(t, g.view(1, 1, -1, 1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov_xy = blur(x * y) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    )
    return float(ssim_map.mean())


__all__ = ["code_counts", "utilization", "perplexity", "CodeUsageWindow", "effective_rank",
           "gradient_coverage", "moved_fraction", "psnr", "ssim"]

