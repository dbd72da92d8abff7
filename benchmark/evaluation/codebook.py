"""Building blocks of the collapse-theory probes (``benchmark.evaluation.probes`` holds the probes
themselves, with what each tests and its value by construction): :func:`gradient_coverage` is the fraction
of effective code vectors a gradient step would move — by construction VQ's batch usage and SimVQ's 1.0,
so it documents the mechanism of Zhu et al. 2024 (arXiv 2411.02038) and is no evidence for it;
:func:`effective_rank` (Roy & Vetterli 2007) measures how many directions a set of vectors spans.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from quantizers.base import Quantizer, check_float


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
    ``keys.PROBE_CODES_WITH_GRADIENT`` through :func:`benchmark.evaluation.probes.codes_with_gradient`, whose module
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
