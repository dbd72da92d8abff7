"""The rotation trick: VQ whose gradient reaches the encoder through a frozen rotation and rescaling.

Fifty et al., "Restructuring Vector Quantization with the Rotation Trick" (ICLR 2025, arXiv 2410.06424),
Sec. 4. Straight-through copies the decoder's gradient from the code q to the encoder output z unchanged.
The rotation trick instead writes the quantizer's output as a linear function of z,

    q~ = sg(lambda R) z,    lambda = ||q|| / ||z||,    R = I - 2 w w^T + 2 q^ u^T,
    u = z / ||z||,   q^ = q / ||q||,   w = (u + q^) / ||u + q^||       (Sec. 4.2, the Householder form),

where R is the rotation in the plane of u and q^ that takes u onto q^ and leaves the orthogonal complement
alone; it is applied without building the d x d matrix: ``R z = z - 2 (w.z) w + 2 (u.z) q^``.
The forward value is q, and the gradient to z is ``lambda R^T`` times the gradient at q~: it keeps the
angle and relative magnitude between z and its code, instead of the identity of straight-through.

Read in the authors' code (github.com/cfifty/rotation_trick, commit 9910492):
``src/models/vq_vae.py`` L104-109 (``get_very_efficient_rotation``: w, u and q^ detached) and L130-139
(the rescaling ``||q|| / ||z||`` detached): what is implemented here. Their Table 3 VQGAN,
``exp_weights_and_configs/table_3/rot_vqgan.py``, is *not* the same estimator: L112-116 build the same
matrix R explicitly (detached at L141), but L139-142 apply it to ``z / ||z||`` *without* detaching that
normalization and multiply by ``sg(||q||)``, so the encoder's gradient there is
``||q|| / ||z|| (I - u u^T) R^T g``: the same rotation and scale with the component along u (the radial
one) projected out. (No eps either: ``||u + q^||`` = 0 divides by zero.)

Choices:

- Loss: the VQ-VAE objective of our ``vq`` (Eq. 3, ``||sg(z) - q||^2 + beta ||z - sg(q)||^2``, beta = 0.25),
  so ``rotation`` differs from ``vq`` only in the gradient estimator; codebook init and search are ``vq``'s.
  The codebook learns only from the codebook term (R is a constant, so the decoder's gradient does not
  reach the codes), as in the authors' VQGAN. Their Table 3 VQGAN uses taming-transformers'
  ``VectorQuantizer2`` with its legacy default, which puts beta on the codebook term instead
  (``rot_vqgan.py`` L11, L54).
- A consequence worth knowing: the encoder's gradient from the decoder is scaled by lambda = ||q|| / ||z||
  (R is a rotation, so only lambda changes its norm). At ``vq``'s default init U(-1/K, 1/K) the codes
  start tiny: ||q|| ~ sqrt(dim/3)/K, so lambda is about 2.4e-3 at K = 256 and 1.6e-4 at K = 4,096 (dim
  32, latents of norm ||z|| ~ 5; lambda scales as 1/(K ||z||)), and the encoder gets that fraction of
  straight-through's gradient from the reconstruction loss until the codebook loss has grown the codes
  toward the latents. Short runs of ``rotation`` vs ``vq`` at the default init therefore mostly measure
  this scaling, not the rotation. The authors' Table 3 VQGAN has the same init (taming's
  ``VectorQuantizer2``). ``rotation-simvq-init`` (registered below) starts the codes at SimVQ's W(C) (norm
  ~0.8, like ``vq-simvq-init``; lambda ~0.16 at ||z|| ~ 5); ``init="normal"`` starts them at norm ~1.
- Exact forward value: the output is ``sg(q) + (t - sg(t))`` with ``t = sg(lambda R) z``, so it equals q to
  the bit (``indices_to_codes`` reproduces it) while its gradient is exactly that of t.
- Degenerate cases: ``w`` uses ``F.normalize`` (eps 1e-12) like vector-quantize-pytorch's ``rotate_to``;
  when z and q point in opposite directions w = 0 and R = I + 2 q^ u^T still maps u to q^. For a zero z
  (no direction to rotate) the norms are clamped at 1e-12, where the authors' code divides by zero.
"""
from __future__ import annotations

from dataclasses import replace

import torch.nn.functional as F
from torch import Tensor

from .base import QuantizerOutput
from .registry import register, register_variant
from .vq import VectorQuantizer

_EPS = 1e-12


def rotate_and_rescale(z: Tensor, q: Tensor) -> Tensor:
    """``sg(lambda R) z`` for rows ``z``, ``q`` ``(..., d)`` (Fifty et al. Sec. 4.2): value ``q`` up to
    rounding, gradient to ``z`` = ``lambda R^T`` times the incoming gradient; no gradient to ``q``."""
    z_norm = z.detach().norm(dim=-1, keepdim=True)
    q_norm = q.detach().norm(dim=-1, keepdim=True)
    u = z.detach() / z_norm.clamp_min(_EPS)
    q_hat = q.detach() / q_norm.clamp_min(_EPS)
    w = F.normalize(u + q_hat, dim=-1, eps=_EPS)
    rotated = z - 2 * (z * w).sum(-1, keepdim=True) * w + 2 * (z * u).sum(-1, keepdim=True) * q_hat
    return rotated * (q_norm / z_norm.clamp_min(_EPS))


@register("rotation")
class RotationTrickQuantizer(VectorQuantizer):
    """VQ with the rotation trick: gradient to z through sg(lambda R) (Fifty et al. 2024, Sec. 4)."""

    learns_codebook_by_gradient = True

    def forward(self, z: Tensor) -> QuantizerOutput:
        output = super().forward(z)  # vq's search and loss; only the estimator of the gradient to z differs
        codes = output.quantized.detach()  # straight_through's value is exactly the selected codes
        transformed = rotate_and_rescale(z, codes)
        # forward value exactly the code; gradient to z that of sg(lambda R) z, not the identity
        return replace(output, quantized=codes + (transformed - transformed.detach()))


register_variant(
    "rotation-simvq-init", "rotation",
    "Rotation trick with codes at SimVQ's initial scale (W(C) at init, as vq-simvq-init): removes the "
    "||q||/||z|| ~ 1/K damping of the encoder's gradient that the tiny U(-1/K, 1/K) codes cause",
    init="simvq",
)
