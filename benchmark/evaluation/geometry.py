"""The geometry probes: how far unused codes sit from the data, the Gaussian-W2 gap between the codebook
and the latents, and centred effective ranks (see ``benchmark.evaluation.probes`` for what each tests)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from benchmark.evaluation.codebook import effective_rank
from quantizers.base import check_int
from quantizers.search import nearest_code

#: At most this many unused codes enter :func:`unused_code_distance`'s median (a seeded uniform sample):
#: the search costs |unused| × N × d; the median of 512 draws was within 0.5 % of the full median at
#: K = 2^14, d = 32, N = 4096 (5 seeds).
MAX_UNUSED_CODES = 512
#: Seed of that sample (a private generator: the global RNG is left alone, and a probe step is reproducible).
SAMPLE_SEED = 0


# ----------------------------------------------------------------------------- geometry of unused codes
def _rows(name: str, t: Tensor, dim: int | None = None) -> Tensor:
    if not isinstance(t, Tensor) or t.dim() < 2 or not t.dtype.is_floating_point:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a float tensor (..., d); got {shape}")
    rows = t.detach().reshape(-1, t.shape[-1])
    if rows.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one row")
    if dim is not None and rows.shape[1] != dim:
        raise ValueError(f"{name} must have last dim {dim} (the codebook's); got {rows.shape[1]}")
    if not torch.isfinite(rows).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return rows


def unused_code_distance(codebook: Tensor, latents: Tensor, indices: Tensor,
                         max_codes: int = MAX_UNUSED_CODES, unused: Tensor | None = None) -> float:
    """Median distance from a code unused in the batch to its nearest latent, over the mean quantization error.

    ``codebook`` ``(K, d)``; ``latents`` ``(..., d)``, the quantizer's inputs z; ``indices`` ``(...)``, the
    code each latent was assigned (one per latent). With U the codes no index names:

        numerator   = median over k in U of  min_n ||c_k − z_n||      (Euclidean, not squared)
        denominator = mean over n of ||z_n − c_{i_n}||               (the used codes' quantization error)

    ≫ 1: unused codes lie far from the data (stranded: the disjoint-optimization story); of order 1: they
    lie among the data (codes drawn from the latents' own distribution give about 0.4 in the tests: a point
    among the data is nearer its nearest latent than a latent is to its code). NaN when every code is used;
    inf when the error is 0 but unused codes are not on the data. When |U| > ``max_codes`` the median is
    over a seeded uniform sample of ``max_codes`` unused codes.
    With N latents and K > N codes at least K − N codes are unused in one batch whatever the training, so U
    mixes dead codes with live ones this batch did not draw: for VQ (low utilization) U is mostly dead codes,
    for SimVQ mostly live codes this batch happened not to draw, so the batch definition does not mean the
    same codes for both. Pass ``unused`` (bool ``(K,)``, e.g. the codes dead over the trainer's
    ``dead_code_window``, :meth:`DeadCodeRevival.dead_codes`) to take U = ``unused`` minus the codes this
    batch used: the same definition for every method (logged as ``probe/dead_code_distance``). The
    nearest-latent search is
    :func:`quantizers.search.nearest_code` with the latents as its "codebook" (blocked, no N×K matrix).
    """
    codebook = _rows("codebook", codebook)
    if codebook.dim() != 2:
        raise ValueError("codebook must be (K, d)")
    latents = _rows("latents", latents, dim=codebook.shape[1])
    max_codes = check_int("max_codes", max_codes, minimum=1)
    flat_indices = indices.detach().reshape(-1).to(codebook.device).long()
    if flat_indices.numel() != latents.shape[0]:
        raise ValueError(f"indices must hold one code per latent ({latents.shape[0]}); got {flat_indices.numel()}")
    if int(flat_indices.min()) < 0 or int(flat_indices.max()) >= codebook.shape[0]:
        raise ValueError(f"indices must lie in [0, {codebook.shape[0]})")
    used = torch.zeros(codebook.shape[0], dtype=torch.bool, device=codebook.device)
    used[flat_indices] = True
    if unused is not None:
        if unused.shape != used.shape or unused.dtype != torch.bool:
            raise ValueError(f"unused must be a bool tensor of shape ({codebook.shape[0]},)")
        unused = (unused.to(used.device) & ~used).nonzero().squeeze(1)
    else:
        unused = (~used).nonzero().squeeze(1)
    if unused.numel() == 0:
        return math.nan
    if unused.numel() > max_codes:
        generator = torch.Generator().manual_seed(SAMPLE_SEED)
        unused = unused[torch.randperm(unused.numel(), generator=generator)[:max_codes].to(unused.device)]
    unused_codes = codebook[unused]
    nearest = nearest_code(unused_codes, latents.to(unused_codes.dtype))
    stranded = (unused_codes.double() - latents[nearest].double()).norm(dim=1)
    error = (latents.double() - codebook[flat_indices].double()).norm(dim=1).mean()
    median = torch.quantile(stranded, 0.5)
    if error == 0:
        return math.nan if median == 0 else math.inf
    return float(median / error)


# ----------------------------------------------------------------------------- distribution gap
def _mean_and_covariance(rows: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and population covariance ``(d, d)`` (divided by n, or weighted by ``weights`` ``(n,)``
    summing to anything positive) in float64."""
    rows = rows.double()
    if weights is None:
        mean = rows.mean(dim=0)
        centred = rows - mean
        return mean, centred.t() @ centred / rows.shape[0]
    w = weights.double().to(rows.device)
    w = w / w.sum()
    mean = (w[:, None] * rows).sum(dim=0)
    centred = rows - mean
    return mean, (centred * w[:, None]).t() @ centred


def gaussian_w2_squared(a: Tensor, b: Tensor, weights_a: Tensor | None = None) -> float:
    """Squared 2-Wasserstein distance between the Gaussian fits (mean, population covariance) of two clouds
    ``a`` ``(..., d)`` and ``b`` ``(..., d)``:

        W2² = ||μ_a − μ_b||² + tr(Σ_a + Σ_b − 2 (Σ_b^½ Σ_a Σ_b^½)^½)

    (the Fréchet distance of FID). Float64, symmetric eigendecompositions only (d × d, cheap for d ≤ 256);
    0 (to ~1e-12 relative) for identical clouds, never negative. ``weights_a`` ``(rows of a,)``, optional:
    fit a's Gaussian with these non-negative weights (rows of weight 0 do not count)."""
    a = _rows("a", a)
    b = _rows("b", b, dim=a.shape[1])
    mean_a, cov_a = _mean_and_covariance(a, weights_a)
    mean_b, cov_b = _mean_and_covariance(b)
    eigenvalues_b, eigenvectors_b = torch.linalg.eigh(cov_b)
    root_b = eigenvectors_b * eigenvalues_b.clamp(min=0).sqrt() @ eigenvectors_b.t()
    middle = root_b @ cov_a @ root_b
    middle = (middle + middle.t()) / 2  # symmetric up to rounding; eigvalsh reads one triangle
    cross = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    w2_squared = (mean_a - mean_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross
    return max(float(w2_squared), 0.0)


def distribution_gap(codebook: Tensor, latents: Tensor) -> float:
    """The logged distribution gap: :func:`gaussian_w2_squared` (codes, latents) / tr Σ_latents.

    Dimensionless and invariant to a common rescaling of codes and latents, so trials whose encoders
    settle at different latent scales (and one trial over time) compare; W2² itself has units of squared
    latent norm. 0: the Gaussian fits coincide; 1: as far as a codebook collapsed onto the latent mean
    (Σ_codes = 0, μ_codes = μ_z gives W2² = tr Σ_z). Every code counts once (the codebook's distribution,
    not its usage). NaN when the latents have no variance."""
    codebook = _rows("codebook", codebook)
    latents = _rows("latents", latents, dim=codebook.shape[1])
    total_variance = float(_mean_and_covariance(latents)[1].trace())
    if total_variance <= 0:
        return math.nan
    return gaussian_w2_squared(codebook, latents) / total_variance


def weighted_distribution_gap(codebook: Tensor, latents: Tensor, indices: Tensor) -> float:
    """The usage-weighted distribution gap (``probe/distribution_gap_weighted``): :func:`distribution_gap`
    with each code's Gaussian-fit weight its count in this batch's ``indices`` (one per latent), so dead
    codes (weight 0) do not dominate the code cloud as they do in the unweighted gap, where a codebook of
    mostly dead codes reads far from the data whatever its used codes do. It measures how well the codes
    the data *use* cover the latents (the quantized latents' Gaussian against the latents'). NaN when the
    latents have no variance."""
    codebook = _rows("codebook", codebook)
    latents = _rows("latents", latents, dim=codebook.shape[1])
    flat = indices.detach().reshape(-1).to(codebook.device).long()
    if flat.numel() != latents.shape[0]:
        raise ValueError(f"indices must hold one code per latent ({latents.shape[0]}); got {flat.numel()}")
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= codebook.shape[0]):
        raise ValueError(f"indices must lie in [0, {codebook.shape[0]})")
    counts = torch.bincount(flat, minlength=codebook.shape[0])
    total_variance = float(_mean_and_covariance(latents)[1].trace())
    if total_variance <= 0:
        return math.nan
    used = counts > 0
    return gaussian_w2_squared(codebook[used], latents, counts[used]) / total_variance


# ----------------------------------------------------------------------------- rank
def centred_effective_rank(matrix: Tensor) -> float:
    """:func:`benchmark.evaluation.codebook.effective_rank` of the rows of ``matrix`` ``(..., d)`` after subtracting
    their mean (float64): the number of directions the cloud spreads along, blind to a shared offset. In
    [1, min(rows − 1, d)] for a non-degenerate cloud; 0 when all rows are equal."""
    rows = _rows("matrix", matrix).double()
    return effective_rank(rows - rows.mean(dim=0))
