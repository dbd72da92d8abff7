"""Index Backpropagation Quantization (IBQ): straight-through on the categorical distribution over all
codes, so every code receives a gradient at every step, as long as its softmax probability does not
underflow (see the caveat below).

Shi, Luo, Ge, Yang, Shan, Wang, "Scalable Image Tokenization with Index Backpropagation Quantization"
(arXiv 2412.02692), the method section (index backpropagation; double quantization loss). With logits
``l = z C^T`` over all K codes,

    soft = softmax(l),   hard = one_hot(argmax l),   ind = hard - sg(soft) + soft,   z_q = ind C,

so the forward value is the selected code and the gradient flows through ``soft`` into z and into *every*
code (the joint optimization of codebook and encoder that avoids VQ's partial updates). The loss is the
paper's double quantization loss plus VQ's terms and, as in every released config, MAGVIT-v2's entropy
penalty:

    L = ||z_q - z||^2                          ("double_quantization": z_q with IBQ's gradient)
      + ||sg(hard C) - z||^2                   ("commitment", weight 1)
      + beta * ||hard C - sg(z)||^2            ("codebook", beta = 0.25)
      + entropy_weight * (sample_minimization_weight * E[H(p)] - batch_maximization_weight * H(E[p]))
        with p = softmax(l / entropy_temperature)                                       ("entropy")

Read in the authors' code (github.com/TencentARC/SEED-Voken, commit b9a17ea):
``src/IBQ/modules/vqvae/quantize.py`` L429-466 (``IndexPropagationQuantize.forward``: logits L433, soft and
hard one-hot L439-448, the three quantization terms L453-454), L343-372 (``compute_entropy_loss``: the
``eps = 1e-5`` inside the batch entropy's log), L386 (codes ``nn.Embedding``'s default N(0, 1) init);
``configs/IBQ/gpu/imagenet_ibqgan_16384.yaml`` L51-64 (``entropy_loss_weight: 0.05``, temperature 0.01,
both entropy weights 1, beta 0.25; the 1024, 8192 and 262144 configs are the same), and
``src/IBQ/modules/losses/vqperceptual.py`` L181-182 (how the entropy weight is applied).

Option names are the official ones where it has them (``beta``, ``entropy_temperature``,
``sample_minimization_weight``, ``batch_maximization_weight``); ``entropy_weight`` is the loss config's
``entropy_loss_weight`` (0 switches the entropy terms off, the code's ``use_entropy_loss=False``).

How it is computed here (same values and gradients, less memory):

- The index is ``argmax_k z.c_k`` (a dot product, not the nearest code), found by the blocked
  :func:`~quantizers.search.nearest_code` with zero code norms: ``argmin_k (0 - 2 z.c_k)``.
- The output is ``C[index] + (soft - sg(soft)) sg(C)``: the second term is exactly zero in value, so the
  output equals the code to the bit, and its gradient is the official one (the official
  ``(hard - sg(soft) + soft) C`` gives C the gradient ``hard^T g`` plus a term whose value is zero).
- Everything N x K (logits, both softmaxes, the entropy terms) is computed in row chunks of at most
  :data:`CHUNK_ELEMENTS` values by :class:`_SoftTerms`, an autograd.Function with a hand-written backward.
  Forward: one GEMM per chunk and PyTorch's fused log_softmax / softmax kernels for the entropy terms
  (nothing N x K is kept). Backward recomputes each chunk's logits with one GEMM and forms the whole logit
  gradient with softmax's own backward kernel, ``softmax'(l)[g C^T] + softmax'(l/T)[u - a log p] / T``,
  then ``dz = G C`` and ``dC += G^T z``: four GEMMs per chunk and no autograd graph over N x K tensors, so
  memory is O(chunk x K + K x dim). Values and gradients equal the textbook N x K formulation up to the
  order of fp32 sums (tests/test_ibq_speed_equivalence.py: rtol 1e-5, atol 1e-6 of the largest gradient).
  The work stays N x K x dim: IBQ is N x K by nature.

Caveat, "every code gets a gradient": code k's gradient is a sum over tokens of terms proportional to
``softmax(l)_k`` and ``softmax(l / T)_k``. In fp32 these underflow to exactly 0 once code k's logit is about
104 (times T for the entropy softmax) below the row's best, so with large latents codes far from every token
get exactly zero gradient, as in the official code. Measured (one step, K = 4096, dim 64, N(0, 1) codes,
latents N(0, 30^2); ``results/speed_ibq/measure_ibq.py --underflow-only``): with N = 1024 tokens 3,072 of the
4,096 codes got an exactly zero gradient (1,024 kept one); with N = 8192 tokens every code was within reach
of some token and none did; with N(0, 1) latents none did at either N.

Speed (results/speed_ibq/README.md: CPU, one thread, fp32, N = 8192, dim 64, forward + backward of
``quantized.square().mean() + loss``, medians on the shared 2-core machine; "floor" is vqbench's tiled
N x K x d matmul, forward only):

    K        this module            before (checkpointed autograd, a1a0cfd)   this / floor
    2^12     1.8 s,  +0.30 GiB      5.1 s,  +0.58 GiB                         21x
    2^14     3.6 s,  +0.30 GiB      14 s,   +0.58 GiB                         11x
    2^16     14 s,   +0.32 GiB      64 s,   +0.63 GiB                         16x (4.5x matmul + its backward)

Of the six N x K x d GEMMs per step (the search, the forward's logits, backward's logits, g C^T, G C and
G^T z) all but the search run on (rows, K) chunks that do not fit in cache: on the quiet machine at 2^16 the
six took 9.4 s with nothing between them (about 1.8x the tiled floor's time each) and the softmax work the
other 5.5 s of the 14.9 s step (``results/speed_ibq/lower_bound.py``). Tiling over codes too
(flash-attention style, every block in cache) was built and measured no faster (0.95-1.17x this module,
results/speed_ibq/README.md): split rows need their softmax-backward constants before any block of G, which
costs 8 GEMMs instead of 6 and reruns each softmax per pass. The six products alone, at this module's
shapes, cost 10x the floor, eight in-cache ones 8x: ~6x is not
reachable exactly on this CPU; a fused kernel for the softmax work could bring 16x to about 8-10x.

The official formulation (full N x K tensors) passes 24 GiB at about K = 87,000 (between 2^16 and 2^17) for
this N. Here memory stays flat until the K x dim state dominates (parameter, gradient, two Adam moments and
a few K-sized temporaries, about 2 KiB per code at dim 64): 24 GiB at roughly K = 10^7. Time grows linearly
in K, so IBQ at large K needs an accelerator. Timings vary by up to 2x with the load other users put on the
machine; the memory figures do not.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .base import Quantizer, QuantizerOutput, check_float
from .registry import register
from .search import nearest_code

#: Values per (rows, K) chunk buffer: 2^24 fp32 = 64 MiB; forward allocates three, backward four, once per call,
#: and reuses them for every chunk. Above glibc's largest
#: mmap threshold (32 MiB), so every chunk tensor is returned to the OS when freed; 16 MiB chunks were
#: recycled through the heap and fragmented it (peak resident memory then grew with K again).
CHUNK_ELEMENTS = 1 << 24
#: inside the batch entropy's log, as in the official ``compute_entropy_loss``
BATCH_ENTROPY_EPS = 1e-5


_aten = torch.ops.aten


def _chunk_rows(num_rows: int, num_codes: int) -> int:
    return max(1, min(num_rows, CHUNK_ELEMENTS // num_codes))


def _softmax(x: Tensor, out: Tensor) -> Tensor:
    """``softmax(x, dim=1)`` written into ``out`` (PyTorch's softmax kernel: one read of each row in cache)."""
    return _aten._softmax.out(x, 1, False, out=out)


def _softmax_backward(grad: Tensor, probs: Tensor, out: Tensor) -> Tensor:
    """``probs * (grad - <probs, grad>)`` per row, softmax's Jacobian product (autograd's own kernel)."""
    return _aten._softmax_backward_data.out(grad, probs, 1, probs.dtype, grad_input=out)


def _entropy_forward(flat: Tensor, codebook: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Chunk by chunk: the summed per-row entropy of ``p = softmax(z C^T / T)`` (scalar) and ``p``'s column
    sums ``(K,)``. One GEMM and two fused softmax kernels per chunk, nothing kept for backward."""
    num_rows, num_codes = flat.shape[0], codebook.shape[0]
    rows = _chunk_rows(num_rows, num_codes)
    logits_buf, log_probs_buf, probs_buf = (flat.new_empty(rows * num_codes) for _ in range(3))
    codebook_t = codebook.t()
    sample_entropy = flat.new_zeros(())
    probs_sum = flat.new_zeros(num_codes)
    for start in range(0, num_rows, rows):
        stop = min(start + rows, num_rows)
        size = (stop - start) * num_codes
        x = torch.mm(flat[start:stop], codebook_t, out=logits_buf[:size].view(-1, num_codes))
        x.div_(temperature)                                   # as the official logits / temperature
        log_p = _aten._log_softmax.out(x, 1, False, out=log_probs_buf[:size].view_as(x))
        p = _softmax(x, out=probs_buf[:size].view_as(x))
        sample_entropy -= torch.dot(p.view(-1), log_p.view(-1))  # sum over rows of -sum_k p log p
        probs_sum += p.sum(dim=0)
    return sample_entropy, probs_sum


class _SoftTerms(torch.autograd.Function):
    """IBQ's N x K terms with a hand-written, chunked backward.

    Outputs: the zero-valued soft path ``(soft - sg(soft)) sg(C)`` ``(N, d)`` and, when ``with_entropy``, the
    summed per-row entropy of ``p = softmax(l / T)`` and ``p``'s column sums ``(K,)`` (zeros otherwise).
    Backward recomputes each row chunk's logits ``l = z C^T`` with one GEMM and forms the logit gradient

        G = softmax'(l) [g C^T]  +  softmax'(l / T) [u - a log p] / T,    p = softmax(l / T)

    (``softmax'(x) [v] = s * (v - <s, v>)`` with ``s = softmax(x)``, autograd's own kernel; ``g`` is the soft
    path's upstream gradient, ``u`` the column sums', ``a`` the entropy sum's: dH/dx = -p (x - E_p x), and a
    per-row constant in ``v`` cancels, so ``log p`` stands for ``x``), then ``dz = G C`` and ``dC += G^T z``: four GEMMs per chunk and two
    softmax plus two softmax-backward kernels, each reading a row while it is in cache.
    """

    @staticmethod
    def forward(ctx, flat: Tensor, codebook: Tensor, temperature: float, with_entropy: bool):
        if with_entropy:
            sample_entropy, probs_sum = _entropy_forward(flat, codebook, temperature)
        else:
            sample_entropy, probs_sum = flat.new_zeros(()), flat.new_zeros(codebook.shape[0])
        ctx.save_for_backward(flat, codebook)
        ctx.temperature, ctx.with_entropy = temperature, with_entropy
        ctx.set_materialize_grads(False)
        return flat.new_zeros(flat.shape), sample_entropy, probs_sum

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_path: Tensor | None, grad_entropy: Tensor | None, grad_probs_sum: Tensor | None):
        flat, codebook = ctx.saved_tensors
        temperature = ctx.temperature
        with_entropy = ctx.with_entropy and (grad_entropy is not None or grad_probs_sum is not None)
        need_z, need_codebook = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (grad_path is None and not with_entropy) or not (need_z or need_codebook):
            return None, None, None, None
        num_rows, num_codes = flat.shape[0], codebook.shape[0]
        rows = _chunk_rows(num_rows, num_codes)
        logits_buf, upstream_buf, probs_buf, grad_buf = (flat.new_empty(rows * num_codes) for _ in range(4))
        codebook_t = codebook.t()
        entropy_scale = 0.0 if grad_entropy is None else -float(grad_entropy)
        if grad_probs_sum is None:
            grad_probs_sum = flat.new_zeros(num_codes)
        grad_z = torch.empty_like(flat) if need_z else None
        grad_codebook = torch.zeros_like(codebook) if need_codebook else None
        for start in range(0, num_rows, rows):
            stop = min(start + rows, num_rows)
            size = (stop - start) * num_codes
            z_rows = flat[start:stop]
            logits = torch.mm(z_rows, codebook_t, out=logits_buf[:size].view(-1, num_codes))
            grad_logits = None
            if grad_path is not None:
                upstream = torch.mm(grad_path[start:stop], codebook_t, out=upstream_buf[:size].view_as(logits))
                soft = _softmax(logits, out=probs_buf[:size].view_as(logits))
                grad_logits = _softmax_backward(upstream, soft, out=grad_buf[:size].view_as(logits))
            if with_entropy:
                x = logits.div_(temperature)                     # the forward's l / T, bit for bit
                p = _softmax(x, out=probs_buf[:size].view_as(x))
                # u - a log p rather than u - a x (the same up to a per-row constant, which cancels): log p is
                # near 0 where p matters, x is up to |l| / T, and subtracting <p, .> from it would cancel
                log_p = _aten._log_softmax.out(x, 1, False, out=upstream_buf[:size].view_as(x))
                upstream = torch.add(grad_probs_sum, log_p, alpha=entropy_scale, out=log_p)
                if grad_logits is None:
                    grad_logits = _softmax_backward(upstream, p, out=grad_buf[:size].view_as(x)).div_(temperature)
                else:
                    entropy_grad = _softmax_backward(upstream, p, out=x)
                    grad_logits.add_(entropy_grad, alpha=1.0 / temperature)
            if need_z:
                torch.mm(grad_logits, codebook, out=grad_z[start:stop])
            if need_codebook:
                grad_codebook.addmm_(grad_logits.t(), z_rows)
        return grad_z, grad_codebook, None, None


@register("ibq")
class IndexBackpropagationQuantizer(Quantizer):
    """Straight-through on softmax(z C^T) over all codes: every code whose probability does not underflow
    gets a gradient (IBQ, Shi et al. 2024)."""

    learns_codebook_by_gradient = True
    #: indices maximize z.c, they are not the nearest rows of codebook() (benchmark.evaluation.probes reads this)
    searches_codebook = False

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, entropy_weight: float = 0.05,
                 entropy_temperature: float = 0.01, sample_minimization_weight: float = 1.0,
                 batch_maximization_weight: float = 1.0):
        super().__init__(dim, codebook_size)
        self.beta = check_float("beta", beta, minimum=0.0)
        self.entropy_weight = check_float("entropy_weight", entropy_weight, minimum=0.0)
        self.entropy_temperature = check_float("entropy_temperature", entropy_temperature, minimum=0.0,
                                               inclusive=False)
        self.sample_minimization_weight = check_float("sample_minimization_weight", sample_minimization_weight,
                                                      minimum=0.0)
        self.batch_maximization_weight = check_float("batch_maximization_weight", batch_maximization_weight,
                                                     minimum=0.0)
        self.embedding = nn.Parameter(torch.randn(self.codebook_size, self.dim))  # nn.Embedding's N(0, 1)

    def codebook(self) -> Tensor:
        return self.embedding

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.embedding)

    def soft_terms(self, flat: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Chunked over rows of ``flat`` ``(N, dim)``: the soft path ``(N, dim)`` (None without autograd),
        the mean per-token entropy and the mean code distribution ``(K,)`` (None when entropy is off)."""
        codebook = self.embedding
        with_index = torch.is_grad_enabled() and (flat.requires_grad or codebook.requires_grad)
        with_entropy = self.entropy_weight > 0
        if with_index:
            index_path, sample_entropy, probs_sum = _SoftTerms.apply(flat, codebook, self.entropy_temperature,
                                                                     with_entropy)
        elif with_entropy:
            index_path = None
            with torch.no_grad():
                sample_entropy, probs_sum = _entropy_forward(flat, codebook, self.entropy_temperature)
        else:
            return None, None, None
        if not with_entropy:
            return index_path, None, None
        return index_path, sample_entropy / flat.shape[0], probs_sum / flat.shape[0]

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_input(z)
        flat = z.reshape(-1, self.dim)
        indices = nearest_code(flat, self.embedding, codebook_sq_norms=self.embedding.new_zeros(self.codebook_size))
        return self.assemble(z, indices, *self.soft_terms(flat))

    def assemble(self, z: Tensor, indices: Tensor, index_path: Tensor | None, sample_entropy: Tensor | None,
                 mean_probs: Tensor | None) -> QuantizerOutput:
        """The output and the losses from the selected ``indices`` (flat) and :meth:`soft_terms`' values."""
        hard = F.embedding(indices, self.embedding)                # hard one-hot times C: gradient hard^T g
        quantized = hard if index_path is None else hard + index_path  # value exactly hard
        quantized, hard = quantized.view_as(z), hard.view_as(z)

        losses = {
            "double_quantization": F.mse_loss(quantized, z),
            "commitment": F.mse_loss(z, hard.detach()),
            "codebook": self.beta * F.mse_loss(hard, z.detach()),
        }
        if sample_entropy is not None:
            batch_entropy = -(mean_probs * (mean_probs + BATCH_ENTROPY_EPS).log()).sum()
            losses["entropy"] = self.entropy_weight * (self.sample_minimization_weight * sample_entropy
                                                       - self.batch_maximization_weight * batch_entropy)
        return QuantizerOutput(
            quantized=quantized,
            indices=indices.view(z.shape[:-1]),
            loss=sum(losses.values()),
            losses=losses,
            codebook_size=self.codebook_size,
        )

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, beta={self.beta}, entropy_weight={self.entropy_weight}, "
                f"entropy_temperature={self.entropy_temperature}")
