"""The autoencoder: shapes, token layout, and the bit-identical backbone every quantizer starts from."""
from __future__ import annotations

import pytest
import torch

import quantizers
from benchmark.training.config import TrainConfig
from benchmark.models.autoencoder import NonFiniteLatentError, from_tokens, to_tokens
from benchmark.models.conv2d import build_backbone
from benchmark.training.setup import build_model

TINY = dict(codebook_size=64, latent_dim=8, image_size=16, width=16, num_res_blocks=1, num_downsamples=2)


def backbone_state(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("quantizer.")}


def test_forward_shapes_and_tokens(rng):
    model = build_model(TrainConfig(quantizer="vq", **TINY), channels=3)
    images = torch.rand(4, 3, 16, 16, generator=rng)
    output = model(images)
    assert output.reconstruction.shape == (4, 3, 16, 16)
    assert output.latents.shape == (4, 16, 8)            # 16 px / 2^2 = 4x4 tokens of dim 8
    assert output.quantizer.indices.shape == (4, 16)
    assert output.quantizer.quantized.shape == (4, 16, 8)
    output.reconstruction.mean().backward()               # gradients reach the encoder (straight-through)
    assert model.encoder.body[0].weight.grad.abs().sum() > 0


def test_tokens_round_trip_keeps_positions(rng):
    latents = torch.randn(2, 5, 3, 4, generator=rng)
    tokens = to_tokens(latents)
    assert tokens.shape == (2, 12, 5)
    assert torch.equal(tokens[1, 1 * 4 + 2], latents[1, :, 1, 2])  # token index = row * width + column
    assert torch.equal(from_tokens(tokens, (3, 4)), latents)


def test_grayscale_and_no_downsampling():
    model = build_model(TrainConfig(quantizer="vq", **{**TINY, "num_downsamples": 0, "image_size": 8}),
                        channels=1)
    output = model(torch.rand(2, 1, 8, 8))
    assert output.reconstruction.shape == (2, 1, 8, 8)
    assert output.latents.shape == (2, 64, 8)


def buildable(name: str) -> bool:
    try:
        quantizers.build(name, dim=TINY["latent_dim"], codebook_size=TINY["codebook_size"])
        return True
    except ValueError:  # e.g. a quantizer whose latent dim must be log2 K
        return False


def test_every_quantizer_starts_from_the_bit_identical_backbone():
    states = {name: backbone_state(build_model(TrainConfig(quantizer=name, seed=3, **TINY), channels=3))
              for name in quantizers.available() if buildable(name)}
    assert len(states) >= 5
    reference = states["vq"]
    for name, state in states.items():
        assert state.keys() == reference.keys()
        for key in reference:
            assert torch.equal(state[key], reference[key]), f"{name}: {key} differs from vq's"
    other_seed = backbone_state(build_model(TrainConfig(quantizer="vq", seed=4, **TINY), channels=3))
    assert not torch.equal(other_seed["encoder.body.0.weight"], reference["encoder.body.0.weight"])


def test_trials_at_different_latent_dims_share_every_parameter_of_equal_shape():
    """FSQ at d = 5 and VQ at d = 32: only the two latent projections differ (issue 11). The decoder's
    input-projection bias has the same shape at both dims, but PyTorch draws it from U(±1/sqrt(d)): its
    scale depends on d by construction, so it is the one same-shaped parameter that cannot be shared."""
    small = backbone_state(build_model(TrainConfig(quantizer="vq", **{**TINY, "latent_dim": 5}), channels=3))
    large = backbone_state(build_model(TrainConfig(quantizer="vq", **{**TINY, "latent_dim": 32}), channels=3))
    assert small.keys() == large.keys()
    differing = {key for key in small if small[key].shape != large[key].shape}
    assert differing == {"encoder.to_latent.weight", "encoder.to_latent.bias", "decoder.from_latent.weight"}
    for key in small.keys() - differing - {"decoder.from_latent.bias"}:
        assert torch.equal(small[key], large[key]), f"{key} differs between latent dims 5 and 32"
    assert len(small.keys() - differing) > 20   # every body parameter was compared


def test_building_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(TrainConfig(quantizer="simvq", **TINY), channels=3)
    assert torch.equal(torch.rand(3), expected)


def test_non_finite_latents_raise_a_clear_error():
    model = build_model(TrainConfig(quantizer="vq", **TINY), channels=3)
    with pytest.raises(NonFiniteLatentError, match="NaN or infinite"):
        model(torch.full((1, 3, 16, 16), float("nan")))


@pytest.mark.parametrize("field,value", [("width", 0), ("num_res_blocks", -1), ("latent_dim", 0)])
def test_backbone_rejects_bad_sizes(field, value):
    sizes = dict(channels=3, width=8, num_res_blocks=1, num_downsamples=1, latent_dim=4)
    with pytest.raises(ValueError, match=field):
        build_backbone(**{**sizes, field: value})
