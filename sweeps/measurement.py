"""Can a sweep measure what it sweeps? Test tokens and the uniform utilization ceiling per codebook size.

Printed by ``vqbench sweep --dry-run`` before anything trains: with N test tokens, a quantizer using all
K codes uniformly would still read ``1 - (1 - 1/K)^N`` (``benchmark.evaluation.utilization_ceiling``);
below 10 tokens per code that ceiling is visibly under 1 and the size's utilization is capped by the
test set, not by collapse.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Test images of the sources with an official split (their loaders read exactly these).
OFFICIAL_TEST_IMAGES = {"fashion-mnist": 10_000, "cifar10": 10_000}
#: Tokens per code below which a utilization is reported as capped.
MIN_TOKENS_PER_CODE = 10


@dataclass(frozen=True)
class SizeMeasurement:
    codebook_size: int
    test_tokens: int
    ceiling: float

    @property
    def capped(self) -> bool:
        return self.test_tokens < MIN_TOKENS_PER_CODE * self.codebook_size


def test_image_count(config) -> int:
    """How many test images the evaluation of ``config`` will use, without training (photos: the cached
    build; a folder: its file listing and split rule, nothing decoded)."""
    if config.dataset in OFFICIAL_TEST_IMAGES:
        available = OFFICIAL_TEST_IMAGES[config.dataset]
    elif config.dataset == "folder":
        from pathlib import Path

        from benchmark.data.folder import TEST_FRACTION, list_images, path_rank

        root = Path(config.data_dir).expanduser().resolve()
        if not root.is_dir():
            raise ValueError(f"data_dir for dataset 'folder' must be an existing folder, got {config.data_dir!r}")
        available = max(1, sum(path_rank(f) < TEST_FRACTION for f in list_images(root)))
    else:
        from benchmark.data.sources import load_dataset

        from benchmark.training.setup import data_request

        available = len(load_dataset(config.dataset, data_request(config)).test)
    return min(available, config.eval_samples or available)


def measurement_plan(config, codebook_sizes: list[int]) -> list[SizeMeasurement]:
    """Test tokens and uniform ceiling at each of ``codebook_sizes`` for the budget ``config``."""
    from benchmark.evaluation.usage import utilization_ceiling

    from benchmark.models.registry import get_backbone

    tokens = test_image_count(config) * get_backbone(config.resolved_backbone()).tokens(config)
    return [SizeMeasurement(size, tokens, utilization_ceiling(size, tokens)) for size in sorted(set(codebook_sizes))]


def measurement_lines(config, codebook_sizes: list[int]) -> list[str]:
    """The dry run's table: per K, test tokens, tokens per code, the uniform ceiling, capped or not."""
    lines = ["test tokens per codebook size (utilization is capped below "
             f"{MIN_TOKENS_PER_CODE} tokens per code):"]
    for row in measurement_plan(config, codebook_sizes):
        verdict = ("CAPPED: a perfectly uniform quantizer would read at most the ceiling; use a larger test "
                   "set (--dataset folder --data-dir ...)" if row.capped else "measurable")
        lines.append(f"  K={row.codebook_size:>7}: {row.test_tokens:>9,} test tokens "
                     f"({row.test_tokens / row.codebook_size:8.1f} per code), uniform ceiling "
                     f"{row.ceiling:.4f}  {verdict}")
    return lines
