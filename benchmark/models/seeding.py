"""Seeded initialization shared by the backbones: every part of a backbone from its own RNG stream."""
from __future__ import annotations

import torch
from torch import nn

#: Offsets of the decoder body's and the latent projections' RNG streams from the backbone seed.
DECODER_SEED_OFFSET = 3_000_017
PROJECTION_SEED_OFFSET = 4_000_037


def draw_streams(encoder_body: nn.Module, decoder_body: nn.Module, projections: list[nn.Module],
                 seed: int) -> None:
    """Re-draw the encoder body, decoder body and latent projections from streams ``seed``,
    ``seed + DECODER_SEED_OFFSET`` and ``seed + PROJECTION_SEED_OFFSET``, leaving the global RNG as it was.

    Why: drawn from one stream, the encoder's last projection (``latent_dim × width`` numbers) would shift
    every decoder layer drawn after it, so two trials differing only in latent dim would not share a
    backbone. With separate streams they share every parameter whose shape they share."""
    with torch.random.fork_rng(devices=[]):
        streams = ((encoder_body, seed), (decoder_body, seed + DECODER_SEED_OFFSET),
                   (nn.ModuleList(projections), seed + PROJECTION_SEED_OFFSET))
        for module, stream_seed in streams:
            torch.manual_seed(stream_seed)
            reset_parameters(module)


def reset_parameters(module: nn.Module) -> None:
    """Re-draw every parameter of ``module`` with its layers' own default initialization, in order."""
    for layer in module.modules():
        if layer is not module and hasattr(layer, "reset_parameters"):
            layer.reset_parameters()


def seeded_backbone(build_encoder, build_decoder, seed: int):
    """``(encoder, decoder)`` built by the two callables without moving the global RNG, then re-drawn from
    their own streams (:func:`draw_streams`). Both parts must expose ``body`` and their latent projection
    (``to_latent`` / ``from_latent``), as every registered backbone does."""
    with torch.random.fork_rng(devices=[]):  # construction's default draws must not move the global RNG
        encoder, decoder = build_encoder(), build_decoder()
    draw_streams(encoder.body, decoder.body, [encoder.to_latent, decoder.from_latent], seed)
    return encoder, decoder
