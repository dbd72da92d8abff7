"""IBQ's chunked autograd.Function (quantizers/ibq.py) against the textbook formula of its docstring, written
here with full N x K tensors and plain autograd: the same indices, quantized values, losses and gradients
(w.r.t. the latents and the codebook) for several K, one chunk or many, with and without the entropy terms.

Tolerance: indices equal; quantized values and the loss within rtol 1e-5 / atol 1e-6; gradients within
rtol 1e-5 / atol 1e-6 of the gradient's largest entry. The difference is only the order of sums (the
reference's softmax and entropy reductions over K versus the module's row dots and GEMMs), a few fp32 ulps.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import quantizers

DIM = 16
TOKENS = 96


def reference_ibq(z, codebook, beta=0.25, entropy_weight=0.05, temperature=0.01, sample_weight=1.0,
                  batch_weight=1.0, eps=1e-5):
    """soft = softmax(l), hard = one_hot(argmax l), z_q = (hard - sg(soft) + soft) C, l = z C^T; the double
    quantization, commitment and codebook terms and MAGVIT-v2's entropy penalty, all N x K."""
    logits = z @ codebook.t()
    soft = logits.softmax(dim=1)
    index = logits.argmax(dim=1)
    hard = F.one_hot(index, codebook.shape[0]).to(z.dtype)
    z_q = (hard - soft.detach() + soft) @ codebook
    hard_codes = hard @ codebook
    loss = (F.mse_loss(z_q, z) + F.mse_loss(z, hard_codes.detach()) + beta * F.mse_loss(hard_codes, z.detach()))
    if entropy_weight > 0:
        log_probs = (logits / temperature).log_softmax(dim=1)
        probs = log_probs.exp()
        sample_entropy = -(probs * log_probs).sum(dim=1).mean()
        mean_probs = probs.mean(dim=0)
        batch_entropy = -(mean_probs * (mean_probs + eps).log()).sum()
        loss = loss + entropy_weight * (sample_weight * sample_entropy - batch_weight * batch_entropy)
    return z_q, index, loss


def close(actual, expected, rtol=1e-5, atol=1e-6):
    return torch.allclose(actual, expected, rtol=rtol, atol=atol), (actual - expected).abs().max().item()


def run_both(codebook_size, chunk_elements, monkeypatch, scale=0.5, seed=0, **options):
    monkeypatch.setattr("quantizers.ibq.CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(seed)
    quantizer = quantizers.build("ibq", dim=DIM, codebook_size=codebook_size, **options).train()
    generator = torch.Generator().manual_seed(seed + 1)
    z = (scale * torch.randn(2, TOKENS // 2, DIM, generator=generator)).requires_grad_(True)
    upstream = torch.randn(z.shape, generator=generator)  # a generic gradient into the quantized values
    out = quantizer(z)
    ((out.quantized * upstream).sum() + out.loss).backward()

    codebook = quantizer.embedding.detach().clone().requires_grad_(True)
    z_ref = z.detach().clone().requires_grad_(True)
    z_q, index, loss = reference_ibq(z_ref.reshape(-1, DIM), codebook, beta=quantizer.beta,
                                     entropy_weight=quantizer.entropy_weight,
                                     temperature=quantizer.entropy_temperature)
    ((z_q * upstream.reshape(-1, DIM)).sum() + loss).backward()
    return out, z, quantizer.embedding.grad, (z_q, index, loss, z_ref.grad, codebook.grad)


@pytest.mark.parametrize("entropy_weight", [0.05, 0.0], ids=["entropy", "no-entropy"])
@pytest.mark.parametrize("codebook_size,chunk_elements", [
    (32, 1 << 24),      # one chunk
    (32, 64),           # 2 rows per chunk: 48 chunks
    (300, 300 * 7),     # 7 rows per chunk, a ragged last chunk
    (4096, 1 << 24),    # K = 2^12, one chunk
    (4096, 4096 * 40),  # K = 2^12, 40 rows per chunk, ragged
])
@pytest.mark.parametrize("scale", [0.5, 2.0], ids=["small-logits", "large-logits"])  # 2.0: logits std 8
def test_ibq_matches_the_unchunked_textbook_formula(codebook_size, chunk_elements, entropy_weight, scale,
                                                     monkeypatch):
    out, z, codebook_grad, (z_q, index, loss, z_grad_ref, codebook_grad_ref) = run_both(
        codebook_size, chunk_elements, monkeypatch, scale=scale, entropy_weight=entropy_weight)
    assert torch.equal(out.indices.flatten(), index)
    ok, err = close(out.quantized.detach().reshape(-1, DIM), z_q.detach())
    assert ok, f"quantized differs by {err}"
    ok, err = close(out.loss.detach(), loss.detach())
    assert ok, f"loss differs by {err}"
    for name, actual, expected in [("z", z.grad, z_grad_ref), ("codebook", codebook_grad,
                                                                               codebook_grad_ref)]:
        ok, err = close(actual, expected, atol=1e-6 * expected.abs().max().item())
        assert ok, f"gradient w.r.t. {name} differs by {err} (largest entry {expected.abs().max().item()})"


def test_ibq_values_without_autograd_match_the_training_path(monkeypatch):
    """Under no_grad (evaluation) the entropy comes from the forward-only path; same values as with autograd."""
    monkeypatch.setattr("quantizers.ibq.CHUNK_ELEMENTS", 64 * 10)
    torch.manual_seed(0)
    quantizer = quantizers.build("ibq", dim=DIM, codebook_size=64)
    z = 0.5 * torch.randn(1, 50, DIM)
    trained = quantizer(z.clone().requires_grad_(True))
    with torch.no_grad():
        evaluated = quantizer(z)
    assert torch.equal(trained.indices, evaluated.indices)
    assert torch.equal(trained.quantized.detach(), evaluated.quantized)
    assert torch.equal(trained.loss.detach(), evaluated.loss)


def test_ibq_gradient_only_for_the_codebook(monkeypatch):
    """Latents without requires_grad (a frozen encoder): the codebook still gets IBQ's full gradient."""
    monkeypatch.setattr("quantizers.ibq.CHUNK_ELEMENTS", 32 * 5)
    torch.manual_seed(0)
    quantizer = quantizers.build("ibq", dim=DIM, codebook_size=32)
    z = 0.5 * torch.randn(1, 40, DIM)
    out = quantizer(z)
    (out.quantized.square().sum() + out.loss).backward()
    codebook = quantizer.embedding.detach().clone().requires_grad_(True)
    z_q, _, loss = reference_ibq(z.reshape(-1, DIM), codebook)
    (z_q.square().sum() + loss).backward()
    assert torch.allclose(quantizer.embedding.grad, codebook.grad, rtol=1e-5,
                          atol=1e-6 * codebook.grad.abs().max().item())


def test_ibq_softmax_underflow_leaves_codes_without_gradient():
    """The docstring's caveat: with large latents softmax(z C^T) underflows to exact zeros in fp32, and codes
    whose probability underflows for every token get exactly zero gradient, here as in the reference."""
    torch.manual_seed(0)
    quantizer = quantizers.build("ibq", dim=DIM, codebook_size=256)
    z = (30 * torch.randn(1, 64, DIM)).requires_grad_(True)
    out = quantizer(z)
    (out.quantized.square().mean() + out.loss).backward()
    codebook = quantizer.embedding.detach().clone().requires_grad_(True)
    z_q, _, loss = reference_ibq(z.detach().reshape(-1, DIM), codebook)
    (z_q.square().mean() + loss).backward()
    zero = quantizer.embedding.grad.eq(0).all(dim=1)
    assert zero.any()
    assert torch.equal(zero, codebook.grad.eq(0).all(dim=1))
