"""VQ with dead-code restart: codes whose running usage falls below a threshold are moved onto encoder
outputs of the current batch.

Dhariwal et al., "Jukebox: A Generative Model for Music" (arXiv 2005.00341), its "random restarts for
embeddings" (a code whose mean usage falls below a threshold is reset to a random encoder output of the
current batch); Zeghidour et al., "SoundStream" (arXiv 2107.03312), the residual vector quantizer section (a
code no input was assigned to for several batches is replaced by an input of the current batch). The form used
here is vector-quantize-pytorch's ``threshold_ema_dead_code`` (version 1.32,
``vector_quantize_pytorch/vector_quantize_pytorch.py``: ``Codebook.__init__`` L351-418, ``replace``
L551-585, ``expire_codes_`` L587-596, ``update_codebook`` L642-664):

    usage_k <- decay * usage_k + (1 - decay) * n_k * K / N   (n_k: tokens assigned to code k, N in the batch)
    every code with usage_k < threshold gets a random encoder output of the batch; its usage_k <- threshold

(the library adds n_k itself and compares with a token count; here both are relative to N / K, see below).

Everything else is our ``vq``: the same codebook init (taming's U(-1/K, 1/K)), nearest-code search,
VQ-VAE loss (Eq. 3, beta = 0.25) and straight-through; the codes still learn by gradient.

Choices (vector-quantize-pytorch's unless said):

- The threshold is *relative* (ours): usage is counted in units of the batch's mean per-code usage N / K
  (``n_k * K / N``), and ``threshold`` is a fraction of that mean. The library's threshold counts tokens
  per batch (``threshold_ema_dead_code = 2``), so its meaning depends on N / K: at the 4,096 tokens a step
  of this benchmark and K = 2^12 the mean usage is 1 token, a code needs 2 tokens in a batch to stay alive,
  and 70 % of the codes were restarted at every step (measured as below): the codebook was mostly the
  last batch's latents. Default ``threshold = 0.25``: the library's 2 tokens at N / K = 8, e.g. an image
  tokenizer with a batch of 32 x 16 x 16 = 8,192 tokens and K = 1,024 (the library documents no N / K but
  its README toy, 1,024 tokens at K = 512, where 2 tokens is the mean itself: ``threshold = 1``). Its
  intent, SoundStream's, is to replace codes that (almost) no input reaches, not below-average ones.
  Measured with this module on a 64-component anisotropic Gaussian mixture in d = 32, K = N = 4,096,
  decay 0.8, codes moved only by restarts (``tests/test_quantizer_settings.py``): 86 % of the codes are
  restarted at the first step, then on average per step over steps 11-30 4.6 % at 0.25, 15 % at 0.5,
  35 % at 1.0 and 71 % at 2.0 (the old absolute threshold at this N / K).
- ``decay = 0.8``: the library's ``Codebook`` default that drives its usage EMA. Jukebox uses an absolute
  threshold of 1.0 with decay 0.99 (``jukebox/vqvae/bottleneck.py`` L14, L73-77; ``jukebox/hparams.py``
  L379 ``l_mu=0.99``; commit 08efbbc).
- Usage starts at 0.125 of the mean for every code: the library's ``cluster_size`` ones (L418, one token)
  at the N / K = 8 that sets the default threshold. So the first training step restarts every code that got
  fewer than 0.75 N / K tokens (5 threshold - 4 x 0.125): a data-dependent initialization, as Jukebox's
  ``init_k`` (L31-41 there) does explicitly. A restarted code's usage is reset to the threshold (the
  library's ``reset_cluster_size`` default, L401, L584).
- ``last_restarted_fraction``: the fraction of the K codes restarted by the last training forward (0.0
  before any), for the trainer to log.
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

#: Initial usage, in units of the mean per-code usage N / K: the library's one token at N / K = 8.
INITIAL_USAGE = 0.125


@register("restart")
class DeadCodeRestartQuantizer(VectorQuantizer):
    """VQ whose codes used below threshold x the mean usage N/K restart at batch latents (Jukebox, SoundStream)."""

    learns_codebook_by_gradient = True

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, init: str = "uniform",
                 threshold: float = 0.25, decay: float = 0.8):
        super().__init__(dim, codebook_size, beta=beta, init=init)
        self.threshold = check_float("threshold", threshold, minimum=0.0, inclusive=False)
        self.decay = check_float("decay", decay, minimum=0.0, maximum=1.0, inclusive=False)
        # EMA of n_k * K / N: usage in units of the batch's mean per-code usage
        self.register_buffer("usage", torch.full((self.codebook_size,), INITIAL_USAGE))
        #: fraction of the K codes the last training forward restarted (for the trainer's log)
        self.last_restarted_fraction = 0.0
        # drawn last, so the codebook above is vq's under the same seed
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))

    def training_stats(self) -> dict[str, float]:
        return {"restarted_fraction": float(self.last_restarted_fraction)}

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
        relative = counts * (self.codebook_size / max(1, flat.shape[0]))  # n_k / (N / K)
        self.usage.mul_(self.decay).add_(relative, alpha=1.0 - self.decay)
        dead = (self.usage < self.threshold).nonzero().squeeze(1)
        if dead.numel() == 0:
            self.last_restarted_fraction = 0.0
            return dead
        if dead.numel() > flat.shape[0]:  # one latent per code: restart a random subset now, the rest later
            dead = dead[self.random_order(dead.numel(), dead.device)[: flat.shape[0]]]
        samples = flat[self.random_order(flat.shape[0], flat.device)[: dead.numel()]]
        # in place on the Parameter: this forward's graph holds only indices and a gathered copy of the codes
        self.embedding.index_copy_(0, dead, samples.to(self.embedding.dtype))
        self.usage.index_fill_(0, dead, self.threshold)
        self.last_restarted_fraction = dead.numel() / self.codebook_size
        return dead

    def random_order(self, n: int, device: torch.device) -> Tensor:
        return torch.randperm(n, generator=self.generator).to(device)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold}, decay={self.decay}"
