"""The 1-D codec backbone: shapes, the hop, and identical initialization across latent dims."""
from __future__ import annotations

import pytest
import torch

from benchmark.models.codec1d import HOP_LENGTH, build_codec_backbone, hop_length


def test_hop_is_320_samples_50_tokens_per_second():
    assert HOP_LENGTH == hop_length() == 320 and 16_000 // HOP_LENGTH == 50
    assert hop_length((2, 4, 5, 8)) == 320


@pytest.mark.parametrize("strides", [(4, 4, 4, 5), (2, 4, 5, 8), (3,)])
def test_shapes(strides):
    encoder, decoder = build_codec_backbone(channels=1, width=16, latent_dim=8, seed=0, strides=strides)
    hop = hop_length(strides)
    waveforms = torch.rand(2, 1, hop * 7) * 2 - 1
    latents = encoder(waveforms)
    assert latents.shape == (2, 8, 7)
    assert decoder(latents).shape == waveforms.shape


def test_input_must_be_whole_hops():
    encoder, _ = build_codec_backbone(width=8, latent_dim=4, seed=0)
    with pytest.raises(ValueError, match="multiple of the hop"):
        encoder(torch.zeros(1, 1, 1000))


def test_same_seed_same_backbone_across_latent_dims():
    small = build_codec_backbone(channels=1, width=16, latent_dim=8, seed=3)
    large = build_codec_backbone(channels=1, width=16, latent_dim=32, seed=3)
    shared = 0
    for part_small, part_large in zip(small, large):
        large_params = dict(part_large.named_parameters())
        for name, value in part_small.named_parameters():
            # the latent projections differ by design (their shapes, and fan-in-scaled biases)
            if large_params[name].shape == value.shape and not name.startswith(("to_latent", "from_latent")):
                assert torch.equal(large_params[name], value), name
                shared += 1
    assert shared == sum(1 for name, _ in small[0].named_parameters() if name.startswith("body")) \
        + sum(1 for name, _ in small[1].named_parameters() if name.startswith("body"))
    other_seed = build_codec_backbone(channels=1, width=16, latent_dim=8, seed=4)[0]
    assert not torch.equal(next(other_seed.parameters()), next(small[0].parameters()))


def test_seed_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_codec_backbone(width=8, latent_dim=4, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError):
        build_codec_backbone(width=0, latent_dim=4, seed=0)
    with pytest.raises(ValueError):
        build_codec_backbone(width=8, latent_dim=4, seed=0, strides=())
