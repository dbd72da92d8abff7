"""The six quantizers of issue 13 (fc, lc, restart, rotation, ibq, bsq): the shared contract, and each
method's signature behaviour checked on the real module against its paper's definition."""
from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

import quantizers
from quantizers.search import nearest_code

from .contracts import assert_output_contract

DIM = 8
CODEBOOK_SIZE = 32
BITS = 5  # bsq: codebook_size = 2**dim
NEW = ["fc", "lc", "restart", "rotation", "ibq", "bsq"]


def dim_of(name: str) -> int:
    return BITS if name == "bsq" else DIM


def build(name, seed=0, codebook_size=CODEBOOK_SIZE, **options):
    torch.manual_seed(seed)
    return quantizers.build(name, dim=dim_of(name), codebook_size=codebook_size, **options)


def latents(rng, dim=DIM, batch=3, tokens=20, scale=1.0):
    return (scale * torch.randn(batch, tokens, dim, generator=rng)).requires_grad_(True)


def inception_module():
    """Wherever ``inception_extractor`` lives right now (benchmark/ is being restructured: modules move)."""
    for name in ("benchmark.evaluation.inception", "benchmark.evaluation.fid", "benchmark.fid"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError("no module of benchmark provides inception_extractor")


# ----------------------------------------------------------------------------- the shared contract
def test_registered_with_the_right_flags():
    assert set(NEW) <= set(quantizers.available())
    by_gradient = {name: quantizers.get_class(name).learns_codebook_by_gradient for name in NEW}
    assert by_gradient == {"fc": True, "lc": True, "restart": True, "rotation": True, "ibq": True, "bsq": False}
    assert not any(quantizers.get_class(name).learns_codebook_by_averages for name in NEW)
    assert [name for name in NEW if quantizers.get_class(name).needs_data_init] == ["lc"]
    assert not quantizers.get_class("vq").needs_data_init
    vq = build("vq")
    before = vq.codebook().detach().clone()
    assert vq.initialize_from_data(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), data_key="x", token_grid=2) is None
    assert torch.equal(vq.codebook(), before)  # the base hook does nothing


@pytest.mark.parametrize("name", NEW)
def test_output_contract(name, rng):
    assert_output_contract(build(name).train(), latents(rng, dim_of(name)), CODEBOOK_SIZE, dim_of(name))


@pytest.mark.parametrize("name", NEW)
def test_indices_map_back_to_what_forward_gave(name, rng):
    quantizer = build(name).eval()  # eval: restart leaves its codes alone
    out = quantizer(latents(rng, dim_of(name)))
    codes = quantizer.indices_to_codes(out.indices)
    assert torch.equal(codes, out.quantized.detach())
    assert torch.allclose(quantizer.codebook().detach()[out.indices], codes, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in NEW if n != "restart"])
def test_round_trip_holds_in_training_mode(name, rng):
    quantizer = build(name).train()
    out = quantizer(latents(rng, dim_of(name)))
    assert torch.equal(quantizer.indices_to_codes(out.indices), out.quantized.detach())


@pytest.mark.parametrize("name", NEW)
def test_gradient_reaches_the_input(name, rng):
    quantizer = build(name).train()
    z = latents(rng, dim_of(name))
    out = quantizer(z)
    (from_decoder,) = torch.autograd.grad(out.quantized.pow(2).sum(), z, retain_graph=True)
    assert from_decoder.abs().sum() > 0
    if name in ("lc", "restart"):  # plain straight-through: the decoder's gradient passes unchanged
        assert torch.equal(from_decoder, 2 * out.quantized.detach())
    (from_loss,) = torch.autograd.grad(out.loss, z)
    assert from_loss.abs().sum() > 0


@pytest.mark.parametrize("name", NEW)
def test_state_dict_restores_the_same_quantizer(name, rng):
    trained = build(name, seed=1).train()
    trained(latents(rng, dim_of(name)))  # restart: moves codes and its usage buffer
    restored = build(name, seed=2)
    restored.load_state_dict(trained.state_dict())
    z = latents(rng, dim_of(name))
    assert torch.equal(trained.eval()(z).indices, restored.eval()(z).indices)
    assert torch.equal(trained.codebook(), restored.codebook())


@pytest.mark.parametrize("name,options,argument", [
    ("fc", {"lookup_dim": 0}, "lookup_dim"),
    ("fc", {"lookup_dim": 2.5}, "lookup_dim"),
    ("fc", {"beta": -1}, "beta"),
    ("lc", {"feature_layer": "Mixed_7c"}, "feature_layer"),
    ("lc", {"feature_dim": 0}, "feature_dim"),
    ("lc", {"feature_dim": 193}, "feature_dim"),  # Conv2d_4a_3x3 has 192 channels
    ("lc", {"feature_resolution": 16}, "feature_resolution"),
    ("lc", {"max_images": 0}, "max_images"),
    ("lc", {"kmeans_iters": 0}, "kmeans_iters"),
    ("lc", {"kmeans_seed": -1}, "kmeans_seed"),
    ("lc", {"codebook_weight": float("nan")}, "codebook_weight"),
    ("restart", {"threshold": 0.0}, "threshold"),
    ("restart", {"decay": 1.0}, "decay"),
    ("restart", {"init": "kmeans"}, "init"),
    ("rotation", {"beta": -0.25}, "beta"),
    ("ibq", {"entropy_temperature": 0.0}, "entropy_temperature"),
    ("ibq", {"entropy_weight": -0.1}, "entropy_weight"),
    ("ibq", {"batch_maximization_weight": "x"}, "batch_maximization_weight"),
    ("bsq", {"group_size": 2}, "group_size"),  # must divide the 5 bits
    ("bsq", {"group_size": 6}, "group_size"),
    ("bsq", {"temperature": 0}, "temperature"),
    ("bsq", {"sample_entropy_weight": -1}, "sample_entropy_weight"),
    ("ibq", {"threshold": 2.0}, "threshold"),  # not an option of ibq: the registry names it
])
def test_bad_options_raise_naming_the_option(name, options, argument):
    with pytest.raises(ValueError, match=argument):
        build(name, **options)


@pytest.mark.parametrize("name", NEW)
def test_bad_input_raises(name):
    with pytest.raises(ValueError, match="last dimension"):
        build(name)(torch.zeros(2, 4, dim_of(name) + 1))
    with pytest.raises(ValueError, match="NaN"):
        build(name)(torch.full((2, 4, dim_of(name)), float("nan")))


def test_bsq_refuses_a_size_that_is_not_two_to_the_dim():
    for dim, size in [(8, 1024), (10, 1000)]:
        with pytest.raises(ValueError, match=r"codebook_size.*dim") as error:
            quantizers.build("bsq", dim=dim, codebook_size=size)
        assert f"codebook_size={size}" in str(error.value) and f"dim={dim}" in str(error.value)


def test_bsq_takes_its_own_latent_dim_in_the_sweep_grid():
    from quantizers.own_dims import OWN_DIM_QUANTIZERS, own_latent_dim

    assert "bsq" in OWN_DIM_QUANTIZERS
    assert own_latent_dim("bsq", 1024)[:2] == (10, 1024)
    with pytest.raises(ValueError, match="power of two"):
        own_latent_dim("bsq", 1000)


# ----------------------------------------------------------------------------- fc
def test_fc_searches_unit_codes_in_lookup_space_and_decodes_their_projection(rng):
    quantizer = build("fc", lookup_dim=4).train()
    codes = quantizer.normalized_codes()
    assert codes.shape == (CODEBOOK_SIZE, 4)
    assert torch.allclose(codes.norm(dim=1), torch.ones(CODEBOOK_SIZE), atol=1e-6)
    z = latents(rng)
    out = quantizer(z)
    lookup = F.normalize(quantizer.project_in(z.detach()), dim=-1).reshape(-1, 4)
    assert torch.equal(out.indices.flatten(), nearest_code(lookup, codes.detach()))
    assert torch.allclose(quantizer.codebook(), quantizer.project_out(codes))
    # the codebook term moves the selected codes only; the decoder's gradient reaches W_out, not E
    out.quantized.sum().backward()
    assert quantizer.embedding.grad is None and quantizer.project_out.weight.grad is not None


# ----------------------------------------------------------------------------- restart
def test_restart_moves_a_code_far_from_all_data_onto_a_batch_latent_in_training_only(rng):
    quantizer = build("restart", init="normal")
    with torch.no_grad():
        quantizer.embedding[5] = 1e3  # no token will ever pick it
    z = latents(rng)
    flat = z.detach().reshape(-1, DIM)

    quantizer.eval()
    out = quantizer(z)
    assert 5 not in out.indices and quantizer.embedding[5].eq(1e3).all()
    assert torch.equal(quantizer.usage, torch.full((CODEBOOK_SIZE,), 0.125))  # eval: no usage update either
    assert quantizer.last_restarted_fraction == 0.0

    quantizer.train()
    out = quantizer(z)
    assert 5 not in out.indices
    # usage 0.125 -> 0.8 * 0.125 + 0.2 * 0 < threshold 0.25 (of the mean): dead, now a latent of this batch,
    # its usage reset to the threshold
    assert (flat == quantizer.embedding[5].detach()).all(dim=1).any()
    assert quantizer.usage[5] == 0.25
    assert 0 < quantizer.last_restarted_fraction <= 1


def test_restart_never_duplicates_a_batch_latent(rng):
    quantizer = build("restart", codebook_size=64).train()  # every code starts below the threshold
    z = latents(rng, batch=1, tokens=10)
    before = quantizer.embedding.detach().clone()
    quantizer(z)
    moved = (quantizer.embedding.detach() != before).any(dim=1)
    assert int(moved.sum()) == 10  # 54+ dead codes, 10 tokens: 10 restarted now, the rest later
    assert quantizer.last_restarted_fraction == 10 / 64
    assert torch.unique(quantizer.embedding.detach()[moved], dim=0).shape[0] == 10
    # a well-used code stays: usage above the threshold after the update
    quantizer.usage.fill_(100.0)
    before = quantizer.embedding.detach().clone()
    quantizer(z)
    assert torch.equal(quantizer.embedding.detach(), before)
    assert quantizer.last_restarted_fraction == 0.0


# ----------------------------------------------------------------------------- rotation
def rotation_case(z_row, code_rows):
    quantizer = quantizers.build("rotation", dim=len(z_row), codebook_size=len(code_rows)).train()
    with torch.no_grad():
        quantizer.embedding.copy_(torch.tensor(code_rows))
    z = torch.tensor([[z_row]], requires_grad=True)
    return quantizer, z, quantizer(z)


def test_rotation_gradient_is_the_papers_rotation_and_rescaling_on_a_hand_computed_case():
    # z = (1, 0) -> code q = (0, 2): R rotates by +90 degrees, lambda = |q| / |z| = 2
    _, z, out = rotation_case([1.0, 0.0], [[0.0, 2.0], [-10.0, -10.0]])
    assert out.indices.item() == 0 and torch.equal(out.quantized.detach(), torch.tensor([[[0.0, 2.0]]]))
    for upstream, expected in [([1.0, 0.0], [0.0, -2.0]), ([0.0, 1.0], [2.0, 0.0])]:
        g = torch.tensor([[upstream]])
        (grad,) = torch.autograd.grad(out.quantized, z, g, retain_graph=True)
        assert torch.allclose(grad, torch.tensor([[expected]]), atol=1e-6)  # lambda R^T g
        assert not torch.allclose(grad, g)                                   # straight-through would give g


def test_rotation_gradient_matches_the_explicit_householder_matrix_in_3d():
    z_row, code = [0.3, -1.2, 0.5], [1.5, 0.2, -0.7]
    _, z, out = rotation_case(z_row, [code, [9.0, 9.0, 9.0]])
    zt, q = torch.tensor(z_row), torch.tensor(code)
    u, q_hat = zt / zt.norm(), q / q.norm()
    w = (u + q_hat) / (u + q_hat).norm()
    rotation = torch.eye(3) - 2 * torch.outer(w, w) + 2 * torch.outer(q_hat, u)  # Sec. 4.2
    assert torch.allclose(rotation @ u, q_hat, atol=1e-6)
    assert torch.allclose(rotation @ rotation.T, torch.eye(3), atol=1e-6)
    g = torch.tensor([0.4, 1.0, -2.0])
    (grad,) = torch.autograd.grad(out.quantized, z, g.view(1, 1, 3))
    assert torch.allclose(grad.flatten(), (q.norm() / zt.norm()) * rotation.T @ g, atol=1e-5)


# ----------------------------------------------------------------------------- ibq
def test_ibq_gives_every_code_a_gradient_in_one_backward(rng):
    quantizer = build("ibq").train()
    out = quantizer(latents(rng, batch=1, tokens=6))
    (out.quantized.square().mean() + out.loss).backward()
    assert len(set(out.indices.flatten().tolist())) <= 6
    assert quantizer.embedding.grad.ne(0).any(dim=1).all()  # all 32 codes, though at most 6 were selected


def official_ibq(z, codebook, beta=0.25, entropy_weight=0.05, temperature=0.01):
    """SEED-Voken's IndexPropagationQuantize + compute_entropy_loss, written out with N x K tensors."""
    logits = z @ codebook.T
    soft = logits.softmax(1)
    index = soft.max(1, keepdim=True)[1]
    hard = torch.zeros_like(logits).scatter_(1, index, 1.0)
    z_q = (hard - soft.detach() + soft) @ codebook
    z_q2 = hard @ codebook
    loss = ((z_q - z) ** 2).mean() + ((z_q2.detach() - z) ** 2).mean() + beta * ((z_q2 - z.detach()) ** 2).mean()
    probs = F.softmax(logits / temperature, -1)
    log_probs = F.log_softmax(logits / temperature + 1e-5, -1)
    mean_probs = probs.mean(0)
    batch_entropy = -(mean_probs * torch.log(mean_probs + 1e-5)).sum()
    sample_entropy = (-(probs * log_probs).sum(-1)).mean()
    return z_q, index.flatten(), loss + entropy_weight * (sample_entropy - batch_entropy)


@pytest.mark.parametrize("chunk_elements", [1 << 24, 64], ids=["one-chunk", "chunked-recomputed"])
def test_ibq_matches_the_official_formulation(chunk_elements, rng, monkeypatch):
    monkeypatch.setattr("quantizers.ibq.CHUNK_ELEMENTS", chunk_elements)  # 64 values: 2 rows per chunk
    quantizer = build("ibq").train()
    z = latents(rng, batch=2, tokens=7, scale=0.5)
    out = quantizer(z)
    (out.quantized.square().sum() + out.loss).backward()

    codebook = quantizer.embedding.detach().clone().requires_grad_(True)
    z_ref = z.detach().clone().requires_grad_(True)
    z_q, index, loss = official_ibq(z_ref.reshape(-1, DIM), codebook)
    (z_q.square().sum() + loss).backward()
    assert torch.equal(out.indices.flatten(), index)
    assert torch.allclose(out.quantized.detach().reshape(-1, DIM), z_q.detach(), atol=1e-6)
    assert torch.allclose(out.loss, loss, rtol=1e-5)
    assert torch.allclose(z.grad, z_ref.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(quantizer.embedding.grad, codebook.grad, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- bsq
def test_bsq_has_exactly_two_to_the_l_unit_norm_codes(rng):
    quantizer = build("bsq")
    codebook = quantizer.codebook()
    assert codebook.shape == (2 ** BITS, BITS)
    assert torch.unique(codebook, dim=0).shape[0] == 2 ** BITS
    assert torch.allclose(codebook.norm(dim=1), torch.ones(2 ** BITS))
    assert torch.allclose(codebook.abs(), torch.full_like(codebook, 1 / math.sqrt(BITS)))
    z = latents(rng, BITS)
    out = quantizer(z)
    assert torch.allclose(out.quantized.detach().norm(dim=-1), torch.ones(z.shape[:2]))
    assert torch.equal(out.quantized.detach() > 0, z.detach() > 0)
    # gradient: straight-through to the sphere, scaled by 1/sqrt(L) as in the official code
    g = torch.randn(z.shape, generator=rng)
    (grad,) = torch.autograd.grad(out.quantized, z, g)
    z_again = z.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.normalize(z_again, dim=-1) / math.sqrt(BITS), z_again, g)
    assert torch.allclose(grad, expected, atol=1e-6)


def test_bsq_entropy_terms_match_the_softmax_over_all_codes(rng):
    quantizer = build("bsq", group_size=BITS, temperature=0.5)  # one group: the exact codebook entropy
    unit = F.normalize(torch.randn(40, BITS, generator=rng), dim=-1)
    probs = (2 * unit @ quantizer.codebook().T / 0.5).softmax(-1)  # p(c | u) = softmax(2 c.u / tau)
    sample, codebook = quantizer.entropy_terms(unit)
    assert torch.allclose(sample, -(probs * probs.log()).sum(-1).mean(), rtol=1e-5)
    mean = probs.mean(0)
    assert torch.allclose(codebook, -(mean * mean.log()).sum(), rtol=1e-5)
    factorized = build("bsq", group_size=1, temperature=0.5).entropy_terms(unit)[1]
    assert factorized >= codebook - 1e-6  # per-bit groups: the paper's upper bound


# ----------------------------------------------------------------------------- lc
def test_lc_keeps_its_basis_frozen_and_trains_the_projector(rng):
    quantizer = build("lc").train()
    assert [name for name, _ in quantizer.named_parameters()] == ["projection.weight", "projection.bias"]
    assert "basis" in dict(quantizer.named_buffers()) and not bool(quantizer.data_initialized)
    basis, weight = quantizer.basis.clone(), quantizer.projection.weight.detach().clone()
    codebook_before = quantizer.codebook().detach().clone()
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.5)
    out = quantizer(latents(rng, batch=1, tokens=4))
    (out.quantized.square().mean() + out.loss).backward()
    optimizer.step()
    assert torch.equal(quantizer.basis, basis)
    assert not torch.equal(quantizer.projection.weight, weight)
    assert (quantizer.codebook().detach() != codebook_before).any(dim=1).all()  # every code moved, via P
    assert out.losses["codebook"] > 0 and out.losses["commitment"] > 0


@pytest.fixture(scope="module")
def inception_cache(tmp_path_factory):
    """A cache folder holding the converted InceptionV3 weights (converted once for this module)."""
    cache = tmp_path_factory.mktemp("lc_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VQBENCH_CACHE", str(cache))
        patch.setenv("TORCH_HOME", str(cache / "torch_home"))
        inception_module().resolve_inception_weights()
    return cache


def test_lc_initializes_from_data_and_caches_the_centres(inception_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("VQBENCH_CACHE", str(inception_cache))  # where the converted weights are
    monkeypatch.setenv("TORCH_HOME", str(inception_cache / "torch_home"))
    inception = inception_module()
    hooks = {"feature_extractor": lambda: inception.inception_extractor(), "cache_dir": tmp_path}
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    first = build("lc", codebook_size=16, feature_dim=8, kmeans_iters=3)
    random_basis = first.basis.clone()
    with pytest.raises(ValueError, match="trainer must inject"):
        first.initialize_from_data(images, data_key="random-64", token_grid=8, cache_dir=tmp_path)
    assert not bool(first.data_initialized)
    first.initialize_from_data(images, data_key="random-64", token_grid=8, **hooks)
    assert first.init_source == "computed" and bool(first.data_initialized)
    assert first.basis.shape == (16, 8) and torch.isfinite(first.basis).all()
    assert not torch.equal(first.basis, random_basis)
    assert torch.unique(first.basis, dim=0).shape[0] == 16
    cached = list((tmp_path / "lc_codebooks").glob("random-64-*.pt"))
    assert len(cached) == 1 and "K16" in cached[0].name and "d8" in cached[0].name
    assert [p.name for p in (tmp_path / "lc_codebooks").iterdir()] == [cached[0].name]  # no temporary left

    second = build("lc", seed=5, codebook_size=16, feature_dim=8, kmeans_iters=3)
    second.initialize_from_data(images, data_key="random-64", token_grid=8, **hooks)
    assert second.init_source == "cache"
    assert torch.equal(second.basis, first.basis)
    out = second(torch.randn(2, 5, DIM))  # still a working quantizer
    assert out.indices.max() < 16

    gray = build("lc", codebook_size=16, feature_dim=8, kmeans_iters=1)
    gray.initialize_from_data(images[:8, :1], data_key="gray-8", token_grid=4,  # grayscale, fewer points
                              **hooks)
    assert gray.init_source == "computed" and torch.isfinite(gray.basis).all()
    with pytest.raises(ValueError, match="feature_resolution"):  # Mixed_5d at 64 px is 5x5 < 8x8
        build("lc", codebook_size=16, feature_dim=8, feature_layer="Mixed_5d").initialize_from_data(
            images[:2], data_key="small", token_grid=8, **hooks)
    with pytest.raises(ValueError, match="images"):
        first.initialize_from_data(images.float(), data_key="x", token_grid=8, **hooks)


# ----------------------------------------------------------------------------- speed benchmark references
def test_new_references_run_forward_and_backward():
    from benchmark.speed.reference import REFERENCE_FOR_METHOD, build_reference, reference_available

    if not reference_available():
        pytest.skip("vector-quantize-pytorch not installed")
    for method in ("fc", "restart", "rotation", "bsq"):
        for dim in (8, 16):  # bsq's reference: no projection at 8 = log2 256, projections at 16
            reference = build_reference(REFERENCE_FOR_METHOD[method], dim, 256)
            z = torch.randn(1, 32, dim, requires_grad=True)
            quantized, aux_loss = reference.call(z)
            (quantized.square().mean() + aux_loss).backward()
            assert quantized.shape == z.shape and aux_loss.dim() == 0, method
            assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0, method
    assert "ibq" not in REFERENCE_FOR_METHOD and "lc" not in REFERENCE_FOR_METHOD  # the library has neither


def test_bench_measures_bsq_at_its_own_dim_between_projections():
    from benchmark.speed.bench import build_ours

    module, note = build_ours("bsq", 16, 256)
    assert "own latent dim 8" in note and module.codebook_size == 256
    out = module(torch.randn(1, 4, 16))
    assert out.quantized.shape == (1, 4, 16)
    assert build_ours("bsq", 8, 256)[1] == ""
    with pytest.raises(ValueError, match="power of two"):
        build_ours("bsq", 16, 1000)


def test_bsq_one_bit_groups_equal_per_group_exact_entropies(rng):
    from quantizers.lfq import codebook_entropy_exact

    quantizer = build("bsq", group_size=1)
    unit = F.normalize(torch.randn(30, BITS, generator=rng), dim=-1)
    logits = 4 * unit / math.sqrt(BITS)  # temperature 1
    per_bit = sum(codebook_entropy_exact(logits[:, [i]]) for i in range(BITS))
    assert torch.allclose(quantizer.entropy_terms(unit)[1], per_bit, rtol=1e-5)


def test_restart_starts_as_vq_and_restarts_reproducibly(rng):
    assert torch.equal(build("restart").embedding, build("vq").embedding)  # same seed, same codebook
    z = latents(rng)
    first, second = build("restart", seed=3).train(), build("restart", seed=3).train()
    first(z), second(z)
    assert torch.equal(first.embedding, second.embedding)
    third = build("restart", seed=4).train()
    third(z)
    assert not torch.equal(first.embedding, third.embedding)
