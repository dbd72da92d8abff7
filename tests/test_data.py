"""Every dataset source on small local data written here; the bundled photos at a small and the default
size. Nothing here downloads: VQBENCH_OFFLINE is set wherever a source could fall back to a download."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data.dataset import Dataset
from benchmark.data.sources import available_sources, load_dataset
from benchmark.data.dataset import content_digest
from benchmark.data import cifar10, fashion_mnist, photos
from benchmark.data.cache import cached_dataset


def rows_as_bytes(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


# ---------------------------------------------------------------- arguments

def test_unknown_dataset_lists_the_choices(tmp_path):
    with pytest.raises(ValueError, match="cifar10") as error:
        load_dataset("imagenet", cache_dir=tmp_path)
    assert all(name in str(error.value) for name in available_sources())


@pytest.mark.parametrize("image_size", [4, 30, 0, -8, 16.0, True])
def test_bad_image_size_is_rejected_before_any_work(tmp_path, image_size):
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("photos", image_size=image_size, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_folder_needs_a_data_dir(tmp_path):
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("folder", cache_dir=tmp_path)


# ---------------------------------------------------------------- photos

@pytest.fixture(scope="module")
def small_photos(tmp_path_factory):
    cache = tmp_path_factory.mktemp("photos-cache")
    return cache, photos.load_photos(image_size=16, seed=0, cache_dir=cache, num_train=512)


def test_photos_shapes_and_types(small_photos):
    _, dataset = small_photos
    assert dataset.name == "photos" and dataset.channels == 3 and dataset.image_size == 16
    assert dataset.train.shape == (512, 3, 16, 16) and dataset.train.dtype == torch.uint8
    assert dataset.test.dim() == 4 and dataset.test.shape[1:] == (3, 16, 16)
    assert len(dataset.test) > 1000  # half-stride grid over every photo's held-out strip
    assert "astronaut" in dataset.source and "china.jpg" in dataset.source
    assert dataset.digest == content_digest(dataset.train, dataset.test)


def test_photos_cache_is_reused_and_deterministic(small_photos, tmp_path):
    cache, first = small_photos
    [cache_file] = list(cache.glob("photos-*.pt"))
    written = cache_file.stat().st_mtime_ns
    again = photos.load_photos(image_size=16, seed=0, cache_dir=cache, num_train=512)
    assert cache_file.stat().st_mtime_ns == written  # read, not rebuilt
    assert torch.equal(again.train, first.train) and again.digest == first.digest
    rebuilt = photos.load_photos(image_size=16, seed=0, cache_dir=tmp_path, num_train=512)
    assert rebuilt.digest == first.digest  # a fresh build gives the same bytes


def test_photos_seed_changes_train_crops_only(small_photos, tmp_path):
    _, seed0 = small_photos
    seed1 = photos.load_photos(image_size=16, seed=1, cache_dir=tmp_path, num_train=512)
    assert torch.equal(seed1.test, seed0.test)
    assert not torch.equal(seed1.train, seed0.train)


def test_photos_test_patches_never_equal_train_patches(small_photos):
    _, dataset = small_photos
    train = rows_as_bytes(dataset.train) | rows_as_bytes(dataset.train.flip(-1))
    assert not train & rows_as_bytes(dataset.test)


def test_photos_test_set_is_the_grid_over_the_bottom_strips():
    size = 16
    strips = []
    for photo in photos.bundled_photos().values():
        height = photo.shape[1]
        strip = size * max(1, round(photos.TEST_FRACTION * height / size))
        strips.append(photos.grid_patches(photo[:, height - strip:], size))
    grid = torch.cat(strips)
    grid = grid[photos.patch_std(grid) >= photos.MIN_PATCH_STD]
    built = photos.build_photos(image_size=size, seed=0, num_train=8)
    assert torch.equal(built.test, grid)


def test_random_crops_stay_inside_their_region():
    # each pixel encodes its coordinates, so a crop is a contiguous window exactly when its values are
    height, width, size = 40, 50, 8
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    region = torch.stack([ys, xs, (ys * 7 + xs * 3) % 256]).to(torch.uint8)
    crops = photos.random_patches([region], size, 300, torch.Generator().manual_seed(0))
    assert crops.shape == (300, 3, size, size)
    for crop in crops:
        if crop[1, 0, 0] > crop[1, 0, -1]:  # horizontally flipped
            crop = crop.flip(-1)
        top, left = int(crop[0, 0, 0]), int(crop[1, 0, 0])
        assert torch.equal(crop, region[:, top:top + size, left:left + size])


def test_grid_patches_tile_without_overlap():
    region = torch.arange(3 * 16 * 28, dtype=torch.int64).reshape(3, 16, 28)
    patches = photos.grid_patches(region, 8)
    assert patches.shape == (2 * 3, 3, 8, 8)  # rows 16 // 8 = 2, columns 28 // 8 = 3, centred (left 2)
    assert torch.equal(patches[1], region[:, 0:8, 10:18])
    assert torch.equal(patches[3], region[:, 8:16, 2:10])
    # no pixel belongs to two test patches
    assert len(set(patches.flatten().tolist())) == patches.numel()


def test_photos_test_groups_name_every_photo(small_photos):
    _, dataset = small_photos
    assert dataset.test_groups is not None and dataset.test_groups.shape == (len(dataset.test),)
    assert set(dataset.test_groups.tolist()) == set(range(len(photos.bundled_photos())))


def test_stratified_sample_covers_every_source_and_is_fixed():
    from benchmark.data.sampling import indices_digest, stratified_sample

    groups = torch.cat([torch.full((n,), g) for g, n in enumerate([500, 30, 7, 200, 1])])
    chosen = stratified_sample(groups, len(groups), 40, seed=0)
    assert len(chosen) == 40 and len(set(chosen.tolist())) == 40
    assert set(groups[chosen].tolist()) == {0, 1, 2, 3, 4}   # every source, even the 1-image one
    counts = torch.bincount(groups[chosen], minlength=5)
    assert counts[0] > counts[3] > counts[1]                 # in proportion to the sources' sizes
    assert torch.equal(chosen, stratified_sample(groups, len(groups), 40, seed=0))
    assert indices_digest(chosen) != indices_digest(stratified_sample(groups, len(groups), 40, seed=1))
    assert torch.equal(stratified_sample(groups, len(groups), 10_000, seed=0), torch.arange(len(groups)))


def test_corrupt_cache_file_is_rebuilt(small_photos, tmp_path):
    _, reference = small_photos
    build = lambda: photos.build_photos(image_size=16, seed=0, num_train=512)  # noqa: E731
    cache_file = tmp_path / "k.pt"
    cache_file.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = cached_dataset(tmp_path, "k", build)
    assert rebuilt.digest == reference.digest
    # a readable file whose content no longer matches its digest is not trusted either
    stored = torch.load(cache_file, weights_only=True)
    stored["train"][0, 0, 0, 0] ^= 1
    torch.save(stored, cache_file)
    with pytest.warns(UserWarning, match="digest"):
        again = cached_dataset(tmp_path, "k", build)
    assert torch.equal(again.train, reference.train)


def test_photos_default_size(tmp_path):
    """The dataset trials really use: 16,384 train and about 950 non-overlapping test patches of 32
    pixels: at 8x8 tokens each, more than 10 test tokens per code at K = 2^12 (utilization uncapped)."""
    dataset = load_dataset("photos", cache_dir=tmp_path)
    assert dataset.train.shape == (photos.NUM_TRAIN, 3, 32, 32)
    assert 900 <= len(dataset.test) <= 1100
    assert len(dataset.test) * 64 >= 10 * 2 ** 12
    train = rows_as_bytes(dataset.train) | rows_as_bytes(dataset.train.flip(-1))
    assert not train & rows_as_bytes(dataset.test)
    assert load_dataset("photos", cache_dir=tmp_path, seed=0).digest == dataset.digest


# ---------------------------------------------------------------- Fashion-MNIST

def idx_bytes(images: np.ndarray, magic: int = 0x803) -> bytes:
    return struct.pack(">IIII", magic, *images.shape) + images.astype(np.uint8).tobytes()


def write_idx_pair(directory, train, test, gzipped):
    directory.mkdir(parents=True, exist_ok=True)
    for stem, images in (("train-images-idx3-ubyte", train), ("t10k-images-idx3-ubyte", test)):
        blob = idx_bytes(images)
        if gzipped:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (directory / stem).write_bytes(blob)


@pytest.fixture
def fashion_images():
    generator = np.random.default_rng(0)
    return (generator.integers(0, 256, (12, 28, 28), dtype=np.uint8),
            generator.integers(0, 256, (5, 28, 28), dtype=np.uint8))


@pytest.mark.parametrize("gzipped", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path, fashion_images, gzipped):
    train, test = fashion_images
    write_idx_pair(tmp_path / "idx", train, test, gzipped)
    native = load_dataset("fashion-mnist", image_size=28, data_dir=str(tmp_path / "idx"),
                          cache_dir=tmp_path / "cache")
    assert native.channels == 1 and native.source.endswith(str(tmp_path / "idx"))
    assert torch.equal(native.train[:, 0], torch.from_numpy(train))
    assert torch.equal(native.test[:, 0], torch.from_numpy(test))
    resized = load_dataset("fashion-mnist", data_dir=str(tmp_path / "idx"), cache_dir=tmp_path / "c")
    assert resized.train.shape == (12, 1, 32, 32) and resized.test.shape == (5, 1, 32, 32)
    assert resized.train.dtype == torch.uint8


def test_fashion_mnist_finds_torchvision_layout(tmp_path, fashion_images):
    write_idx_pair(tmp_path / "FashionMNIST" / "raw", *fashion_images, gzipped=False)
    dataset = load_dataset("fashion-mnist", data_dir=str(tmp_path), cache_dir=tmp_path / "cache")
    assert len(dataset.train) == 12


def test_fashion_mnist_uses_the_system_dir_without_data_dir(tmp_path, fashion_images, monkeypatch):
    write_idx_pair(tmp_path / "system", *fashion_images, gzipped=True)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "system")
    dataset = load_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    assert str(tmp_path / "system") in dataset.source


@pytest.mark.parametrize("damage, message", [
    (lambda blob: struct.pack(">I", 0x801) + blob[4:], "magic number"),
    (lambda blob: blob[:-10], "needs"),
    (lambda blob: blob[:9], "truncated"),
    (lambda blob: gzip.compress(blob)[:-30], "cannot read"),
    (lambda blob: b"\x1f\x8b" + b"garbage" * 10, "cannot read"),
])
def test_corrupt_idx_file_names_the_file(tmp_path, fashion_images, damage, message):
    train, test = fashion_images
    write_idx_pair(tmp_path, train, test, gzipped=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(ValueError, match=message) as error:
        load_dataset("fashion-mnist", data_dir=str(tmp_path), cache_dir=tmp_path / "cache")
    assert str(bad) in str(error.value)


def test_missing_fashion_mnist_offline_names_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "absent")
    for data_dir in (None, str(tmp_path)):
        with pytest.raises(ValueError, match="--data-dir") as error:
            load_dataset("fashion-mnist", data_dir=data_dir, cache_dir=tmp_path / "cache")
        assert "dataset-fashion-mnist" in str(error.value) and "VQBENCH_OFFLINE" in str(error.value)


# ---------------------------------------------------------------- CIFAR-10

def write_cifar(root, images_per_batch=3, seed=0):
    """Tiny batches in torchvision's layout: a pickled dict with uint8 b'data' (N, 3072)."""
    generator = np.random.default_rng(seed)
    directory = root / cifar10.BATCH_DIR
    directory.mkdir(parents=True)
    written = {}
    for name in cifar10.TRAIN_BATCHES + cifar10.TEST_BATCHES:
        data = generator.integers(0, 256, (images_per_batch, 3072), dtype=np.uint8)
        with open(directory / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": [0] * images_per_batch,
                         b"data": data}, handle)
        written[name] = data
    return directory, written


def test_cifar10_reads_torchvision_layout(tmp_path):
    directory, written = write_cifar(tmp_path / "data")
    dataset = load_dataset("cifar10", data_dir=str(tmp_path / "data"), cache_dir=tmp_path / "cache")
    assert dataset.train.shape == (15, 3, 32, 32) and dataset.test.shape == (3, 3, 32, 32)
    expected = np.concatenate([written[n] for n in cifar10.TRAIN_BATCHES]).reshape(-1, 3, 32, 32)
    assert torch.equal(dataset.train, torch.from_numpy(expected))
    assert torch.equal(dataset.test, torch.from_numpy(written["test_batch"].reshape(-1, 3, 32, 32)))
    # the batch folder itself works too, and other sizes are resized
    small = load_dataset("cifar10", image_size=16, data_dir=str(directory), cache_dir=tmp_path / "c")
    assert small.train.shape == (15, 3, 16, 16)


def test_corrupt_cifar_batch_names_the_file(tmp_path):
    directory, _ = write_cifar(tmp_path)
    bad = directory / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ValueError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=str(tmp_path), cache_dir=tmp_path / "cache")
    with open(bad, "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 100), dtype=np.uint8)}, handle)
    with pytest.raises(ValueError, match="data_batch_3.*3072"):
        load_dataset("cifar10", data_dir=str(tmp_path), cache_dir=tmp_path / "cache2")


def test_missing_cifar_offline_names_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")
    with pytest.raises(ValueError, match="--data-dir.*download"):
        load_dataset("cifar10", data_dir=str(tmp_path), cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- image folder

def write_png(path, width, height, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "images"
    for index in range(30):
        write_png(root / f"class{index % 3}" / f"img{index:02d}.png", 40 + index, 24, index)
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(root / "grey.jpg")  # greyscale -> RGB
    write_png(root / ".hidden" / "skip.png", 8, 8, 99)
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_loads_a_class_tree(image_tree, tmp_path):
    dataset = load_dataset("folder", image_size=16, data_dir=str(image_tree), cache_dir=tmp_path / "c")
    assert dataset.channels == 3 and dataset.train.shape[1:] == (3, 16, 16)
    assert len(dataset.train) + len(dataset.test) == 31 and len(dataset.test) >= 1
    assert not rows_as_bytes(dataset.train) & rows_as_bytes(dataset.test)
    again = load_dataset("folder", image_size=16, data_dir=str(image_tree), cache_dir=tmp_path / "d")
    assert again.digest == dataset.digest  # the split and the pixels are deterministic


def test_folder_centre_crops_the_shorter_side(tmp_path):
    root = tmp_path / "flat"
    left, right = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    middle = np.full((8, 8, 3), 100, np.uint8)
    for name in ("a.png", "b.png"):  # a 24x8 strip: scaled to height 8, only the middle is kept
        root.mkdir(exist_ok=True)
        Image.fromarray(np.concatenate([left, middle, right], axis=1)).save(root / name)
    dataset = load_dataset("folder", image_size=8, data_dir=str(root), cache_dir=tmp_path / "c")
    assert len(dataset.train) == 1 and len(dataset.test) == 1
    assert (dataset.train.float() - 100).abs().max() <= 2


def test_folder_cache_follows_the_files(image_tree, tmp_path):
    first = load_dataset("folder", image_size=16, data_dir=str(image_tree), cache_dir=tmp_path / "c")
    write_png(image_tree / "class0" / "new.png", 30, 30, 123)
    second = load_dataset("folder", image_size=16, data_dir=str(image_tree), cache_dir=tmp_path / "c")
    assert len(second.train) + len(second.test) == 32 and second.digest != first.digest


def test_unreadable_image_names_the_file(image_tree, tmp_path):
    bad = image_tree / "class1" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        load_dataset("folder", image_size=16, data_dir=str(image_tree), cache_dir=tmp_path / "c")


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files"):
        load_dataset("folder", data_dir=str(tmp_path / "empty"), cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="existing folder"):
        load_dataset("folder", data_dir=str(tmp_path / "absent"), cache_dir=tmp_path / "c")


def test_image_dataset_channels():
    images = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    dataset = Dataset("x", "here", images, images, content_digest(images, images))
    assert dataset.channels == 1 and dataset.image_size == 8


def test_cache_dir_defaults_to_the_environment(tmp_path, monkeypatch):
    from benchmark.data.sources import resolve_cache_dir

    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "env-cache"))
    assert resolve_cache_dir(None) == tmp_path / "env-cache"
    assert resolve_cache_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("VQBENCH_CACHE")
    assert str(resolve_cache_dir(None)).endswith(".cache/vqbench")
