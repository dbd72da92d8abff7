"""VQ with dead-code restart: codes whose running usage falls below a threshold are moved onto encoder
outputs of the current batch.

Dhariwal et al., "Jukebox: A Generative Model for Music" (arXiv 2005.00341), its "random restarts for
embeddings" (a code whose mean usage falls below a threshold is reset to a random encoder output of the
current batch); Zeghidour et al., "SoundStream" (arXiv 2107.03312), the residual vector quantizer section (a
code no input was assigned to for several batches is replaced by an input of the current batch). The form used
here is vector-quantize-pytorch's ``threshold_ema_dead_code`` (version 1.32,
``vector_quantize_pytorch/vector_quantize_pytorch.py``: ``Codebook.__init__`` L351-418, ``replace``
L551-585, ``expire_codes_`` L587-596, ``update_codebook`` L642-664):

    usage_k <- decay * usage_k + (1 - decay) * n_k        (n_k: tokens assigned to code k in the batch)
    every code with usage_k < threshold gets a random encoder output of the batch; its usage_k <- threshold

Everything else is our ``vq``: the same codebook init (taming's U(-1/K, 1/K)), nearest-code search,
VQ-VAE loss (Eq. 3, beta = 0.25) and straight-through; the codes still learn by gradient.

Choices (vector-quantize-pytorch's defaults unless said):

- ``threshold = 2.0`` (the library README's example value, and its ``Codebook`` default), ``decay = 0.8``
  (the ``Codebook`` default that drives its usage EMA). Jukebox uses threshold 1.0 with decay 0.99
  (``jukebox/vqvae/bottleneck.py`` L14, L73-77; ``jukebox/hparams.py`` L379 ``l_mu=0.99``; commit
  08efbbc). The threshold counts tokens per batch, so its meaning depends on the batch: with N tokens a
  step, a code at the mean usage has usage N / K (at batch 64 x 64 tokens and K = 2^14, 0.25: most codes
  are restarted at every step, by construction).
- Usage starts at 1 for every code (the library's ``cluster_size`` ones, L418), below the default
  threshold, so the first training step moves every code that got fewer than 6 tokens onto batch latents:
  a data-dependent initialization, as Jukebox's ``init_k`` (L31-41 there) does explicitly.
- The restart happens after the forward's own search and loss, so the output and its indices use the codes
  from before the restart (as in the library and in Jukebox). In training mode ``indices_to_codes`` after
  the forward can therefore differ for the restarted codes; in eval mode nothing is restarted.
- At most one code per batch latent, without replacement: when more codes are dead than the batch has
  tokens, a random subset of them is restarted now and the rest on later steps (the library, L567-575).
- Randomness: the module's own CPU ``torch.Generator`` (the library uses the global RNG, which the trainer
  does not seed), seeded at construction with one draw from the RNG the quantizer is built under (the
  trainer's per-trial quantizer stream), so a trial's restarts are reproducible and the codebook init is
  ``vq``'s under the same seed. Its state is not in the ``state_dict``. Optimizer state (Adam moments) of a
  restarted code is left as it is, as in the library.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import QuantizerOutput, check_float
from .registry import register
from .vq import VectorQuantizer


@register("restart")
class DeadCodeRestartQuantizer(VectorQuantizer):
    """VQ whose codes with EMA usage below ``threshold`` restart at batch latents (Jukebox, SoundStream)."""

    learns_codebook_by_gradient = True

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, init: str = "uniform",
                 threshold: float = 2.0, decay: float = 0.8):
        super().__init__(dim, codebook_size, beta=beta, init=init)
        self.threshold = check_float("threshold", threshold, minimum=0.0, inclusive=False)
        self.decay = check_float("decay", decay, minimum=0.0, maximum=1.0, inclusive=False)
        self.register_buffer("usage", torch.ones(self.codebook_size))
        # drawn last, so the codebook above is vq's under the same seed
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))

    def forward(self, z: Tensor) -> QuantizerOutput:
        output = super().forward(z)  # vq's search and loss; the restart only moves codes afterwards
        if self.training:
            self.restart_dead_codes(z.detach().reshape(-1, self.dim), output.indices.reshape(-1))
        return output

    @torch.no_grad()
    def restart_dead_codes(self, flat: Tensor, indices: Tensor) -> Tensor:
        """Update the usage EMA from one batch (``flat`` ``(N, dim)`` assigned to ``indices`` ``(N,)``) and
        move the dead codes onto distinct random rows of ``flat``. Returns the restarted code indices."""
        counts = torch.bincount(indices, minlength=self.codebook_size).to(self.usage.dtype)
        self.usage.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        dead = (self.usage < self.threshold).nonzero().squeeze(1)
        if dead.numel() == 0:
            return dead
        if dead.numel() > flat.shape[0]:  # one latent per code: restart a random subset now, the rest later
            dead = dead[self.random_order(dead.numel(), dead.device)[: flat.shape[0]]]
        samples = flat[self.random_order(flat.shape[0], flat.device)[: dead.numel()]]
        # in place on the Parameter: this forward's graph holds only indices and a gathered copy of the codes
        self.embedding.index_copy_(0, dead, samples.to(self.embedding.dtype))
        self.usage.index_fill_(0, dead, self.threshold)
        return dead

    def random_order(self, n: int, device: torch.device) -> Tensor:
        return torch.randperm(n, generator=self.generator).to(device)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold}, decay={self.decay}"
