"""What makes trials comparable, built before the loop: seeded streams, the batch order, the learning-rate
schedule, the quantizer, the model (a registered backbone around the quantizer), the optimizer, and the
stage clock that splits a trial's cost."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch

from benchmark.tracking import keys
from benchmark.training.config import TrainConfig

#: The dataset (its patches and its train/test split) is the same for every trial: built with this
#: seed, not the trial's, so seeds vary the initialization and the data order only.
DATASET_SEED = 0
#: Offsets that give the quantizer's initialization and the data order their own RNG streams, distinct
#: from the backbone's (all three derive from config.seed).
QUANTIZER_SEED_OFFSET = 1_000_003
DATA_ORDER_SEED_OFFSET = 2_000_003


# ----------------------------------------------------------------------------- the identical budget
def batch_order(num_samples: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless batches of sample indices: one seeded permutation per epoch, batches may span two epochs
    (so every sample is seen equally often whatever the batch size)."""
    generator = torch.Generator().manual_seed(seed)
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while pending.numel() < batch_size:
            pending = torch.cat([pending, torch.randperm(num_samples, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up from lr/warmup_steps at step 1 to lr at step warmup_steps, then constant."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * step / config.warmup_steps
    return config.lr


def build_quantizer(config: TrainConfig):
    """The configured quantizer, initialized from its own RNG stream (the global RNG is left untouched)."""
    import quantizers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + QUANTIZER_SEED_OFFSET)
        return quantizers.build(config.quantizer, dim=config.latent_dim, codebook_size=config.codebook_size,
                                **config.quantizer_options)


def build_model(config: TrainConfig, channels: int, quantizer=None):
    """Encoder + quantizer + decoder on the CPU. The backbone (``config.backbone``, or the modality's default
    when "auto") depends only on (config, channels), never on the quantizer: its parts are drawn from
    streams seeded by ``config.seed``."""
    from benchmark.models.autoencoder import VQAutoencoder
    from benchmark.models.registry import get_backbone

    quantizer = quantizer if quantizer is not None else build_quantizer(config)
    encoder, decoder = get_backbone(config.resolved_backbone()).build(config, channels)
    return VQAutoencoder(encoder, quantizer, decoder)


def initialize_from_data(quantizer, config: TrainConfig, dataset, train_samples: torch.Tensor,
                         device: torch.device | str = "cpu") -> None:
    """Run a data-initialized quantizer's hook (VQGAN-LC's k-means codebook) with what it needs injected:
    the training samples, the backbone's image token grid, the InceptionV3 extractor and the cache folder.
    A quantizer without the hook is left alone."""
    if not getattr(quantizer, "needs_data_init", False):
        return
    from benchmark.models.registry import get_backbone

    token_grid = get_backbone(config.resolved_backbone()).token_grid(config)
    if token_grid is None:
        raise ValueError(f"quantizer {config.quantizer!r} initializes its codebook from image features; "
                         f"backbone {config.resolved_backbone()!r} has no image token grid")
    from benchmark.evaluation.inception import inception_extractor
    from benchmark.files import resolve_cache_dir

    quantizer.initialize_from_data(train_samples, data_key=f"{dataset.digest}-{config.image_size}px",
                                   token_grid=token_grid, feature_extractor=lambda: inception_extractor(device=device),
                                   cache_dir=resolve_cache_dir())


def data_request(config: TrainConfig, seed: int = DATASET_SEED):
    """What the trial asks of its data source (the dataset seed is fixed: trial seeds only order the data)."""
    from benchmark.data.sources import DataRequest

    return DataRequest(image_size=config.image_size, sample_rate=config.sample_rate,
                       clip_samples=config.clip_samples, data_dir=config.data_dir, seed=seed)


# ----------------------------------------------------------------------------- cost per stage
class StageClock:
    """Seconds spent per stage of a trial (set-up, training steps, probes, evaluation, rFID, tracking), so
    samples/s compares methods by their training steps alone (probe costs differ by method)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


COST_KEYS = {"setup": keys.COST_SETUP_TIME, "train": keys.COST_TRAIN_TIME, "probe": keys.COST_PROBE_TIME,
             "eval": keys.COST_EVAL_TIME, "fid": keys.COST_FID_TIME, "tracking": keys.COST_TRACKING_TIME}


def build_optimizer(config: TrainConfig, parameters) -> torch.optim.Optimizer:
    if config.optimizer == "adam-paper":
        return torch.optim.Adam(parameters, lr=learning_rate(1, config), betas=(0.5, 0.9))
    return torch.optim.AdamW(parameters, lr=learning_rate(1, config), weight_decay=config.weight_decay)
