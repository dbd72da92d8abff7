"""``vq-dense-pull``: VQ at SimVQ's initial codebook plus a soft pull that gives *every* code a gradient
toward the latents, without any shared linear layer. A control for SimVQ's mechanism.

SimVQ (Zhu et al., arXiv 2411.02038) reparameterizes the codes as W(C), so a gradient on any selected code
moves every code through the shared W. Two things change at once: (a) every code gets a non-zero gradient
(dense gradients) and (b) the codes share one linear map. ``vq-dense-pull`` keeps (a) and removes (b):
the codes are free rows (VQ's ``nn.Parameter``), started at SimVQ's W(C) (``init="simvq"``; same draws,
same order as ``vq-simvq-init``, so one seed gives bit-identical initial codebooks), with VQ's search,
VQ-VAE loss (Eq. 3, beta = 0.25) and straight-through, plus one term:

    w_{k,i} = softmax_i(-||sg(z_i) - e_k||^2 / tau)                  (over the batch's N latents, per code)
    L_pull  = pull_weight * 1/(K d) sum_k sum_i sg(w_{k,i}) ||sg(z_i) - e_k||^2
            = pull_weight * 1/(K d) sum_k (||e_k - m_k||^2 + v_k),    m_k = sum_i w_{k,i} z_i

(v_k, the w-weighted variance of the latents, is a constant). The weights sum to 1 per code, so no code's
pull underflows: a code far from every latent is pulled toward its nearest latents with full weight, a
code inside the data toward the soft mean of its neighbourhood (one soft k-means step, by gradient). Its
gradient on e_k is ``2 pull_weight (e_k - m_k) / (K d)``, non-zero for every code.

Sources, and which parts are ours:

- Zheng & Vedaldi, "Online Clustered Codebook" (CVQ-VAE, ICCV 2023, arXiv 2307.15139), its online
  clustered reinitialization: codes are moved toward *anchors* sampled from the batch's encoded features,
  ``e_k <- (1 - a_k) e_k + a_k anchor_k``, with ``a_k`` decaying with the code's running usage. Official
  code (github.com/lyndonzheng/CVQ-VAE, commit 04864b7, ``quantise.py``): L51-54 (l2 distances,
  ``d = -||z - e||^2``), L88-90 (``closest``: each code's nearest feature), L95-98 (``probrandom``: one
  feature sampled per code from ``softmax(d.t(), dim=1)``, a softmax over the batch's latents per code,
  temperature 1), L100-101 (the usage-dependent ``a_k`` and the update). Our ``m_k`` is the expectation of
  the ``probrandom`` anchor (at temperature tau instead of 1); tau -> 0 gives the ``closest`` anchor.
- Agustsson et al., "Soft-to-Hard Vector Quantization for End-to-End Learning Compressible
  Representations" (NeurIPS 2017, arXiv 1704.00648), Sec. 3: softmax assignments ``softmax(-sigma
  ||z - e_k||^2)`` as a differentiable relaxation of the nearest code. There the softmax runs over codes
  for each latent and replaces the quantizer's output; here it runs over latents for each code and only
  adds a loss term.
- Ours: applying the pull to every code at every step as a gradient term (CVQ-VAE updates the codes in
  place, weighted by low usage); the expectation instead of a sample; ``sg`` on the weights and latents
  (the encoder gets no gradient from the pull, so only the codebook's dynamics change); ``pull_weight = 1``
  (the weight of VQ-VAE's codebook term, and the term is normalized like that term's ``F.mse_loss``: per
  code and per dim, so at N = K each code's pull is of the order of a selected code's codebook gradient);
  and the temperature rule: ``tau = temperature_scale * mean_i ||sg(z_i) - q_i||^2``, the batch's mean
  squared quantization error (VQ's own distortion, detached). So the pull's reach is the current
  codebook's resolution: wide at initialization (where W(C) is far from the latents), local once the codes
  fit the data, and scale-free (multiplying the latents and codes by c multiplies tau by c^2). tau is
  clamped at 1e-6 x the latents' mean squared norm (and 1e-12) when the codes fit the batch exactly.

Memory: the K x N weights are never held at once: codes are processed in chunks of at most
``max_elements`` (default 2^22) distances, each softmax over the full batch, under ``no_grad``; only m_k
and v_k ``(K, d)``, ``(K,)`` remain, and the autograd graph is that of ``||e - m||^2``. At K = N = 4,096
and d = 32 a chunk is 1,024 codes x 4,096 latents (16 MiB of fp32).
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from .base import QuantizerOutput, check_float, check_int
from .registry import register
from .vq import VectorQuantizer

#: Most distances held at once by the pull's chunked computation: 2^22 fp32 values = 16 MiB.
PULL_MAX_ELEMENTS = 1 << 22


@torch.no_grad()
def soft_neighbour_means(latents: Tensor, codebook: Tensor, tau: float | Tensor, *,
                         max_elements: int = PULL_MAX_ELEMENTS) -> tuple[Tensor, Tensor]:
    """For each code ``e_k`` of ``codebook`` ``(K, d)``: ``m_k = sum_i w_ki z_i`` and ``v_k = sum_i w_ki
    ||z_i - m_k||^2`` with ``w_k = softmax_i(-||z_i - e_k||^2 / tau)`` over ``latents`` ``(N, d)``. Chunked
    over codes so that at most ``max_elements`` weights exist at once; no autograd graph."""
    latents = latents.detach()
    codebook = codebook.detach().to(latents.dtype)
    num_latents = latents.shape[0]
    chunk = max(1, min(codebook.shape[0], max_elements // max(1, num_latents)))
    latent_sq = latents.pow(2).sum(1)
    means, variances = [], []
    for start in range(0, codebook.shape[0], chunk):
        codes = codebook[start:start + chunk]
        # -||z - e||^2 / tau = (2 e.z - ||z||^2 - ||e||^2) / tau; ||e||^2 is constant per row, so it drops
        logits = torch.addmm(latent_sq.unsqueeze(0), codes, latents.t(), beta=-1.0, alpha=2.0).div_(tau)
        weights = torch.softmax(logits, dim=1)                       # (chunk, N), each row sums to 1
        mean = weights @ latents
        means.append(mean)
        variances.append((weights @ latent_sq - mean.pow(2).sum(1)).clamp_min(0.0))
    return torch.cat(means), torch.cat(variances)


@register("vq-dense-pull")
class DensePullQuantizer(VectorQuantizer):
    """VQ at SimVQ's init plus a soft pull of every code toward its nearest latents (dense gradients, no shared W)."""

    learns_codebook_by_gradient = True

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, init: str = "simvq",
                 pull_weight: float = 1.0, temperature_scale: float = 1.0,
                 max_elements: int = PULL_MAX_ELEMENTS):
        super().__init__(dim, codebook_size, beta=beta, init=init)  # vq's codebook draw: nothing drawn after
        self.pull_weight = check_float("pull_weight", pull_weight, minimum=0.0)
        self.temperature_scale = check_float("temperature_scale", temperature_scale, minimum=0.0, inclusive=False)
        self.max_elements = check_int("max_elements", max_elements, minimum=1)

    def temperature(self, flat: Tensor, quantized: Tensor) -> Tensor:
        """tau: ``temperature_scale`` x the batch's mean squared quantization error (detached), clamped."""
        flat, quantized = flat.detach(), quantized.detach()
        error = (flat - quantized).pow(2).sum(1).mean()
        floor = (1e-6 * flat.pow(2).sum(1).mean()).clamp_min(1e-12)
        return (self.temperature_scale * error).clamp_min(floor)

    def pull_loss(self, flat: Tensor, quantized: Tensor) -> Tensor:
        """``L_pull`` for latents ``flat`` ``(N, d)`` quantized to ``quantized`` (values only are used)."""
        tau = self.temperature(flat, quantized)
        means, variances = soft_neighbour_means(flat, self.embedding, tau, max_elements=self.max_elements)
        means, variances = means.to(self.embedding.dtype), variances.to(self.embedding.dtype)
        per_code = (self.embedding - means).pow(2).sum(1) + variances
        return self.pull_weight * per_code.mean() / self.dim

    def forward(self, z: Tensor) -> QuantizerOutput:
        output = super().forward(z)  # vq's search, VQ-VAE loss and straight-through, unchanged
        flat = z.reshape(-1, self.dim)
        pull = self.pull_loss(flat, output.quantized.reshape(-1, self.dim))
        return replace(output, loss=output.loss + pull, losses={**output.losses, "pull": pull})

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, pull_weight={self.pull_weight}, "
                f"temperature_scale={self.temperature_scale}")
