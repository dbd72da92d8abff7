"""The blocked nearest-code search equals a float64 brute-force argmin, across every block edge."""
from __future__ import annotations

import pytest
import torch

from quantizers import search
from quantizers.search import block_shape, first_argmin, nearest_code


def brute_force_float64(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin_k ||z - c_k||^2 from explicit float64 differences, and each row's gap to the runner-up."""
    distances = (z.double()[:, None, :] - codebook.double()[None, :, :]).pow(2).sum(-1)
    two_smallest = distances.topk(2, dim=1, largest=False).values
    return distances.argmin(dim=1), two_smallest[:, 1] - two_smallest[:, 0]


# (N, K, max_elements): blocks that divide N and K, blocks that leave remainders, single-row and
# single-code blocks, and the default (1024 x 1024 blocks: 1100 rows and 2500 codes cross both edges).
CASES = [
    (37, 50, 1),                   # one score at a time
    (37, 50, 7),                   # 7 codes per block: 50 = 7 * 7 + 1
    (64, 300, 100),                # 3 code blocks, one row each
    (101, 300, 1000),              # 3 rows x 300 codes; 101 rows leave a remainder of 2
    (257, 129, 129 * 16),          # 16-row blocks over 257 rows
    (1100, 2500, search.DEFAULT_MAX_ELEMENTS),
]


@pytest.mark.parametrize("num_rows,num_codes,max_elements", CASES)
def test_blocked_search_equals_float64_brute_force(num_rows, num_codes, max_elements, rng):
    dim = 16
    z = torch.randn(num_rows, dim, generator=rng)
    codebook = torch.randn(num_codes, dim, generator=rng)
    expected, gap = brute_force_float64(z, codebook)
    assert gap.min() > 0, "random data should have no exact ties"
    got = nearest_code(z, codebook, max_elements=max_elements)
    assert got.dtype == torch.int64 and got.shape == (num_rows,)
    assert torch.equal(got, expected)


def test_block_shape_respects_max_elements():
    for num_rows, num_codes, max_elements in CASES + [(8192, 262_144, 1 << 20), (5, 3, 1 << 24)]:
        rows, codes = block_shape(num_rows, num_codes, max_elements)
        assert 1 <= rows <= num_rows and 1 <= codes <= num_codes
        assert rows * codes <= max(max_elements, 1)


def test_duplicate_codes_in_different_blocks_return_one_of_the_copies(rng):
    # code 3 is duplicated at 40 and 77; with 10-code blocks the copies lie in three blocks. Equal codes
    # give scores equal only up to the matrix product's rounding (columns may take different kernel
    # paths), so any copy may win; what matters is that one does. Exact ties in the computed scores
    # resolve to the first index: see test_cpu_and_gpu_style_merges_agree.
    codebook = torch.randn(90, 8, generator=rng)
    codebook[40] = codebook[3]
    codebook[77] = codebook[3]
    z = codebook[3].repeat(5, 1) + 1e-3 * torch.randn(5, 8, generator=rng)
    for max_elements in (10, 1 << 24):
        assert set(nearest_code(z, codebook, max_elements=max_elements).tolist()) <= {3, 40, 77}
        assert set(nearest_code(z, codebook.flip(0), max_elements=max_elements).tolist()) <= {86, 49, 12}


def test_search_records_no_autograd_graph_and_matches_float64_inputs(rng):
    z = torch.randn(200, 12, generator=rng, dtype=torch.float64, requires_grad=True)
    codebook = torch.randn(70, 12, generator=rng, dtype=torch.float64, requires_grad=True)
    indices = nearest_code(z, codebook, max_elements=333)
    assert indices.grad_fn is None and not indices.requires_grad
    assert torch.equal(indices, brute_force_float64(z.detach(), codebook.detach())[0])


def test_precomputed_norms_give_the_same_indices(rng):
    z = torch.randn(300, 16, generator=rng)
    codebook = torch.randn(500, 16, generator=rng)
    norms = codebook.pow(2).sum(1)
    assert torch.equal(nearest_code(z, codebook, codebook_sq_norms=norms, max_elements=4000),
                       nearest_code(z, codebook))


def test_cpu_and_gpu_style_merges_agree(rng):
    """The CUDA merge (min with indices + where) and the CPU merge (amin, argmin where improved) must
    fold the same blocks into the same result; both run on CPU tensors here."""
    scores = [torch.randn(64, 20, generator=rng) for _ in range(5)]
    scores[2][7] = scores[0][7].min()  # an exact tie with an earlier block: the earlier index must stay
    results = []
    for merge in (search._merge_cpu, search._merge_gpu):
        best = torch.full((64,), float("inf"))
        index = torch.zeros(64, dtype=torch.long)
        for block, block_scores in enumerate(scores):
            merge(block_scores, block * 20, best, index)
        results.append(index)
    expected = torch.cat(scores, dim=1).argmin(dim=1)
    assert torch.equal(results[0], expected) and torch.equal(results[1], expected)


@pytest.mark.parametrize("z_shape,codebook_shape", [((10,), (5, 4)), ((10, 4), (5, 3)), ((10, 4), (4,)),
                                                    ((10, 4), (0, 4))])
def test_bad_shapes_raise(z_shape, codebook_shape):
    with pytest.raises(ValueError, match="codebook|nearest_code"):
        nearest_code(torch.zeros(z_shape), torch.zeros(codebook_shape))


@pytest.mark.parametrize("max_elements", [0, -3, 2.5, True])
def test_bad_max_elements_raise(max_elements):
    with pytest.raises(ValueError, match="max_elements"):
        nearest_code(torch.zeros(3, 2), torch.zeros(4, 2), max_elements=max_elements)


@pytest.mark.parametrize("shape", [(7, 128), (1024, 1024), (3, 4096), (5, 64), (5, 200)])
@pytest.mark.parametrize("kind", ["normal", "ties", "nan", "inf"])
def test_first_argmin_is_argmin_ties_and_nan_included(shape, kind):
    """The grouped reduction returns argmin's index exactly: the first minimum among ties, NaN as the minimum."""
    generator = torch.Generator().manual_seed(sum(shape))
    scores = (torch.randint(0, 3, shape, generator=generator).float() if kind == "ties"
              else torch.randn(*shape, generator=generator))
    if kind == "nan":
        scores[0, 5], scores[1, -1], scores[2, 70 % shape[1]] = float("nan"), float("nan"), float("nan")
    if kind == "inf":
        scores[0, 9], scores[1, :] = -float("inf"), float("inf")
    assert torch.equal(first_argmin(scores), scores.argmin(dim=1))
