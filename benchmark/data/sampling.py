"""Which test samples an evaluation uses: stratified over sources, the same for every trial."""
from __future__ import annotations

import hashlib

import torch


def stratified_sample(groups: torch.Tensor | None, size: int, count: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``count`` of ``size`` test images, spread over ``groups`` in proportion to their
    sizes (largest remainder; every group gets one when ``count`` allows), chosen at random within each
    group by a generator seeded with ``seed``. ``count >= size`` returns every index. Depends only on its
    arguments, so every trial of a comparison evaluates the same images."""
    if count < 1:
        raise ValueError(f"count must be >= 1; got {count}")
    if count >= size:
        return torch.arange(size)
    groups = torch.zeros(size, dtype=torch.long) if groups is None else groups.long()
    if len(groups) != size:
        raise ValueError(f"groups must have one entry per test image ({size}); got {len(groups)}")
    generator = torch.Generator().manual_seed(seed)
    labels, sizes = torch.unique(groups, return_counts=True)
    shares = sizes.double() / size * count
    quotas = shares.floor().long()
    if count >= len(labels):  # every source represented before any gets a second remainder
        quotas = quotas.clamp(min=1)
    remaining = count - int(quotas.sum())
    order = torch.argsort(shares - shares.floor(), descending=True, stable=True)
    for position in order.tolist():
        if remaining == 0:
            break
        step = 1 if remaining > 0 else -1
        if step > 0 and quotas[position] < sizes[position] or step < 0 and quotas[position] > 1:
            quotas[position] += step
            remaining -= step
    chosen = []
    for label, quota in zip(labels.tolist(), quotas.tolist()):
        members = (groups == label).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return torch.cat(chosen).sort().values


def indices_digest(indices: torch.Tensor) -> str:
    """Short sha256 of an index list: two runs with equal digests evaluated the same images."""
    return hashlib.sha256(indices.long().contiguous().numpy().tobytes()).hexdigest()[:16]


def validation_split(dataset, fraction: float, seed: int = 0):
    """``dataset`` with a fixed ``fraction`` of its *training* samples held out as the evaluation set and
    the test set set aside: what hyper-parameters (a learning rate) are chosen on, so that the test set
    stays unseen until the confirmatory trials. The held-out samples depend only on ``seed``."""
    from dataclasses import replace

    from benchmark.data.dataset import content_digest

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1); got {fraction}")
    count = len(dataset.train)
    held = max(1, round(count * fraction))
    if held >= count:
        raise ValueError(f"validation_fraction={fraction} leaves no training samples of {count}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    train, validation = dataset.train[order[held:].sort().values], dataset.train[order[:held].sort().values]
    return replace(dataset, name=f"{dataset.name}-validation", train=train, test=validation, test_groups=None,
                   digest=content_digest(train, validation))
