"""Controls that separate SimVQ's cause from its confounds: registry variants and the options behind them."""
from __future__ import annotations

import pytest
import torch

import quantizers
from benchmark.cli import main
from benchmark.evaluation.codebook import gradient_coverage
from quantizers import registry
from quantizers.registry import PresetOptionError
from sweeps.grid import SweepGrid

VARIANTS = {
    "vq-simvq-init": ("vq", {"init": "simvq"}),
    "ema-simvq-init": ("ema", {"init": "simvq"}),
    "simvq-frozen-w": ("simvq", {"train_projection": False}),
    "simvq-train-c": ("simvq", {"train_codebook": True}),
    "simvq-no-bias": ("simvq", {"projection_bias": False}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_is_listed_built_and_described_like_a_class(name):
    base, preset = VARIANTS[name]
    assert name in quantizers.available()
    torch.manual_seed(0)
    quantizer = quantizers.build(name, dim=8, codebook_size=64)
    assert isinstance(quantizer, quantizers.get_class(base)) and quantizer.registry_name == name
    assert all(getattr(quantizer, option) == value for option, value in preset.items())
    out = quantizer(torch.randn(2, 5, 8))
    assert out.quantized.shape == (2, 5, 8) and out.indices.shape == (2, 5)
    info = quantizers.describe(name)
    assert info["base"] == base and info["preset"] == preset and info["summary"]
    base_options = [p.name for p in quantizers.describe(base)["options"]]
    assert [p.name for p in info["options"]] == [o for o in base_options if o not in preset]


def test_a_preset_option_cannot_be_overridden():
    with pytest.raises(PresetOptionError, match=r"'simvq-frozen-w' presets \{'train_projection': False\}"):
        quantizers.build("simvq-frozen-w", dim=4, codebook_size=16, train_projection=True)
    with pytest.raises(PresetOptionError):
        quantizers.build("vq-simvq-init", dim=4, codebook_size=16, init="simvq")  # even to the same value
    # the other options of the base still pass through
    assert quantizers.build("simvq-frozen-w", dim=4, codebook_size=16, beta=0.5).beta == 0.5


def test_register_variant_validates_its_arguments(monkeypatch):
    monkeypatch.setattr(registry, "_VARIANTS", dict(registry._VARIANTS))  # restored after the test
    with pytest.raises(ValueError, match="already registered"):
        registry.register_variant("vq", "simvq", "clash", beta=1.0)
    with pytest.raises(ValueError, match="base quantizer 'nope' is not registered"):
        registry.register_variant("x-test", "nope", "missing base", beta=1.0)
    with pytest.raises(ValueError, match="is a variant, not a class"):
        registry.register_variant("x-test", "simvq-frozen-w", "chained", beta=1.0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['gamma'\]"):
        registry.register_variant("x-test", "vq", "bad option", gamma=1.0)
    registry.register_variant("x-test", "vq", "VQ with a large beta (test only)", beta=2.0)
    assert quantizers.build("x-test", dim=2, codebook_size=4).beta == 2.0


def test_sweep_grid_validates_variant_options_against_the_base_minus_the_preset():
    SweepGrid(quantizers=["simvq-frozen-w"], codebook_sizes=[16], latent_dims=[4], seeds=[0],
              quantizer_options={"simvq-frozen-w": {"beta": 0.5}}).validate()
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['train_projection'\]"):
        SweepGrid(quantizers=["simvq-frozen-w"], codebook_sizes=[16], latent_dims=[4], seeds=[0],
                  quantizer_options={"simvq-frozen-w": {"train_projection": True}}).validate()


def test_vqbench_list_shows_variants_with_their_base_and_preset(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert listed == quantizers.available()
    assert "= simvq with train_projection=False" in out and "= vq with init='simvq'" in out


# ----------------------------------------------------------------------------- initial code scale
def test_vq_simvq_init_starts_where_simvq_starts_and_far_from_vq():
    size, dim = 1 << 14, 32
    torch.manual_seed(7)
    matched = quantizers.build("vq-simvq-init", dim=dim, codebook_size=size).codebook().detach()
    torch.manual_seed(7)
    simvq = quantizers.build("simvq", dim=dim, codebook_size=size).codebook().detach()
    vq = quantizers.build("vq", dim=dim, codebook_size=size).codebook().detach()
    assert torch.equal(matched, simvq)  # same draws in the same order: bit-identical under one seed
    assert float(matched.norm(dim=1).mean()) > 1000 * float(vq.norm(dim=1).mean())  # ≈ 0.8 vs ≈ 2e-4


def test_vq_simvq_init_has_simvqs_code_norms_across_seeds():
    # one seed's mean code norm varies by ~5 % with W's 32×32 draw, so compare averages over independent seeds
    def mean_code_norm(name: str, seed: int) -> float:
        torch.manual_seed(seed)
        return float(quantizers.build(name, dim=32, codebook_size=1 << 12).codebook().detach().norm(dim=1).mean())

    matched = sum(mean_code_norm("vq-simvq-init", seed) for seed in range(16)) / 16
    simvq = sum(mean_code_norm("simvq", 100 + seed) for seed in range(16)) / 16
    assert matched == pytest.approx(simvq, rel=0.05)
    assert matched == pytest.approx((2 / 3) ** 0.5, rel=0.05)  # E||Wc + b||² = 1/3 + 1/3 at PyTorch's init


def test_ema_simvq_init_keeps_its_averages_consistent():
    torch.manual_seed(3)
    ema = quantizers.build("ema-simvq-init", dim=8, codebook_size=64)
    torch.manual_seed(3)
    simvq = quantizers.build("simvq", dim=8, codebook_size=64)
    assert torch.equal(ema.codebook(), simvq.codebook().detach())
    assert torch.equal(ema.embedding_sum / ema.cluster_size.unsqueeze(1), ema.embedding)


def test_vq_simvq_init_still_moves_only_the_selected_codes():
    # the scale is SimVQ's, but the parameterization is VQ's: one SGD step moves the selected rows only
    torch.manual_seed(0)
    quantizer = quantizers.build("vq-simvq-init", dim=8, codebook_size=256)
    before = quantizer.codebook().detach().clone()
    out = quantizer(torch.randn(1, 16, 8))
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.1)
    out.loss.backward()
    optimizer.step()
    moved = (quantizer.codebook().detach() != before).any(dim=1)
    selected = torch.zeros(256, dtype=torch.bool)
    selected[out.indices.reshape(-1)] = True
    assert torch.equal(moved, selected) and 0 < int(selected.sum()) < 256


# ----------------------------------------------------------------------------- SimVQ's W
def _adam_step(quantizer) -> None:
    z = torch.nn.Parameter(torch.randn(2, 16, 8))  # stands in for the encoder: Adam always has a parameter
    optimizer = torch.optim.Adam([z, *(p for p in quantizer.parameters() if p.requires_grad)], lr=0.01)
    out = quantizer(z)
    (out.loss + out.quantized.pow(2).mean()).backward()
    optimizer.step()


def test_frozen_w_keeps_its_codebook_while_simvq_moves_every_code():
    for name, frozen in [("simvq", False), ("simvq-frozen-w", True)]:
        torch.manual_seed(0)
        quantizer = quantizers.build(name, dim=8, codebook_size=64)
        before = quantizer.codebook().detach().clone()
        _adam_step(quantizer)
        after = quantizer.codebook().detach()
        if frozen:
            assert torch.equal(after, before), name
        else:
            assert (after != before).any(dim=1).all(), name  # through W, every code moves


def test_frozen_w_and_c_report_no_codebook_learning_and_the_probe_returns_none():
    quantizer = quantizers.build("simvq-frozen-w", dim=8, codebook_size=64)
    assert not quantizer.learns_codebook_by_gradient
    assert not any(p.requires_grad for p in quantizer.parameters())
    quantizer(torch.randn(2, 16, 8, requires_grad=True)).loss.backward()
    assert gradient_coverage(quantizer) is None
    # W frozen but C trained: codes move again, one row each (disjoint, like VQ)
    learns_c = quantizers.build("simvq", dim=8, codebook_size=64, train_projection=False, train_codebook=True)
    assert learns_c.learns_codebook_by_gradient
    out = learns_c(torch.randn(1, 4, 8))
    out.loss.backward()
    assert gradient_coverage(learns_c) == pytest.approx(out.indices.unique().numel() / 64)


def test_no_bias_has_no_bias_parameter():
    quantizer = quantizers.build("simvq-no-bias", dim=8, codebook_size=64)
    assert quantizer.projection.bias is None
    assert [name for name, _ in quantizer.named_parameters()] == ["projection.weight"]
    assert quantizers.build("simvq", dim=8, codebook_size=64).projection.bias is not None


def test_train_c_learns_the_basis():
    quantizer = quantizers.build("simvq-train-c", dim=8, codebook_size=64)
    assert {name for name, p in quantizer.named_parameters() if p.requires_grad} == {
        "basis", "projection.weight", "projection.bias"}
