"""Collapse-theory probes: what they measure, the paper's sentence they test, and their values by construction.

The theory under test, in the words of the SimVQ abstract (Zhu et al., arXiv 2411.02038v1): collapse has
"its primary cause as the disjoint optimization of the codebook, where only a small subset of code vectors
are updated through gradient descent", and SimVQ's W(C) "optimizes the entire linear space spanned by the
codebook, rather than merely updating the code vector selected by the nearest-neighbor search in vanilla VQ
models". A probe is evidence only where its value is not already fixed by how a method is built, so each
entry below says what it is by construction.

Probes and their MLflow keys (``benchmark.tracking.keys``):

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
- :func:`weighted_distribution_gap` (``PROBE_DISTRIBUTION_GAP_WEIGHTED``): the same gap with each code
  weighted by its use in the batch, so dead codes do not dominate the code cloud (the unweighted gap of a
  mostly dead codebook is large whatever its used codes do). Tests the rival explanation where it bites:
  do the codes the data use cover the latents? The analysis uses its early value to predict later
  utilization.
- ``PROBE_DEAD_CODE_DISTANCE``: :func:`unused_code_distance` over the codes dead for the trainer's
  ``dead_code_window`` (not merely undrawn in this batch): one definition for every method. The batch
  definition (``PROBE_UNUSED_CODE_DISTANCE``) means "dead" for VQ, whose few used codes are drawn in every
  batch, but "not drawn this time" for SimVQ, whose many live codes cannot all appear in one batch.
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
    probes.update(collapse_probes(quantizer, latents, indices,           # before optimizer.step(), so the
                                  dead=revival.dead_codes(step - 1)))
    optimizer.step()                                                     # codebook is the one the forward used
    revival.update(indices, step)                                        # every step
    probes[PROBE_DEAD_CODE_REVIVAL] = revival.value(step)                # at a probe step, after update

(EMA-VQ's forward has already applied its update when the probes run: its codebook is one EMA step, 1 % at
decay 0.99, past the one that selected the indices.)

Cost, measured on this project's shared 2-core CPU with ``torch.set_num_threads(1)`` at K = 2^14 codes,
d = 32, N = 4096 latents (median of 20 calls after 3 warm-ups, three runs agreeing within 5 %;
``python -m benchmark.evaluation.probes`` reprints it): see :data:`MEASURED_COST_MS`, each probe under 10 ms,
:func:`collapse_probes` about 27 ms. No probe builds an N×K matrix: the nearest-latent search is
:func:`quantizers.search.nearest_code` over at most :data:`MAX_UNUSED_CODES` sampled codes.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from benchmark.evaluation.codebook import gradient_coverage
from benchmark.evaluation.geometry import (centred_effective_rank, distribution_gap, unused_code_distance,
                                           weighted_distribution_gap)
from benchmark.evaluation.revival import DeadCodeRevival
from benchmark.tracking import keys
from quantizers.base import Quantizer
from quantizers.search import nearest_code

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
    """``benchmark.evaluation.codebook.gradient_coverage`` under the name that says what it is: the fraction of codes of
    ``quantizer.codebook()`` that the current gradients would move (call after ``backward()``, before
    ``optimizer.step()``).

    **By construction**, not a finding: VQ → the fraction of codes selected in this batch; SimVQ with W
    trained → 1.0, collapsed or not; SimVQ with W frozen and C trained → the selected fraction again; None
    where no codebook parameter learns by gradient (EMA-VQ, FSQ, LFQ, SimVQ with W and C frozen)."""
    return gradient_coverage(quantizer)


# ----------------------------------------------------------------------------- one call per probe step
@torch.no_grad()
def collapse_probes(quantizer: Quantizer, latents: Tensor, indices: Tensor,
                    dead: Tensor | None = None) -> dict[str, float]:
    """The per-step probes that apply to ``quantizer``, as ``{MLflow key: value}``.

    ``latents``: the quantizer's input z ``(batch, tokens, dim)`` of this step's forward; ``indices``: the
    codes it selected. Call before ``optimizer.step()`` (see the module docstring for the order). Always:
    ``PROBE_LATENT_RANK``. Where :func:`searches_codebook`: ``PROBE_UNUSED_CODE_DISTANCE`` (omitted when
    undefined, i.e. every code used) and ``PROBE_DISTRIBUTION_GAP`` (omitted when the latents have no
    variance). Where the quantizer has a codebook and not :func:`codebook_rank_is_fixed`:
    ``PROBE_CODEBOOK_RANK`` (also for learned codebooks selected otherwise, e.g. by a dot product). Not here:
    :func:`codes_with_gradient` (needs the gradients) and :class:`DeadCodeRevival` (needs every step).
    Where :func:`searches_codebook`, also ``PROBE_DISTRIBUTION_GAP_WEIGHTED`` (codes weighted by their use
    in this batch) and, when ``dead`` (bool ``(K,)``, :meth:`DeadCodeRevival.dead_codes` at the previous
    step: codes unused for ``dead_code_window`` steps) is given, ``PROBE_DEAD_CODE_DISTANCE``: the
    unused-code distance over those dead codes, the same codes for every method (omitted when none)."""
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
        values[keys.PROBE_DISTRIBUTION_GAP_WEIGHTED] = weighted_distribution_gap(codebook, latents, indices)
        if dead is not None:
            values[keys.PROBE_DEAD_CODE_DISTANCE] = unused_code_distance(codebook, latents, indices, unused=dead)
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
