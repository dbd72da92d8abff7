"""Binary Spherical Quantization (BSQ): lookup-free binary codes on the unit sphere.

Zhao, Xiong, Krähenbühl, "Image and Video Tokenization with Binary Spherical Quantization" (arXiv
2406.07548), the method section (BSQ; its entropy regularization). The latent (dim L = log2 K) is
projected onto the unit sphere and binarized:

    u = z / ||z||,    q = sign(u) / sqrt(L)    (straight-through),    index = sum_i 2^(i-1) 1[u_i > 0],

so the implicit codebook is the 2^L corners of the hypercube scaled onto the sphere, every code unit norm.
The paper's projection ``Linear(d -> L)`` before the normalization and ``Linear(L -> d)`` after are here the
backbone's own 1x1 projections to and from the latent dim: BSQ, like LFQ in the sweep grid, takes its
latent dim from K (``sweeps.grid.own_latent_dim``), so ``codebook_size`` must equal ``2**dim``.

The entropy terms, with ``p(c | u) = softmax_c(2 c.u / tau)`` over the codes:

    L_entropy = gamma0 * E_u[H(p(c | u))] - gamma * H(E_u[p(c | u)])

``p`` factorizes over bits (``p(c_i = +1 | u_i) = sigmoid(4 u_i / (sqrt(L) tau))``), so the per-sample
entropy is exact in O(N L) (the official ``persample_entropy_compute='analytical'``). The codebook entropy
does not factorize; the paper uses a factorized approximation, which the official code computes over
groups of ``group_size`` bits, summing the groups' entropies (an upper bound by subadditivity, exact for
``group_size = L``, the per-bit marginals for ``group_size = 1``). This is LFQ's code, reused:
:func:`quantizers.lfq.bit_logits`, :func:`~quantizers.lfq.per_sample_entropy` and, per group,
:func:`~quantizers.lfq.codebook_entropy_exact` (for one-bit groups, LFQ's ``factorized`` term, the same value).

Read in the authors' code (github.com/zhaoyue-zephyrus/bsq-vit, commit 37d212d):
``transcoder/models/quantizer/bsq.py`` L75-81 (sign, straight-through), L95 and L106 (the 1/sqrt(L) scale
applied after the straight-through, so the gradient to u is 1/sqrt(L)), L97-99 (entropy penalty), L121-145
(grouped soft entropy; analytical per-sample entropy L130-136), L109 (commitment, summed over dims);
``transcoder/models/bsqvit.py`` L163-168 (``F.normalize`` before the quantizer);
``configs/tokenizer/imagenet_256x256_bsqvit_b18g18_stylegan_f8_fp16.yaml`` (L = 18, group size 1,
analytical per-sample entropy, beta 0, l2_norm and post_q_l2_norm on; the loss config's
``codebook_weight: 0.1`` scales the entropy; ``inv_temperature``, ``gamma0``, ``gamma``, ``zeta`` at their
defaults 1, ``transcoder/models/bsqvit.py`` L113-123).

Defaults from those configs: ``entropy_weight = 0.1`` (zeta x codebook_weight), ``sample_entropy_weight =
1`` (gamma0), ``diversity_gamma = 1`` (gamma), ``temperature = 1`` (1 / inv_temperature), ``group_size = 1``
(the b18g18 and b36g36 configs; b18g2 and the 128 px config use 9), ``beta = 0`` (their commitment weight; the term is still
reported). The index bit order is LFQ's (bit i has weight 2^i); the official code's is reversed, a naming
convention only.

Ramp-up: every official BSQ config (``configs/tokenizer/imagenet_128x128_bsqvit_stylegan_f8_fp16.yaml``
L30-31; ``imagenet_256x256_bsqvit_b18g18_stylegan_f8_fp16.yaml``, ``..._b18g2_...`` and ``..._b36g36_...``
L32-33) sets ``codebook_rampup_multiplier: 3.0`` and ``codebook_rampup_steps: 2_000``, and the loss
(``transcoder/losses/vqperceptual.py`` L189-194) multiplies the quantizer's whole loss by

    m(s) = r + multiplier * (1 - r),   r = min(steps, s) / steps      (m = 1 when steps = 0)

at optimizer step s (``global_step``, the 0-based iteration of ``scripts/main_image_tokenizer.py`` L321):
3x at step 0, 2x at 1,000, 1x from 2,000 on. Here the step is the ``rampup_step`` buffer (in the
``state_dict``, so a resumed run continues the ramp): each training-mode forward uses m at the current
step, then advances it by one; eval-mode forwards use it without advancing. The multiplier scales
every term of ``loss`` (entropy and commitment, as the official ``cb_weight * codebook_loss``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Quantizer, QuantizerOutput, check_float, check_int, straight_through
from .lfq import bit_logits, codebook_entropy_exact, codebook_entropy_factorized, per_sample_entropy
from .registry import register


@register("bsq")
class BinarySphericalQuantizer(Quantizer):
    """Sign of the l2-normalized latent, scaled to the unit sphere; 2^L implicit codes (BSQ, Zhao et al. 2024)."""

    learns_codebook_by_gradient = False

    def __init__(self, dim: int, codebook_size: int, entropy_weight: float = 0.1,
                 sample_entropy_weight: float = 1.0, diversity_gamma: float = 1.0, temperature: float = 1.0,
                 group_size: int = 1, beta: float = 0.0, codebook_rampup_multiplier: float = 3.0,
                 codebook_rampup_steps: int = 2000):
        dim = check_int("dim", dim, minimum=1)
        size = check_int("codebook_size", codebook_size, minimum=2)
        if size != 2 ** dim:
            bits = size.bit_length() - 1
            hint = f"use dim={bits}" if size == 1 << bits else "codebook_size must be a power of two"
            raise ValueError(f"bsq has one binary code per latent dim: codebook_size must equal 2**dim; got "
                             f"codebook_size={size}, dim={dim} ({hint})")
        super().__init__(dim, size)
        self.entropy_weight = check_float("entropy_weight", entropy_weight, minimum=0.0)
        self.sample_entropy_weight = check_float("sample_entropy_weight", sample_entropy_weight, minimum=0.0)
        self.diversity_gamma = check_float("diversity_gamma", diversity_gamma, minimum=0.0)
        self.temperature = check_float("temperature", temperature, minimum=0.0, inclusive=False)
        self.group_size = check_int("group_size", group_size, minimum=1, maximum=self.dim)
        if self.dim % self.group_size:
            raise ValueError(f"group_size must divide the latent dim {self.dim}; got {self.group_size}")
        self.beta = check_float("beta", beta, minimum=0.0)
        self.codebook_rampup_multiplier = check_float("codebook_rampup_multiplier", codebook_rampup_multiplier,
                                                      minimum=0.0)
        self.codebook_rampup_steps = check_int("codebook_rampup_steps", codebook_rampup_steps, minimum=0)
        self.register_buffer("rampup_step", torch.zeros((), dtype=torch.int64))  # training forwards so far
        self.scale = 1.0 / math.sqrt(self.dim)
        self.register_buffer("bit_values", 2 ** torch.arange(self.dim, dtype=torch.int64), persistent=False)
        # the two code values as a float buffer, so .double() / .to(device) carry the codes' dtype
        self.register_buffer("sign_values", torch.tensor([-self.scale, self.scale]), persistent=False)

    def loss_multiplier(self, step: int | None = None) -> float:
        """The official ramp (vqperceptual.py L189-193) at ``step`` (default: the ``rampup_step`` buffer)."""
        if self.codebook_rampup_steps == 0:
            return 1.0
        step = int(self.rampup_step) if step is None else step
        rate = min(self.codebook_rampup_steps, step) / self.codebook_rampup_steps
        return 1.0 * rate + self.codebook_rampup_multiplier * (1.0 - rate)

    def entropy_terms(self, unit: Tensor) -> tuple[Tensor, Tensor]:
        """(per-sample entropy, grouped codebook entropy) in nats for unit-norm latents ``(..., L)``."""
        # p(c_i = +1 | u_i) = sigmoid(4 u_i / (sqrt(L) tau)): LFQ's bit logits of u at temperature sqrt(L) tau
        logits = bit_logits(unit.reshape(-1, self.dim), self.temperature / self.scale)
        if self.group_size == 1:  # one-bit groups: the sum of per-bit entropies, in one vectorized op
            codebook = codebook_entropy_factorized(logits)
        else:
            codebook = sum(codebook_entropy_exact(group) for group in logits.split(self.group_size, dim=1))
        return per_sample_entropy(logits), codebook

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_input(z)
        unit = F.normalize(z, dim=-1)
        positive = unit > 0
        codes = self.sign_values[positive.long()]
        # forward value exactly the code; gradient 1/sqrt(L) to u, as the official scale after the estimator
        quantized = straight_through(unit * self.scale, codes)
        indices = (positive.long() * self.bit_values).sum(-1)

        sample_entropy, codebook_entropy = self.entropy_terms(unit)
        multiplier = self.loss_multiplier()
        if self.training:
            self.rampup_step.add_(1)
        entropy_loss = multiplier * self.entropy_weight * (self.sample_entropy_weight * sample_entropy
                                                           - self.diversity_gamma * codebook_entropy)
        # official: beta * mean over tokens of the squared distance summed over the L dims
        commitment_loss = multiplier * self.beta * (unit - codes).pow(2).sum(-1).mean()
        return QuantizerOutput(
            quantized=quantized,
            indices=indices,
            loss=entropy_loss + commitment_loss,
            losses={"entropy": entropy_loss, "commitment": commitment_loss},
            codebook_size=self.codebook_size,
        )

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        self.check_indices(indices)
        bits = (indices.long().unsqueeze(-1) // self.bit_values) % 2
        return self.sign_values[bits]

    def codebook(self) -> Tensor:
        """All ``2^L`` codes ``sign / sqrt(L)``, each unit norm: ``(K, L)``."""
        return self.indices_to_codes(torch.arange(self.codebook_size, device=self.bit_values.device))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, entropy_weight={self.entropy_weight}, temperature={self.temperature}, "
                f"group_size={self.group_size}, beta={self.beta}, "
                f"codebook_rampup_multiplier={self.codebook_rampup_multiplier}, "
                f"codebook_rampup_steps={self.codebook_rampup_steps}")
