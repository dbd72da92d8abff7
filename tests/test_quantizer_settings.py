"""Settings checked against the authors' code and the controls built on them: restart's relative threshold,
BSQ's entropy ramp, VQGAN-LC's effective loss weights and injected extractor, rotation and the dense-pull
control at SimVQ's initial scale, and the import hygiene of quantizers/ (no cycles, no benchmark)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import quantizers

QUANTIZERS_DIR = Path(quantizers.__file__).parent


def build(name, seed=0, dim=8, codebook_size=32, **options):
    torch.manual_seed(seed)
    return quantizers.build(name, dim=dim, codebook_size=codebook_size, **options)


def defaults(name) -> dict:
    return {p.name: p.default for p in quantizers.describe(name)["options"]}


# ----------------------------------------------------------------------------- import hygiene
def _imports(path: Path) -> set[str]:
    """Sibling modules and top-level packages ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import x, y
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif node.level == 0 and node.module:
                found.add("<abs>" + node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {"<abs>" + a.name.split(".")[0] for a in node.names}
    return found


def test_quantizers_import_no_benchmark_and_no_module_imports_back():
    modules = {p.stem: _imports(p) for p in QUANTIZERS_DIR.glob("*.py")}
    for name, imported in modules.items():
        assert "<abs>benchmark" not in imported, f"quantizers/{name}.py imports benchmark"
        assert "<abs>quantizers" not in imported or name == "__init__", name
    graph = {name: {m for m in imported if m in modules and m != "__init__"}
             for name, imported in modules.items() if name != "__init__"}

    def reaches(start, target, seen=()):
        return any(m == target or (m not in seen and reaches(m, target, (*seen, m))) for m in graph[start])

    cycles = [name for name in graph if reaches(name, name)]
    assert not cycles, f"import cycles through {cycles}"


# ----------------------------------------------------------------------------- restart
def realistic_latents(generator: torch.Generator, n: int, dim: int = 32, clusters: int = 64) -> torch.Tensor:
    """A mixture of anisotropic Gaussians (decaying spectrum, random orientation): clustered, low effective
    dimension, as encoder latents are; fixed parameters from a seed, fresh samples per call."""
    params = torch.Generator().manual_seed(1)
    means = 0.7 * torch.randn(clusters, dim, generator=params)
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=params))[0]
    scales = torch.arange(1, dim + 1, dtype=torch.float32) ** -0.7
    which = torch.randint(0, clusters, (n,), generator=generator)
    return means[which] + (torch.randn(n, dim, generator=generator) * scales) @ rotation


def test_restart_threshold_is_relative_to_the_mean_usage_and_restarts_a_minority_at_k_4096():
    assert defaults("restart")["threshold"] == 0.25 and defaults("restart")["decay"] == 0.8
    quantizer = build("restart", dim=32, codebook_size=4096).train()
    data = torch.Generator().manual_seed(0)
    fractions = []
    for _ in range(20):  # 4,096 tokens a step (64 x 64), K = 2^12: mean usage 1 token per code
        quantizer(realistic_latents(data, 4096).view(64, 64, 32))
        fractions.append(quantizer.last_restarted_fraction)
    assert fractions[0] > 0.5  # the first step is a data-dependent initialization of the tiny U(-1/K, 1/K) codes
    assert max(fractions[10:]) < 0.5, fractions  # after warm-up a minority per step
    # the old absolute threshold (2 tokens per batch = 2x the mean here) restarted most codes at every step
    absolute = build("restart", dim=32, codebook_size=4096, threshold=2.0).train()
    for _ in range(5):
        absolute(realistic_latents(data, 4096).view(64, 64, 32))
    assert absolute.last_restarted_fraction > 0.5


def test_restart_fraction_does_not_depend_on_the_batch_size_for_the_same_usage():
    small, large = build("restart").train(), build("restart").train()
    indices = torch.arange(16).repeat_interleave(2)  # codes 0-15 used twice, 16-31 never
    small.restart_dead_codes(torch.randn(32, 8), indices)
    large.restart_dead_codes(torch.randn(320, 8), indices.repeat_interleave(10))  # 10x the tokens, same shares
    assert torch.equal(small.usage, large.usage)
    assert small.last_restarted_fraction == large.last_restarted_fraction == 0.5


# ----------------------------------------------------------------------------- bsq
def test_bsq_ramps_its_loss_from_3x_to_1x_over_2000_steps_as_the_official_configs():
    assert defaults("bsq")["codebook_rampup_multiplier"] == 3.0
    assert defaults("bsq")["codebook_rampup_steps"] == 2000
    quantizer = build("bsq", dim=5, codebook_size=32)
    assert [quantizer.loss_multiplier(s) for s in (0, 1000, 2000, 5000)] == [3.0, 2.0, 1.0, 1.0]
    assert quantizer.loss_multiplier(500) == pytest.approx(2.5)
    assert build("bsq", dim=5, codebook_size=32, codebook_rampup_steps=0).loss_multiplier(0) == 1.0


def test_bsq_step_counter_advances_on_training_forwards_only_and_scales_the_loss():
    quantizer = build("bsq", dim=5, codebook_size=32, beta=0.5)
    plain = build("bsq", dim=5, codebook_size=32, beta=0.5, codebook_rampup_steps=0)
    z = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(0))
    assert "rampup_step" in quantizer.state_dict() and int(quantizer.rampup_step) == 0
    quantizer.eval()
    quantizer(z)
    assert int(quantizer.rampup_step) == 0
    quantizer.train()
    first, reference = quantizer(z), plain.train()(z)
    assert int(quantizer.rampup_step) == 1
    for key in ("entropy", "commitment"):
        assert torch.allclose(first.losses[key], 3.0 * reference.losses[key])
    quantizer.rampup_step.fill_(2000)
    assert torch.allclose(quantizer(z).loss, reference.loss)


# ----------------------------------------------------------------------------- lc
def test_lc_defaults_are_the_official_effective_weights_and_it_needs_an_injected_extractor(tmp_path):
    assert defaults("lc")["beta"] == 0.1 and defaults("lc")["codebook_weight"] == 0.033
    quantizer = build("lc", codebook_size=16, feature_dim=8)
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="trainer must inject"):
        quantizer.initialize_from_data(images, data_key="x", token_grid=8, cache_dir=tmp_path)
    z = torch.randn(2, 5, 8)
    out = quantizer(z)
    codes = quantizer.indices_to_codes(out.indices)
    assert torch.allclose(out.losses["commitment"], 0.1 * (z - codes).pow(2).mean())
    assert torch.allclose(out.losses["codebook"], 0.033 * (z - codes).pow(2).mean())


# ----------------------------------------------------------------------------- SimVQ-scale controls
@pytest.mark.parametrize("name", ["rotation-simvq-init", "vq-dense-pull"])
def test_controls_start_at_simvqs_codebook(name):
    assert torch.equal(build(name).codebook(), build("vq-simvq-init").codebook())
    assert torch.equal(build(name).codebook(), build("simvq").codebook().detach())


def test_dense_pull_moves_every_code_in_one_step_where_vq_moves_only_the_selected():
    z = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0))  # 12 tokens, 32 codes
    moved = {}
    for name in ("vq-simvq-init", "vq-dense-pull"):
        quantizer = build(name).train()
        before = quantizer.codebook().detach().clone()
        optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.1)
        out = quantizer(z)
        (out.quantized.square().mean() + out.loss).backward()
        optimizer.step()
        moved[name] = (quantizer.codebook().detach() != before).any(dim=1)
        used = torch.zeros(32, dtype=torch.bool)
        used[out.indices.flatten()] = True
        if name == "vq-simvq-init":
            assert torch.equal(moved[name], used)  # disjoint optimization: only the selected codes
        else:
            assert set(out.losses) == {"codebook", "commitment", "pull"}
            assert torch.allclose(out.loss, sum(out.losses.values()))
    assert moved["vq-dense-pull"].all()


def test_dense_pull_is_chunked_exactly_and_pulls_a_far_code_with_full_weight():
    from quantizers.dense_pull import soft_neighbour_means

    generator = torch.Generator().manual_seed(0)
    latents, codes = torch.randn(50, 8, generator=generator), torch.randn(7, 8, generator=generator)
    codes[3] = 1e4  # far from every latent: its softmax still sums to 1 (no underflow)
    means, variances = soft_neighbour_means(latents, codes, 2.0, max_elements=60)  # one code per chunk
    weights = torch.softmax(-torch.cdist(codes.double(), latents.double()).pow(2) / 2.0, dim=1)
    assert torch.allclose(means.double(), weights @ latents.double(), atol=1e-4)
    spread = ((latents.double()[None] - means.double()[:, None]) ** 2).sum(-1)
    assert torch.allclose(variances.double(), (weights * spread).sum(1), atol=1e-3)
    assert torch.isfinite(means).all() and torch.isfinite(variances).all()


def test_dense_pull_runs_at_k_4096_n_4096_d_32():
    quantizer = build("vq-dense-pull", dim=32, codebook_size=4096).train()
    z = torch.randn(64, 64, 32, requires_grad=True)
    out = quantizer(z)
    out.loss.backward()
    assert torch.isfinite(out.losses["pull"]) and (quantizer.embedding.grad.abs().sum(1) > 0).all()
    assert z.grad is not None  # the commitment term; the pull itself gives the encoder no gradient


def test_list_shows_the_new_settings():
    assert quantizers.registry.get_variant("rotation-simvq-init").preset == {"init": "simvq"}
    assert defaults("vq-dense-pull")["init"] == "simvq" and defaults("vq-dense-pull")["pull_weight"] == 1.0
    assert "threshold" in defaults("restart") and "codebook_rampup_steps" in defaults("bsq")
