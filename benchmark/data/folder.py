"""Any folder of images — flat, or an ImageNet-style tree of class subfolders — as RGB squares.

Every image file below the folder (extensions in ``IMAGE_EXTENSIONS``, hidden files and folders
skipped) is scaled so its shorter side is ``image_size`` and centre-cropped. The split is fixed by a
hash of each file's relative path: about ``TEST_FRACTION`` of the images are test images, the same on
every machine and unchanged when files are added elsewhere in the tree; at least one image goes to
each split. The test images' top-level subfolders (classes) group them, so that an evaluation sample
is stratified over classes rather than taken from the first classes in sorted order; nothing trains
on the labels.

An unreadable image is a ValueError naming the file rather than a skipped file: silently dropping
images would make two machines' "same" dataset differ. The decoded dataset is cached, keyed by the
folder's path, ``image_size``, ``max_images`` and the listing (relative path, size, mtime) of its
files, so editing the folder rebuilds it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from benchmark.data.dataset import Dataset, content_digest
from benchmark.data.sources import register_source
from benchmark.data.cache import cached_dataset
from benchmark.data.images import resize_center_crop

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
TEST_FRACTION = 0.1


def load_folder(data_dir: str, *, image_size: int = 32, cache_dir, max_images: int | None = None
                ) -> Dataset:
    """The images under ``data_dir``; ``max_images`` keeps that many, chosen by path hash."""
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"data_dir for dataset 'folder' must be an existing folder, got {data_dir!r}")
    if max_images is not None and max_images < 2:
        raise ValueError(f"max_images must be >= 2 (one train and one test image), got {max_images}")
    files = list_images(root)
    if not files:
        raise ValueError(f"data_dir {root} holds no image files (extensions: "
                         f"{', '.join(IMAGE_EXTENSIONS)})")
    if len(files) < 2:
        raise ValueError(f"data_dir {root} holds 1 image; the train/test split needs at least 2")
    ranked = sorted(files, key=path_rank)
    if max_images is not None:
        ranked = ranked[:max_images]
    listing = [(f, (root / f).stat().st_size, (root / f).stat().st_mtime_ns) for f in sorted(ranked)]
    fingerprint = hashlib.sha256(json.dumps([str(root), image_size, listing]).encode()).hexdigest()
    key = f"folder-size{image_size}-{fingerprint[:16]}"
    return cached_dataset(cache_dir, key, lambda: build_folder(root, sorted(ranked), image_size))


def build_folder(root: Path, files: list[str], image_size: int) -> Dataset:
    test_files = [f for f in files if path_rank(f) < TEST_FRACTION]
    if not test_files:  # tiny folders: the lowest-ranked image is the test set
        test_files = [min(files, key=path_rank)]
    if len(test_files) == len(files):
        test_files = test_files[:-1] if len(test_files) > 1 else test_files
    test_set = set(test_files)
    train_files = [f for f in files if f not in test_set]
    train = torch.stack([read_image(root / f, image_size) for f in train_files])
    test = torch.stack([read_image(root / f, image_size) for f in test_files])
    classes = [f.split("/", 1)[0] if "/" in f else "" for f in test_files]
    names = {name: number for number, name in enumerate(sorted(set(classes)))}
    groups = torch.tensor([names[name] for name in classes], dtype=torch.long)
    return Dataset(name="folder", source=f"image folder {root} ({len(files)} images)",
                        train=train, test=test, digest=content_digest(train, test), test_groups=groups)


def list_images(root: Path) -> list[str]:
    """Relative POSIX paths of the image files below ``root``, sorted, hidden entries skipped."""
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.append(relative.as_posix())
    return sorted(found)


def path_rank(relative_path: str) -> float:
    """A number in [0, 1) fixed by the path alone: below TEST_FRACTION means test."""
    digest = hashlib.sha256(relative_path.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def read_image(path: Path, image_size: int) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            image.load()
            return resize_center_crop(image, image_size)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"cannot read image file {path}: {error}") from error


@register_source("folder", modality="image", needs_data_dir=True,
                 description="a folder of images, flat or with class subfolders")
def _load(request, cache_dir):
    return load_folder(request.data_dir, image_size=request.image_size, cache_dir=cache_dir)
