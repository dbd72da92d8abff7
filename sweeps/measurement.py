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
#: Test tokens below which no utilization is worth measuring: refused before anything is created.
MIN_TEST_TOKENS = 128
#: Images decoded (a sample, test images first) to prove a folder's files are readable images.
DECODED_SAMPLE = 4


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
        files = list_images(root)
        if len(files) < 2:
            raise ValueError(f"--data-dir {root} holds {len(files)} image file(s); the train/test split needs at "
                             "least 2 (and enough test images to measure utilization): point it at the image folder")
        # the split rule of benchmark.data.folder.build_folder
        available = sum(path_rank(f) < TEST_FRACTION for f in files) or 1
        available = min(available, len(files) - 1)
    else:
        from benchmark.data.sources import load_dataset

        from benchmark.training.setup import data_request

        available = len(load_dataset(config.dataset, data_request(config)).test)
    return min(available, config.eval_samples or available)


def check_data(config, codebook_sizes: list[int] | None = None) -> int:
    """Refuse data a sweep or a trial cannot use, before anything is created: a folder that is missing,
    empty, holds undecodable images (a sample is decoded, test images first), or too few test tokens
    (< MIN_TEST_TOKENS). Returns the test tokens. ValueError, one line, naming the folder and the fix."""
    if config.dataset == "folder":
        from pathlib import Path

        from benchmark.data.folder import TEST_FRACTION, list_images, path_rank, read_image

        if not config.data_dir:
            raise ValueError("dataset 'folder' needs --data-dir (a folder of images)")
        root = Path(config.data_dir).expanduser().resolve()
        if root.is_dir():
            files = sorted(list_images(root), key=lambda f: (path_rank(f) >= TEST_FRACTION, path_rank(f)))
            for name in files[:DECODED_SAMPLE]:
                try:
                    read_image(root / name, config.image_size)
                except ValueError as error:
                    raise ValueError(f"--data-dir {root}: {error}; remove or replace the file") from None
    elif config.data_dir:
        from pathlib import Path

        root = Path(config.data_dir).expanduser()
        if not root.exists() or (root.is_dir() and not any(root.iterdir())):
            raise ValueError(f"--data-dir {root} is missing or empty; point it at the {config.dataset} files")
        return 0
    else:
        return 0  # a bundled dataset: its test split is known
    plan = measurement_plan(config, codebook_sizes or [config.codebook_size])
    tokens = plan[0].test_tokens
    if tokens < MIN_TEST_TOKENS:
        raise ValueError(f"the test set gives {tokens} test tokens (dataset {config.dataset}"
                         + (f", --data-dir {config.data_dir}" if config.data_dir else "")
                         + f"); at least {MIN_TEST_TOKENS} are needed to measure utilization: add test images or "
                         "raise --eval-samples")
    return tokens


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
