"""The embedded default dataset: colour patches cut from real photographs bundled in pip wheels.

Photos: scikit-image's ``skimage.data`` astronaut, chelsea, coffee, rocket, hubble_deep_field, retina,
immunohistochemistry and both views of stereo_motorcycle, scikit-learn's ``load_sample_images`` china
and flower, and matplotlib's sample ``grace_hopper.jpg`` (all shipped inside the wheels, no network).
Photos whose longer side exceeds ``MAX_SIDE`` are downscaled first, so a 32-pixel patch shows structure
rather than a flat area of a 1411-pixel retina scan.

Split, disjoint by construction: the bottom ``TEST_FRACTION`` of every photo's rows (a whole number of
patch heights) is held out. Test patches tile that strip on a grid with stride = patch size, so no two
test patches share a pixel (half-overlapping patches would repeat the same tokens and inflate the
sample); train patches are random crops (with random horizontal flips) lying entirely above it. The two
stereo views show the same scene with horizontal disparity only, so holding out the same rows of both
keeps the test scene unseen. Near-constant patches (pixel standard deviation below ``MIN_PATCH_STD``,
e.g. the black corners of the retina scan) are dropped from both splits: they carry nothing to
reconstruct. Each test patch records which photo it came from (``test_groups``), so an evaluation
sample can be stratified over photos.

Why 30% held out and these photos: utilization is only readable when the test set has at least 10
tokens per code (issue 11). At 32 px and 8×8 tokens per patch this gives about 1,000 test patches, over
60,000 test tokens: enough for K = 2^12 uncapped. Larger codebooks need a larger test set (a
``folder`` of images or Fashion-MNIST); the presets say so.

The test set depends only on ``image_size``; ``seed`` picks the train crops.
"""
from __future__ import annotations

import torch
from PIL import Image

from benchmark.data.dataset import Dataset, content_digest
from benchmark.data.sources import register_source
from benchmark.data.cache import cached_dataset
from benchmark.data.images import pil_to_tensor, shrink_to_max_side

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
                  "immunohistochemistry", "stereo_motorcycle")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
MAX_SIDE = 640          # pixels; larger photos are downscaled to this longer side
TEST_FRACTION = 0.3     # of every photo's rows, at the bottom, held out for testing
MIN_PATCH_STD = 2.0     # in 0-255 units; flatter patches are dropped
NUM_TRAIN = 16384       # train patches at the default size
BUILD_VERSION = 2       # bump when the construction changes, so old caches are not reused


def load_photos(*, image_size: int = 32, seed: int = 0, cache_dir, num_train: int = NUM_TRAIN
                ) -> Dataset:
    """Photo patches of ``image_size`` pixels, built once per parameter set and cached in ``cache_dir``."""
    import skimage
    import sklearn

    if num_train < 1:
        raise ValueError(f"num_train must be >= 1, got {num_train}")
    versions = f"skimage{skimage.__version__}-sklearn{sklearn.__version__}"
    key = f"photos-v{BUILD_VERSION}-size{image_size}-seed{seed}-train{num_train}-{versions}"
    return cached_dataset(cache_dir, key,
                          lambda: build_photos(image_size=image_size, seed=seed, num_train=num_train))


def build_photos(*, image_size: int, seed: int, num_train: int) -> Dataset:
    photos = bundled_photos()
    generator = torch.Generator().manual_seed(seed)
    train_regions, test_parts, group_parts = [], [], []
    for photo in photos.values():
        height = photo.shape[1]
        strip = image_size * max(1, round(TEST_FRACTION * height / image_size))
        if height - strip < image_size:
            continue  # too small at this size to give both splits a patch
        train_regions.append(photo[:, : height - strip])
        patches = grid_patches(photo[:, height - strip:], image_size)
        patches = patches[patch_std(patches) >= MIN_PATCH_STD]
        test_parts.append(patches)
        group_parts.append(torch.full((len(patches),), len(group_parts), dtype=torch.long))
    if not train_regions:
        raise ValueError(f"image_size {image_size} is too large for the bundled photos "
                         f"(largest side {MAX_SIDE} px)")
    test, test_groups = torch.cat(test_parts), torch.cat(group_parts)
    train = random_patches(train_regions, image_size, num_train, generator)
    source = (f"scikit-image skimage.data: {', '.join(SKIMAGE_PHOTOS)}; scikit-learn "
              f"load_sample_images: {', '.join(SKLEARN_PHOTOS)}; matplotlib sample_data: "
              f"{', '.join(MATPLOTLIB_PHOTOS)}; longer side <= {MAX_SIDE} px; "
              f"test = bottom {TEST_FRACTION:.0%} of every photo, non-overlapping patches")
    return Dataset(name="photos", source=source, train=train, test=test,
                        digest=content_digest(train, test), test_groups=test_groups)


def bundled_photos() -> dict[str, torch.Tensor]:
    """{name: uint8 (3, H, W)} for every bundled photo (the stereo pair as two entries)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    arrays = {}
    for name in SKIMAGE_PHOTOS:
        image = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":  # (left, right, disparity)
            arrays["stereo_motorcycle_left"], arrays["stereo_motorcycle_right"] = image[0], image[1]
        else:
            arrays[name] = image
    samples = load_sample_images()
    for filename, image in zip(samples.filenames, samples.images):
        arrays[filename.replace("\\", "/").rsplit("/", 1)[-1]] = image
    missing = set(SKLEARN_PHOTOS) - set(arrays)
    if missing:
        raise ValueError(f"scikit-learn's sample images lack {sorted(missing)}")
    for filename in MATPLOTLIB_PHOTOS:
        arrays[filename] = matplotlib_sample_photo(filename)
    return {name: pil_to_tensor(shrink_to_max_side(Image.fromarray(array).convert("RGB"), MAX_SIDE))
            for name, array in arrays.items()}


def matplotlib_sample_photo(filename: str):
    """A photo from matplotlib's bundled ``mpl-data/sample_data`` as an (H, W, 3) uint8 array."""
    import matplotlib
    import numpy as np

    path = matplotlib.get_data_path() + f"/sample_data/{filename}"
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise ValueError(f"matplotlib's sample photo {path} cannot be read: {error}") from error


def grid_patches(region: torch.Tensor, size: int) -> torch.Tensor:
    """All non-overlapping ``size`` patches of ``region`` (C, H, W) on a grid, centred horizontally."""
    stride = size
    height, width = region.shape[1:]
    columns = (width - size) // stride + 1
    left = (width - (columns - 1) * stride - size) // 2
    patches = region[:, :, left:].unfold(1, size, stride).unfold(2, size, stride)[:, :, :columns]
    # (C, rows, columns, size, size) -> (rows * columns, C, size, size)
    return patches.permute(1, 2, 0, 3, 4).reshape(-1, region.shape[0], size, size).contiguous()


def random_patches(regions: list[torch.Tensor], size: int, count: int,
                   generator: torch.Generator) -> torch.Tensor:
    """``count`` random crops, shared among ``regions`` in proportion to their area, half flipped."""
    areas = torch.tensor([float(r.shape[1] * r.shape[2]) for r in regions])
    quotas = largest_remainder(areas / areas.sum() * count)
    offsets = torch.arange(size)
    patches = []
    for region, quota in zip(regions, quotas):
        if quota == 0:
            continue
        kept, drawn, rounds = [], 0, 0
        while drawn < quota:
            rounds += 1
            if rounds > 100:  # cannot happen with the bundled photos; guards against a flat region
                raise ValueError(f"could not cut {quota} non-flat {size}-pixel patches from a photo")
            # draw a few extra so flat crops can be dropped without many rounds
            want = quota - drawn
            tops = torch.randint(0, region.shape[1] - size + 1, (2 * want,), generator=generator)
            lefts = torch.randint(0, region.shape[2] - size + 1, (2 * want,), generator=generator)
            rows = (tops[:, None] + offsets)[:, :, None]
            cols = (lefts[:, None] + offsets)[:, None, :]
            crops = region[:, rows, cols].permute(1, 0, 2, 3)
            crops = crops[patch_std(crops) >= MIN_PATCH_STD][:want]
            kept.append(crops)
            drawn += len(crops)
        patches.append(torch.cat(kept))
    train = torch.cat(patches)
    flip = torch.rand(len(train), generator=generator) < 0.5
    train[flip] = train[flip].flip(-1)
    order = torch.randperm(len(train), generator=generator)  # mix the photos
    return train[order].contiguous()


def patch_std(patches: torch.Tensor) -> torch.Tensor:
    return patches.flatten(1).float().std(dim=1)


def largest_remainder(shares: torch.Tensor) -> list[int]:
    """Integers summing to round(shares.sum()), each the floor of its share plus at most one."""
    floors = shares.floor()
    missing = int(round(float(shares.sum() - floors.sum())))
    bonus = torch.zeros_like(floors)
    bonus[torch.argsort(shares - floors, descending=True, stable=True)[:missing]] = 1
    return [int(v) for v in floors + bonus]


@register_source("photos", modality="image", description="patches of the photographs bundled in pip wheels")
def _load(request, cache_dir):
    return load_photos(image_size=request.image_size, seed=request.seed, cache_dir=cache_dir)
