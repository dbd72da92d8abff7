"""Collapse-theory probes: what they measure, the paper's sentence they test, and their values by construction.

The theory under test, in the words of the SimVQ abstract (Zhu et al., arXiv 2411.02038v1): collapse has
"its primary cause as the disjoint optimization of the codebook, where only a small subset of code vectors
are updated through gradient descent", and SimVQ's W(C) "optimizes the entire linear space spanned by the
codebook, rather than merely updating the code vector selected by the nearest-neighbor search in vanilla VQ
models". A probe is evidence only where its value is not already fixed by how a method is built, so each
entry below says what it is by construction.

Probes and their MLflow keys (``benchmark.keys``):

- :func:`codes_with_gradient` (``PROBE_CODES_WITH_GRADIENT``): fraction of codes the step's gradient moves.
  Restates "only a small subset of code vectors are updated". **By construction**: for VQ it equals the
  fraction of codes selected in the batch (only those rows get a gradient); for SimVQ (W trained) it is 1.0
  whether or not training collapses; not applicable (None) for EMA-VQ, the fixed grids (FSQ/LFQ) and SimVQ
  with W and C frozen. It documents the mechanism; it is not evidence for or against the theory.
- :class:`DeadCodeRevival` (``PROBE_DEAD_CODE_REVIVAL``): of the codes dead over a full window at a
  reference step, the fraction used again since. Tests the causal step of the first sentence: a code that
  is not selected is not updated, so it should stay unused (≈ 0 for VQ), while SimVQ moves it anyway (> 0).
  Nothing fixes it by construction (it can be 0 for both, which is what makes it evidence). A VQ dead code
  can also be revived by the encoder moving latents toward it, and AdamW's weight decay and momentum move
  rows whose gradient is zero.
- :func:`unused_code_distance` (``PROBE_UNUSED_CODE_DISTANCE``): how far the codes unused in the batch lie
  from the data, relative to the quantization error of the used ones. Tests the same sentence's geometry:
  never-updated codes are left where they started, away from the data (≫ 1); of order 1 says they sit among
  the data and lose the nearest-neighbour competition there. Not fixed by construction.
- :func:`distribution_gap` (``PROBE_DISTRIBUTION_GAP``): the squared 2-Wasserstein distance between Gaussian
  fits of the code cloud and the latent cloud, divided by the latent cloud's total variance. Tests the
  rival explanation: codebook collapse and training instability "are primarily driven by a mismatch between
  the distributions of the features and code vectors" (Fang et al., "Enhancing Vector Quantization with
  Distributional Matching: A Theoretical and Empirical Study", arXiv 2506.15078, 2025; their Wasserstein-VQ
  loss is this same Gaussian-fit W2, computed from the two clouds' means and covariances,
  github.com/VQ-Research/Wasserstein-VQ). Not fixed by construction; at initialization vq's U(-1/K, 1/K)
  codes sit at the origin, so it starts near 1 + ‖μ_z‖²/tr Σ_z.
- :func:`centred_effective_rank` (``PROBE_CODEBOOK_RANK``, ``PROBE_LATENT_RANK``): Roy & Vetterli's effective
  rank of the rows after subtracting their mean. Tests "the entire linear space spanned by the codebook"
  (how many directions the codes really span) and the abstract's "representation collapse in the latent
  space" (for the encoder outputs). **By construction**: a fixed grid's codebook (FSQ, LFQ) has the rank
  its grid and output projection give it, unrelated to which codes training uses, and SimVQ with W and C
  frozen never changes its codebook: for those the codebook rank is not logged
  (:func:`codebook_rank_is_fixed`). Centring matters: without it a shared offset of every code (e.g. W's
  bias) counts as a direction and dominates the spectrum.

Which quantizers get which probe: the unused-code distance and the distribution gap need indices that are
the nearest codes of ``codebook()`` (:func:`searches_codebook`, declared by a class attribute: vq, ema,
simvq and their variants); the codebook rank needs a codebook that training moves
(:func:`codebook_rank_is_fixed`); the latent rank applies to every quantizer. FSQ and LFQ do have a
``codebook()`` (their grid, projected out) but select codes by rounding and learn no codebook, so only the
latent rank applies to them.

Call order in a training step (the trainer owns the loop)::

    output = model(images)                      # forward: latents z, indices
    loss.backward()
    probes[PROBE_CODES_WITH_GRADIENT] = codes_with_gradient(quantizer)   # reads .grad: before the step
    probes.update(collapse_probes(quantizer, latents, indices))          # before optimizer.step(), so the
    optimizer.step()                                                     # codebook is the one the forward used
    revival.update(indices, step)                                        # every step
    probes[PROBE_DEAD_CODE_REVIVAL] = revival.value(step)                # at a probe step, after update

(EMA-VQ's forward has already applied its update when the probes run: its codebook is one EMA step, 1 % at
decay 0.99, past the one that selected the indices.)

Cost, measured on this project's shared 2-core CPU with ``torch.set_num_threads(1)`` at K = 2^14 codes,
d = 32, N = 4096 latents (median of 20 calls after 3 warm-ups, three runs agreeing within 5 %;
``python -m benchmark.probes`` reprints it): see :data:`MEASURED_COST_MS`, each probe under 10 ms,
:func:`collapse_probes` about 27 ms. No probe builds an N×K matrix: the nearest-latent search is
:func:`quantizers.search.nearest_code` over at most :data:`MAX_UNUSED_CODES` sampled codes.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from benchmark import keys
from benchmark.metrics import effective_rank, gradient_coverage
from quantizers.base import Quantizer, check_int
from quantizers.search import nearest_code

#: At most this many unused codes enter :func:`unused_code_distance`'s median (a seeded uniform sample):
#: the search costs |unused| × N × d; the median of 512 draws was within 0.5 % of the full median at
#: K = 2^14, d = 32, N = 4096 (5 seeds).
MAX_UNUSED_CODES = 512
#: Seed of that sample (a private generator: the global RNG is left alone, and a probe step is reproducible).
SAMPLE_SEED = 0

#: Milliseconds per call at K = 2^14, d = 32, N = 4096, one thread (see the module docstring for the method).
MEASURED_COST_MS = {
    "DeadCodeRevival.update": 0.03,
    "DeadCodeRevival.value": 0.02,
    "unused_code_distance": 5.1,       # the search over 512 sampled codes
    "distribution_gap": 9.5,           # mostly the float64 covariance of the K codes
    "centred_effective_rank(codebook)": 9.8,   # float64 svdvals of (K, d)
    "centred_effective_rank(latents)": 1.5,
    "collapse_probes (all of the above but revival)": 27.0,
}


# ----------------------------------------------------------------------------- which probes apply
def searches_codebook(quantizer: Quantizer) -> bool:
    """True when ``quantizer``'s indices are the nearest codes of ``quantizer.codebook()`` (vq, ema, simvq and
    their variants), so the codebook probes apply; False for FSQ/LFQ, whose grids are selected by rounding.

    Read from the class attribute ``searches_codebook`` where a quantizer declares it; otherwise a quantizer
    that learns its codebook (by gradient or by averages) is assumed to search it."""
    declared = getattr(quantizer, "searches_codebook", None)
    if declared is not None:
        return bool(declared)
    return bool(quantizer.learns_codebook_by_gradient or quantizer.learns_codebook_by_averages)


def codebook_rank_is_fixed(quantizer: Quantizer) -> bool:
    """True when the codebook's effective rank is set by construction, not by training: a codebook no
    training step moves (neither ``learns_codebook_by_gradient`` nor ``learns_codebook_by_averages``):
    the grids FSQ, LFQ (their grid and output projection decide it) and SimVQ with W and C frozen. Its
    rank is then not logged."""
    return not (quantizer.learns_codebook_by_gradient or quantizer.learns_codebook_by_averages)


# ----------------------------------------------------------------------------- codes with gradient
def codes_with_gradient(quantizer: Quantizer) -> float | None:
    """``benchmark.metrics.gradient_coverage`` under the name that says what it is: the fraction of codes of
    ``quantizer.codebook()`` that the current gradients would move (call after ``backward()``, before
    ``optimizer.step()``).

    **By construction**, not a finding: VQ → the fraction of codes selected in this batch; SimVQ with W
    trained → 1.0, collapsed or not; SimVQ with W frozen and C trained → the selected fraction again; None
    where no codebook parameter learns by gradient (EMA-VQ, FSQ, LFQ, SimVQ with W and C frozen)."""
    return gradient_coverage(quantizer)


# ----------------------------------------------------------------------------- dead-code revival
class DeadCodeRevival:
    """Of the codes that were dead at a reference step, the fraction used again since.

    Definition, with W = ``window`` steps and t the step passed to :meth:`value`: reference steps are the
    multiples of W; the reference is r = (⌊t / W⌋ − 1)·W, the latest multiple of W at least one window
    before t. A code is *dead at r* when no update with a step in (r − W, r] selected it; it is *revived*
    when an update with a step in (r, latest step] selected it. ``value(t)`` = #revived / #dead at r, in
    [0, 1]; the observation window (r, t] lasts between W and 2W − 1 steps.

    ``value`` is None when undefined: before the first reference whose whole dead window was observed (the
    first value is at t = 2W when updates start at step 1), or when no code was dead at r. Use the
    trainer's ``dead_code_window`` as W so "dead" means what ``train/dead_code_fraction`` means.

    Memory O(K): each code's last-used step plus the dead sets of the two most recent references (a
    reference's dead set is frozen when the first update past it arrives). Several updates with the same
    step (gradient accumulation) pool into that step; steps must not decrease.
    """

    def __init__(self, codebook_size: int, window: int):
        self.codebook_size = check_int("codebook_size", codebook_size, minimum=1)
        self.window = check_int("window", window, minimum=1)
        self._last_used = torch.full((self.codebook_size,), -1, dtype=torch.long)  # -1: never used
        self._dead_at: dict[int, Tensor] = {}   # reference step -> bool (K,) dead over (r - W, r]
        self._first_step: int | None = None
        self._latest_step: int | None = None

    def _dead_now(self, reference: int) -> Tensor:
        return self._last_used <= reference - self.window

    def update(self, indices: Tensor, step: int) -> None:
        """Record the code indices (any shape) selected at ``step``."""
        step = check_int("step", step, minimum=0)
        if self._latest_step is not None and step < self._latest_step:
            raise ValueError(f"step must not decrease; got {step} after {self._latest_step}")
        flat = indices.detach().reshape(-1).cpu()
        if flat.dtype.is_floating_point or flat.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor; got {flat.dtype}")
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, codebook_size={self.codebook_size}); got values in "
                             f"[{int(flat.min())}, {int(flat.max())}]")
        if self._first_step is None:
            self._first_step = step
        elif step > self._latest_step:
            # freeze the dead sets of the references this update passes (state = as of each reference)
            last_reference = (step - 1) // self.window * self.window
            for reference in (last_reference - self.window, last_reference):
                if reference >= self._latest_step and reference not in self._dead_at:
                    self._dead_at[reference] = self._dead_now(reference)
            for reference in [r for r in self._dead_at if r < last_reference - self.window]:
                del self._dead_at[reference]
        self._last_used[flat.long()] = step
        self._latest_step = step

    def value(self, step: int) -> float | None:
        """Fraction of the codes dead at the reference r = (⌊step / W⌋ − 1)·W that were used after r (None
        when undefined, see the class docstring). ``step`` must not precede the latest update."""
        step = check_int("step", step, minimum=0)
        if self._latest_step is None:
            return None
        if step < self._latest_step:
            raise ValueError(f"value(step) needs step >= the latest update's step {self._latest_step}; got {step}")
        reference = (step // self.window - 1) * self.window
        if reference - self.window < self._first_step - 1:  # the dead window (r - W, r] was not all observed
            return None
        if reference >= self._latest_step:                  # no update past r yet: the state is r's
            dead = self._dead_now(reference)
        else:
            dead = self._dead_at[reference]
        dead_count = int(dead.sum())
        if dead_count == 0:
            return None
        revived = dead & (self._last_used > reference)
        return int(revived.sum()) / dead_count


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
                         max_codes: int = MAX_UNUSED_CODES) -> float:
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
    mixes dead codes with live ones this batch did not draw. The nearest-latent search is
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
def _mean_and_covariance(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and population covariance ``(d, d)`` (divided by n) in float64."""
    rows = rows.double()
    mean = rows.mean(dim=0)
    centred = rows - mean
    return mean, centred.t() @ centred / rows.shape[0]


def gaussian_w2_squared(a: Tensor, b: Tensor) -> float:
    """Squared 2-Wasserstein distance between the Gaussian fits (mean, population covariance) of two clouds
    ``a`` ``(..., d)`` and ``b`` ``(..., d)``:

        W2² = ||μ_a − μ_b||² + tr(Σ_a + Σ_b − 2 (Σ_b^½ Σ_a Σ_b^½)^½)

    (the Fréchet distance of FID). Float64, symmetric eigendecompositions only (d × d, cheap for d ≤ 256);
    0 (to ~1e-12 relative) for identical clouds, never negative."""
    a = _rows("a", a)
    b = _rows("b", b, dim=a.shape[1])
    mean_a, cov_a = _mean_and_covariance(a)
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


# ----------------------------------------------------------------------------- rank
def centred_effective_rank(matrix: Tensor) -> float:
    """:func:`benchmark.metrics.effective_rank` of the rows of ``matrix`` ``(..., d)`` after subtracting
    their mean (float64): the number of directions the cloud spreads along, blind to a shared offset. In
    [1, min(rows − 1, d)] for a non-degenerate cloud; 0 when all rows are equal."""
    rows = _rows("matrix", matrix).double()
    return effective_rank(rows - rows.mean(dim=0))


# ----------------------------------------------------------------------------- one call per probe step
@torch.no_grad()
def collapse_probes(quantizer: Quantizer, latents: Tensor, indices: Tensor) -> dict[str, float]:
    """The per-step probes that apply to ``quantizer``, as ``{MLflow key: value}``.

    ``latents``: the quantizer's input z ``(batch, tokens, dim)`` of this step's forward; ``indices``: the
    codes it selected. Call before ``optimizer.step()`` (see the module docstring for the order). Always:
    ``PROBE_LATENT_RANK``. Where :func:`searches_codebook`: ``PROBE_UNUSED_CODE_DISTANCE`` (omitted when
    undefined, i.e. every code used) and ``PROBE_DISTRIBUTION_GAP`` (omitted when the latents have no
    variance). Where the quantizer has a codebook and not :func:`codebook_rank_is_fixed`:
    ``PROBE_CODEBOOK_RANK`` (also for learned codebooks selected otherwise, e.g. by a dot product). Not here:
    :func:`codes_with_gradient` (needs the gradients) and :class:`DeadCodeRevival` (needs every step)."""
    if not isinstance(quantizer, Quantizer):
        raise ValueError(f"quantizer must be a quantizers.Quantizer; got {type(quantizer).__name__}")
    probes = {keys.PROBE_LATENT_RANK: centred_effective_rank(latents)}
    searched, rank_fixed = searches_codebook(quantizer), codebook_rank_is_fixed(quantizer)
    codebook = quantizer.codebook() if searched or not rank_fixed else None
    if codebook is None:
        return probes
    codebook = codebook.detach()
    values = {}
    if searched:
        values[keys.PROBE_UNUSED_CODE_DISTANCE] = unused_code_distance(codebook, latents, indices)
        values[keys.PROBE_DISTRIBUTION_GAP] = distribution_gap(codebook, latents)
    if not rank_fixed:
        values[keys.PROBE_CODEBOOK_RANK] = centred_effective_rank(codebook)
    probes.update({key: value for key, value in values.items() if not math.isnan(value)})
    return probes


def _measure_costs(repeats: int = 20) -> dict[str, float]:
    """Median milliseconds per call at K = 2^14, d = 32, N = 4096 on one thread (what MEASURED_COST_MS holds)."""
    import statistics
    import time

    import quantizers

    torch.set_num_threads(1)
    torch.manual_seed(0)
    quantizer = quantizers.build("vq", dim=32, codebook_size=1 << 14, init="normal")
    latents = torch.randn(16, 256, 32)
    indices = nearest_code(latents.reshape(-1, 32), quantizer.codebook())
    codebook = quantizer.codebook().detach()
    revival = DeadCodeRevival(1 << 14, window=10)
    step = [0]

    def revival_update():
        step[0] += 1
        revival.update(indices, step[0])

    calls = {
        "DeadCodeRevival.update": revival_update,
        "DeadCodeRevival.value": lambda: revival.value(step[0]),
        "unused_code_distance": lambda: unused_code_distance(codebook, latents, indices),
        "distribution_gap": lambda: distribution_gap(codebook, latents),
        "centred_effective_rank(codebook)": lambda: centred_effective_rank(codebook),
        "centred_effective_rank(latents)": lambda: centred_effective_rank(latents),
        "collapse_probes (all of the above but revival)": lambda: collapse_probes(quantizer, latents, indices),
    }
    costs = {}
    for name, call in calls.items():
        for _ in range(3):
            call()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1e3)
        costs[name] = statistics.median(times)
    return costs


if __name__ == "__main__":
    for probe_name, milliseconds in _measure_costs().items():
        print(f"{probe_name:48s} {milliseconds:8.2f} ms")
