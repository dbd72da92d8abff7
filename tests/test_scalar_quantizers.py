"""FSQ and LFQ: level lists, exact enumeration of the implicit codebooks, the LFQ entropy terms, and
the bad-input errors."""
from __future__ import annotations

import math

import pytest
import torch

import quantizers
from quantizers.fsq import PAPER_LEVELS, FiniteScalarQuantizer, fsq_levels_for
from quantizers.lfq import (
    LookupFreeQuantizer,
    bit_logits,
    codebook_entropy_exact,
    codebook_entropy_factorized,
    per_sample_entropy,
)


# ----------------------------------------------------------------------------- helpers
def fsq_preimages(quantizer: FiniteScalarQuantizer) -> torch.Tensor:
    """Inputs ``(1, K, channels)`` that quantize to codes 0..K-1, found by scanning the public bound."""
    scan = torch.linspace(-8, 8, 16001, dtype=torch.float64)
    rounded = torch.round(quantizer.bound(scan[:, None].expand(-1, quantizer.num_channels)))  # (T, C)
    per_channel = []
    for channel, levels in enumerate(quantizer.levels):
        values = torch.arange(levels, dtype=torch.float64) - levels // 2  # level values for digits 0..L-1
        hits = [scan[(rounded[:, channel] == v).nonzero()[0, 0]] for v in values]  # IndexError if unreachable
        per_channel.append(torch.stack(hits))
    digits = torch.stack(
        [(torch.arange(quantizer.codebook_size) // math.prod(quantizer.levels[:c])) % L
         for c, L in enumerate(quantizer.levels)], -1)
    return torch.stack([per_channel[c][digits[:, c]] for c in range(len(quantizer.levels))], -1)[None]


def brute_force_entropies(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The LFQ entropy terms from their definition: a softmax over all 2^B sign vectors."""
    num_bits = z.shape[-1]
    codes = torch.tensor([[1.0 if (k >> i) & 1 else -1.0 for i in range(num_bits)] for k in range(2**num_bits)],
                         dtype=z.dtype)
    probs = torch.softmax(-torch.cdist(z, codes) ** 2 / temperature, dim=-1)
    per_sample = -(probs * probs.clamp_min(1e-300).log()).sum(-1).mean()
    mean = probs.mean(0)
    return per_sample, -(mean * mean.clamp_min(1e-300).log()).sum()


# ----------------------------------------------------------------------------- FSQ levels
@pytest.mark.parametrize("size", sorted(PAPER_LEVELS))
def test_fsq_levels_for_uses_the_paper_table(size):
    expected = {256: [8, 6, 5], 1024: [8, 5, 5, 5], 4096: [7, 5, 5, 5, 5],
                16384: [8, 8, 8, 6, 5], 65536: [8, 8, 8, 5, 5, 5]}[size]
    assert fsq_levels_for(size) == expected


def test_fsq_level_products_for_the_issue_examples():
    assert fsq_levels_for(2**10) == [8, 5, 5, 5] and math.prod(fsq_levels_for(2**10)) == 1000
    assert fsq_levels_for(2**16) == [8, 8, 8, 5, 5, 5] and math.prod(fsq_levels_for(2**16)) == 64_000


def test_fsq_levels_for_unlisted_sizes_follows_the_documented_rule():
    assert fsq_levels_for(2**18) == [8, 8, 8, 8, 8, 8]
    assert fsq_levels_for(2**9) == [8, 8, 8]
    for exponent in range(5, 25):
        levels = fsq_levels_for(2**exponent)
        assert abs(math.prod(levels) / 2**exponent - 1) <= 0.10
        if 2**exponent not in PAPER_LEVELS:
            assert all(5 <= L <= 8 for L in levels) and levels == sorted(levels, reverse=True)


@pytest.mark.parametrize("size", [4, 16, 100])
def test_fsq_rejects_sizes_no_level_list_reaches(size):
    with pytest.raises(ValueError, match=r"codebook_size=.*accepted sizes are 5-8, 23-71, 114-565"):
        fsq_levels_for(size)
    with pytest.raises(ValueError, match="codebook_size"):
        quantizers.build("fsq", dim=4, codebook_size=size)


def test_fsq_records_requested_and_real_codebook_size():
    quantizer = quantizers.build("fsq", dim=4, codebook_size=1024)
    assert quantizer.levels == (8, 5, 5, 5)
    assert quantizer.codebook_size == 1000 and quantizer.requested_codebook_size == 1024
    out = quantizer(torch.randn(2, 3, 4))
    assert out.codebook_size == 1000
    explicit = quantizers.build("fsq", dim=3, codebook_size=64, levels=[4, 4, 4])
    assert explicit.codebook_size == 64 and explicit.levels == (4, 4, 4)


# ----------------------------------------------------------------------------- enumeration
@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [3, 4, 2], [7, 6]])
def test_fsq_enumerates_exactly_its_codebook(levels):
    quantizer = FiniteScalarQuantizer(dim=len(levels), codebook_size=math.prod(levels), levels=levels).double()
    size = math.prod(levels)
    codes = quantizer.indices_to_codes(torch.arange(size))
    assert codes.shape == (size, len(levels))
    assert torch.unique(codes, dim=0).shape[0] == size
    assert codes.min() >= -1 and codes.max() <= 1
    out = quantizer(fsq_preimages(quantizer))
    assert torch.equal(out.indices[0], torch.arange(size))
    assert torch.equal(out.quantized[0], codes)


def test_fsq_with_projection_has_a_distinct_projected_codebook():
    torch.manual_seed(0)
    quantizer = quantizers.build("fsq", dim=16, codebook_size=256)
    codebook = quantizer.codebook()
    assert codebook.shape == (240, 16)
    assert torch.unique(codebook, dim=0).shape[0] == 240
    out = quantizer(torch.randn(2, 50, 16))
    torch.testing.assert_close(codebook[out.indices], out.quantized)


@pytest.mark.parametrize("num_bits", [1, 4, 7])
def test_lfq_enumerates_exactly_its_codebook(num_bits):
    size = 2**num_bits
    quantizer = LookupFreeQuantizer(dim=num_bits, codebook_size=size)
    codes = quantizer.codebook()
    assert codes.shape == (size, num_bits)
    assert torch.unique(codes, dim=0).shape[0] == size
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    out = quantizer(codes[None])
    assert torch.equal(out.indices[0], torch.arange(size))
    assert torch.equal(out.quantized[0], codes)


def test_lfq_index_is_the_binary_number_of_positive_channels():
    quantizer = LookupFreeQuantizer(dim=3, codebook_size=8)
    z = torch.tensor([[[0.3, -1.0, -2.0], [-0.1, 0.2, 0.5], [0.0, 0.0, 0.0]]])
    assert quantizer(z).indices.tolist() == [[1, 6, 0]]  # z_i <= 0 maps to -1 (bit 0)


# ----------------------------------------------------------------------------- shared contract
CONFIGS = [
    ("fsq", 4, 1024, {}),                                  # no projection
    ("fsq", 12, 256, {}),                                  # projected in and out
    ("lfq", 8, 256, {}),                                   # no projection, exact entropy
    ("lfq", 12, 1024, {"codebook_entropy": "factorized"}),  # projected, factorized entropy
]


@pytest.mark.parametrize("name,dim,size,options", CONFIGS)
def test_shapes_index_range_round_trip_and_gradient(name, dim, size, options):
    torch.manual_seed(0)
    quantizer = quantizers.build(name, dim=dim, codebook_size=size, **options)
    z = torch.randn(3, 40, dim, requires_grad=True)
    out = quantizer(z)
    assert out.quantized.shape == z.shape
    assert out.indices.shape == (3, 40) and out.indices.dtype == torch.int64
    assert 0 <= out.indices.min() and out.indices.max() < quantizer.codebook_size
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    torch.testing.assert_close(quantizer.indices_to_codes(out.indices), out.quantized)
    (out.quantized.square().sum() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_fsq_has_no_auxiliary_loss():
    out = quantizers.build("fsq", dim=4, codebook_size=1024)(torch.randn(2, 8, 4))
    assert out.losses == {} and out.loss.item() == 0.0


def test_lfq_reports_named_losses():
    out = quantizers.build("lfq", dim=4, codebook_size=16)(torch.randn(2, 8, 4))
    assert set(out.losses) == {"entropy", "commitment"}
    torch.testing.assert_close(out.loss, out.losses["entropy"] + out.losses["commitment"])


# ----------------------------------------------------------------------------- LFQ entropy
@pytest.mark.parametrize("mode", ["exact", "factorized"])
def test_lfq_entropy_loss_is_lower_for_uniform_code_use(mode):
    num_bits = 5
    quantizer = LookupFreeQuantizer(dim=num_bits, codebook_size=2**num_bits, codebook_entropy=mode)
    every_code = quantizer.codebook()[None]                       # (1, 32, 5): each code once
    one_code = every_code[:, :1].expand(-1, 2**num_bits, -1)      # the same code 32 times
    uniform = quantizer(every_code).losses["entropy"]
    collapsed = quantizer(one_code).losses["entropy"]
    assert uniform < collapsed
    # confident tokens: per-sample entropy ~0; uniform use: codebook entropy = log K
    torch.testing.assert_close(uniform, torch.tensor(-0.1 * num_bits * math.log(2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(collapsed, torch.tensor(0.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_bits", [1, 2, 5])
def test_lfq_entropy_terms_match_their_definition(num_bits):
    generator = torch.Generator().manual_seed(num_bits)
    z = 0.02 * torch.randn(300, num_bits, generator=generator, dtype=torch.float64)
    exact = LookupFreeQuantizer(dim=num_bits, codebook_size=2**num_bits, codebook_entropy="exact").double()
    factorized = LookupFreeQuantizer(dim=num_bits, codebook_size=2**num_bits, codebook_entropy="factorized")
    per_sample_true, codebook_true = brute_force_entropies(z, temperature=0.01)
    per_sample_exact, codebook_exact = exact.entropy_terms(z)
    per_sample_factorized, codebook_factorized = factorized.double().entropy_terms(z)
    torch.testing.assert_close(per_sample_exact, per_sample_true)
    torch.testing.assert_close(per_sample_factorized, per_sample_true)
    torch.testing.assert_close(codebook_exact, codebook_true)
    assert codebook_factorized >= codebook_exact - 1e-12


def test_factorized_codebook_entropy_overestimates_correlated_bits():
    # half the tokens at code 0 (all -1), half at code 2^B - 1 (all +1): two codes used, log 2 nats;
    # every bit alone is a fair coin, so the per-bit sum says B log 2.
    num_bits = 6
    z = torch.cat([-torch.ones(50, num_bits), torch.ones(50, num_bits)])
    logits = bit_logits(z, temperature=0.01)
    torch.testing.assert_close(codebook_entropy_exact(logits), torch.tensor(math.log(2)))
    torch.testing.assert_close(codebook_entropy_factorized(logits), torch.tensor(num_bits * math.log(2)))
    torch.testing.assert_close(per_sample_entropy(logits), torch.tensor(0.0), atol=1e-6, rtol=0)


def test_exact_codebook_entropy_gradient_matches_brute_force():
    z = (0.02 * torch.randn(64, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    z_fast = z.clone().requires_grad_(True)
    z_slow = z.clone().requires_grad_(True)
    codebook_entropy_exact(bit_logits(z_fast, 0.01)).backward()
    brute_force_entropies(z_slow, 0.01)[1].backward()
    torch.testing.assert_close(z_fast.grad, z_slow.grad)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["fsq", "lfq"])
@pytest.mark.parametrize("size", [1, 0, -4])
def test_codebook_size_below_two_is_rejected(name, size):
    with pytest.raises(ValueError, match="codebook_size must be >= 2"):
        quantizers.build(name, dim=4, codebook_size=size)


@pytest.mark.parametrize("levels,match", [
    ([8, 1, 5], r"levels\[1\] must be >= 2"),
    ([], "levels must be a non-empty list"),
    ("855", "levels must be a list of integers"),
    ([8, 5, 5, 5], "levels=.*give 1000 codes, not within 10% of codebook_size=4096"),
])
def test_fsq_bad_levels_are_rejected(levels, match):
    with pytest.raises(ValueError, match=match):
        quantizers.build("fsq", dim=4, codebook_size=4096, levels=levels)


@pytest.mark.parametrize("size", [3, 1000, 2**10 + 1])
def test_lfq_size_must_be_a_power_of_two(size):
    with pytest.raises(ValueError, match="codebook_size must be a power of two"):
        quantizers.build("lfq", dim=4, codebook_size=size)


@pytest.mark.parametrize("option,value,match", [
    ("codebook_entropy", "sampled", r"codebook_entropy must be one of \['exact', 'factorized'\]"),
    ("temperature", 0.0, r"temperature must be in \(0.0, inf\)"),
    ("entropy_weight", -1.0, r"entropy_weight must be in \[0.0, inf\]"),
])
def test_lfq_bad_options_are_rejected(option, value, match):
    with pytest.raises(ValueError, match=match):
        quantizers.build("lfq", dim=4, codebook_size=16, **{option: value})


@pytest.mark.parametrize("name,size", [("fsq", 1024), ("lfq", 16)])
def test_bad_inputs_are_rejected(name, size):
    quantizer = quantizers.build(name, dim=4, codebook_size=size)
    with pytest.raises(ValueError, match=r"z must have shape \(batch, tokens, dim=4\)"):
        quantizer(torch.randn(8, 4))
    with pytest.raises(ValueError, match="z's last dimension must equal dim=4"):
        quantizer(torch.randn(2, 8, 5))
    z = torch.randn(2, 8, 4)
    z[1, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="z contains NaN"):
        quantizer(z)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, "):
        quantizer.indices_to_codes(torch.tensor([quantizer.codebook_size]))
    with pytest.raises(ValueError, match="indices must be an integer tensor"):
        quantizer.indices_to_codes(torch.tensor([0.0]))
