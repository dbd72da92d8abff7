"""The output contract every quantizer meets (quantizers.base.QuantizerOutput), asserted in one place."""
from __future__ import annotations

import torch


def assert_output_contract(quantizer, z: torch.Tensor, codebook_size: int, dim: int) -> None:
    out = quantizer(z)
    assert out.quantized.shape == z.shape and out.quantized.dtype == z.dtype
    assert out.indices.shape == z.shape[:2] and out.indices.dtype == torch.int64
    assert 0 <= out.indices.min() and out.indices.max() < codebook_size
    assert out.codebook_size == codebook_size
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert torch.allclose(out.loss, sum(out.losses.values()))
    assert "commitment" in out.losses
    assert quantizer.codebook().shape == (codebook_size, dim)
