"""VQ, EMA-VQ and SimVQ: the shared contract, and the collapse theory's mechanism after one step.

Zhu et al. 2024 (SimVQ, arXiv 2411.02038) trace collapse to disjoint codebook optimization: a VQ step moves
only the selected codes. These tests check that mechanism on the real modules with a plain SGD step:
VQ moves exactly the selected codes, SimVQ moves every effective code, EMA-VQ moves codes only through its
running averages (no optimizer gradient) and only the assigned ones.
"""
from __future__ import annotations

import pytest
import torch

import quantizers
from quantizers.search import nearest_code

from .contracts import assert_output_contract

DIM = 8
CODEBOOK_SIZE = 32
# (registry name, options): every codebook quantizer, and SimVQ's trained-basis ablation
CONFIGS = [("vq", {}), ("vq", {"init": "normal"}), ("ema", {}), ("simvq", {}),
           ("simvq", {"train_codebook": True})]
IDS = ["vq", "vq-normal", "ema", "simvq", "simvq-train-codebook"]


def build(name, options, seed=0, codebook_size=CODEBOOK_SIZE):
    torch.manual_seed(seed)
    return quantizers.build(name, dim=DIM, codebook_size=codebook_size, **options)


def latents(rng, batch=3, tokens=20, scale=1.0):
    return (scale * torch.randn(batch, tokens, DIM, generator=rng)).requires_grad_(True)


def test_codebook_quantizers_are_registered():
    assert {"vq", "ema", "simvq"} <= set(quantizers.available())
    assert quantizers.get_class("vq").learns_codebook_by_gradient
    assert quantizers.get_class("simvq").learns_codebook_by_gradient
    assert not quantizers.get_class("ema").learns_codebook_by_gradient


@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_output_contract(name, options, rng):
    assert_output_contract(build(name, options), latents(rng), CODEBOOK_SIZE, DIM)


@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_indices_are_the_nearest_codes_and_map_back_to_what_forward_gave(name, options, rng):
    quantizer = build(name, options).eval()  # eval: EMA's codebook stays put
    z = latents(rng, scale=0.3)
    out = quantizer(z)
    codebook = quantizer.codebook().detach()
    assert torch.equal(out.indices.flatten(), nearest_code(z.detach().reshape(-1, DIM), codebook))
    codes = quantizer.indices_to_codes(out.indices)
    assert codes.shape == z.shape
    assert torch.equal(codes, out.quantized.detach())  # straight-through: forward value is the code
    assert torch.equal(codes, codebook[out.indices])


@pytest.mark.parametrize("name,options", [c for c in CONFIGS if c[0] != "ema"],
                         ids=[i for i in IDS if i != "ema"])
def test_round_trip_holds_in_training_mode(name, options, rng):
    quantizer = build(name, options).train()
    out = quantizer(latents(rng))
    assert torch.equal(quantizer.indices_to_codes(out.indices), out.quantized.detach())


@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_gradient_reaches_the_input(name, options, rng):
    quantizer = build(name, options)
    z = latents(rng)
    out = quantizer(z)
    # straight-through: the decoder's gradient passes to z unchanged
    (grad_from_decoder,) = torch.autograd.grad(out.quantized.pow(2).sum(), z, retain_graph=True)
    assert torch.equal(grad_from_decoder, 2 * out.quantized.detach())
    # the commitment term pulls z towards its code
    (grad_from_loss,) = torch.autograd.grad(out.loss, z)
    assert grad_from_loss.abs().sum() > 0


def sgd_step(quantizer, z):
    """One plain SGD step on the quantizer's own loss; returns the effective codebook before and after
    and the set of selected indices."""
    before = quantizer.codebook().detach().clone()
    parameters = [p for p in quantizer.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=0.5) if parameters else None
    out = quantizer(z)
    if optimizer is not None:
        optimizer.zero_grad()
    out.loss.backward()
    if optimizer is not None:
        optimizer.step()
    after = quantizer.codebook().detach().clone()
    return before, after, set(out.indices.flatten().tolist())


def moved_codes(before, after):
    return set((before != after).any(dim=1).nonzero().flatten().tolist())


def test_vq_step_moves_exactly_the_selected_codes(rng):
    quantizer = build("vq", {"init": "normal"}).train()
    z = latents(rng, batch=1, tokens=6)
    before, after, selected = sgd_step(quantizer, z)
    assert 0 < len(selected) < CODEBOOK_SIZE
    assert moved_codes(before, after) == selected


@pytest.mark.parametrize("options", [{}, {"train_codebook": True}], ids=["frozen-basis", "trained-basis"])
def test_simvq_step_moves_every_effective_code(options, rng):
    quantizer = build("simvq", options).train()
    basis_before = quantizer.basis.detach().clone()
    z = latents(rng, batch=1, tokens=6)
    before, after, selected = sgd_step(quantizer, z)
    assert len(selected) < CODEBOOK_SIZE / 2  # few codes selected ...
    assert moved_codes(before, after) == set(range(CODEBOOK_SIZE))  # ... yet all of them moved
    moved_basis = moved_codes(basis_before, quantizer.basis.detach())
    if options.get("train_codebook"):
        assert quantizer.basis.requires_grad and moved_basis == selected  # C itself: only selected rows
    else:
        assert not quantizer.basis.requires_grad and moved_basis == set()


def test_simvq_follows_the_official_parameterization():
    quantizer = build("simvq", {}, codebook_size=4096)
    assert "basis" in dict(quantizer.named_buffers())
    assert [name for name, _ in quantizer.named_parameters()] == ["projection.weight", "projection.bias"]
    assert quantizer.projection.weight.shape == (DIM, DIM)
    assert quantizer.basis.std().item() == pytest.approx(DIM ** -0.5, rel=0.05)
    assert torch.allclose(quantizer.codebook(), quantizer.basis @ quantizer.projection.weight.t()
                          + quantizer.projection.bias, atol=1e-6)
    trained = build("simvq", {"train_codebook": True})
    assert "basis" in dict(trained.named_parameters())


def test_ema_has_no_parameters_and_takes_no_gradient(rng):
    quantizer = build("ema", {}).train()
    assert list(quantizer.parameters()) == []
    z = latents(rng)
    out = quantizer(z)
    out.loss.backward()
    assert set(out.losses) == {"commitment"}
    assert quantizer.embedding.grad is None and not quantizer.embedding.requires_grad
    assert z.grad is not None


def test_ema_moves_only_assigned_codes_through_its_averages(rng):
    """One training forward applies VQ-VAE App. A.1 Eqs. 6-8 with Laplace smoothing; nothing else moves."""
    decay, eps = 0.99, 1e-5
    quantizer = build("ema", {"init": "normal", "decay": decay, "eps": eps}).train()
    z = latents(rng, batch=1, tokens=6)
    flat = z.detach().reshape(-1, DIM)
    before, after, selected = sgd_step(quantizer, z)

    indices = nearest_code(flat, before)
    counts = torch.bincount(indices, minlength=CODEBOOK_SIZE).float()
    sums = torch.zeros(CODEBOOK_SIZE, DIM).index_add_(0, indices, flat)
    cluster_size = decay * torch.ones(CODEBOOK_SIZE) + (1 - decay) * counts    # Eq. 6, from N_k = 1
    embedding_sum = decay * before + (1 - decay) * sums                          # Eq. 7, from m_k = e_k
    total = cluster_size.sum()
    smoothed = (cluster_size + eps) / (total + CODEBOOK_SIZE * eps) * total
    assert torch.allclose(after, embedding_sum / smoothed[:, None], rtol=1e-5, atol=1e-7)  # Eq. 8

    # assigned codes move towards their tokens' mean; the others only by the smoothing's global factor
    step = (after - before).norm(dim=1) / before.norm(dim=1)
    unselected = sorted(set(range(CODEBOOK_SIZE)) - selected)
    assert step[unselected].max() < 1e-4
    assert step[sorted(selected)].min() > 1e-3
    for k in selected:
        tokens_mean = flat[indices == k].mean(0)
        assert (after[k] - tokens_mean).norm() < (before[k] - tokens_mean).norm()

    # eval mode: no update at all
    quantizer.eval()
    frozen = quantizer.codebook().clone()
    quantizer(z)
    assert torch.equal(quantizer.codebook(), frozen)


@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_state_dict_restores_the_same_quantizer(name, options, rng):
    trained = build(name, options, seed=1).train()
    trained(latents(rng))  # EMA: moves its buffers
    restored = build(name, options, seed=2)
    restored.load_state_dict(trained.state_dict())
    z = latents(rng)
    assert torch.equal(trained.eval()(z).indices, restored.eval()(z).indices)
    assert torch.equal(trained.codebook(), restored.codebook())


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["vq", "ema", "simvq"])
@pytest.mark.parametrize("bad_z,message", [
    (torch.zeros(4, DIM), "shape"),
    (torch.zeros(2, 4, DIM, 1), "shape"),
    (torch.zeros(2, 4, DIM + 1), "last dimension"),
    (torch.full((2, 4, DIM), float("nan")), "NaN"),
    (torch.tensor([[[float("inf")] * DIM]]), "infinite"),
])
def test_bad_input_raises(name, bad_z, message):
    with pytest.raises(ValueError, match=message):
        build(name, {})(bad_z)


@pytest.mark.parametrize("name", ["vq", "ema", "simvq"])
@pytest.mark.parametrize("codebook_size", [1, 0, -4, 2.5, "8"])
def test_bad_codebook_size_raises(name, codebook_size):
    with pytest.raises(ValueError, match="codebook_size"):
        quantizers.build(name, dim=DIM, codebook_size=codebook_size)


@pytest.mark.parametrize("name,options,argument", [
    ("vq", {"beta": -0.1}, "beta"),
    ("vq", {"init": "kmeans"}, "init"),
    ("ema", {"beta": -1}, "beta"),
    ("ema", {"beta": float("nan")}, "beta"),
    ("ema", {"decay": 0.0}, "decay"),
    ("ema", {"decay": 1.0}, "decay"),
    ("ema", {"decay": 1.5}, "decay"),
    ("ema", {"eps": 0.0}, "eps"),
    ("ema", {"init": "zeros"}, "init"),
    ("simvq", {"beta": -0.25}, "beta"),
    ("simvq", {"train_codebook": "yes"}, "train_codebook"),
    ("simvq", {"decay": 0.99}, "decay"),  # not an option of SimVQ: the registry names it
])
def test_bad_options_raise(name, options, argument):
    with pytest.raises(ValueError, match=argument):
        quantizers.build(name, dim=DIM, codebook_size=CODEBOOK_SIZE, **options)


@pytest.mark.parametrize("name", ["vq", "ema", "simvq"])
def test_bad_dim_raises(name):
    with pytest.raises(ValueError, match="dim"):
        quantizers.build(name, dim=0, codebook_size=CODEBOOK_SIZE)
