"""The trial grid of a sweep: quantizers × codebook sizes × latent dims × seeds under one budget.

Every trial of a sweep shares one base :class:`TrainConfig` (data, backbone, budget, evaluation) and
differs only in ``quantizer``, ``codebook_size``, ``latent_dim`` and ``seed``: the identical-budget rule.

Some combinations cannot run as asked, and are resolved here, before anything starts, with the reason
kept so the command can print it:

* LFQ (Yu et al. 2023, "Language Model Beats Diffusion", Sec. 3.1) has exactly ``2**bits`` codes, one
  sign per latent dim, so its size must be a power of two and its latent dim is ``log2 K``. BSQ (Zhao et
  al. 2024, arXiv 2406.07548) binarizes the same way on the unit sphere and follows the same rule.
* FSQ (Mentzer et al. 2023, Table 1) has ``prod(levels)`` codes for its level list; a requested size is
  mapped to the paper's level lists (``quantizers.fsq.fsq_levels_for``) and its latent dim is
  ``len(levels)``. Sizes no level list reaches are skipped.

Because FSQ and LFQ "take their own dims", the latent-dim axis collapses for them: the grid keeps one
trial per (size, seed), not one per requested latent dim.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from benchmark.training.config import TrainConfig

#: The grid's axes: the only TrainConfig fields that may differ between the trials of one sweep.
AXES = ("quantizer", "codebook_size", "latent_dim", "seed")
#: Quantizers whose latent dim follows from the codebook size (see the module docstring).
OWN_DIM_QUANTIZERS = ("fsq", "lfq", "bsq")


@dataclass(frozen=True)
class Trial:
    """One trial: its full config plus what the grid resolved for it."""

    config: TrainConfig
    codebook_size: int          # codes the quantizer really has (FSQ: product of its levels)
    note: str = ""              # why the trial differs from what was asked, if it does

    @property
    def key(self) -> str:
        return self.config.trial_key()

    @property
    def run_name(self) -> str:
        """The MLflow run name, readable in a list: ``simvq K=4096 d=32 seed=0``."""
        c = self.config
        return f"{c.quantizer} K={self.codebook_size} d={c.latent_dim} seed={c.seed}"

    def as_dict(self) -> dict:
        """Plain data for Ray Tune's param space (and back with :meth:`from_dict`)."""
        return {"config": asdict(self.config), "codebook_size": self.codebook_size, "note": self.note,
                "key": self.key, "run_name": self.run_name}

    @classmethod
    def from_dict(cls, values: dict) -> "Trial":
        return cls(TrainConfig.from_dict(dict(values["config"])), int(values["codebook_size"]),
                   str(values.get("note", "")))


@dataclass(frozen=True)
class SkippedCombination:
    """A requested combination the grid cannot run, and why."""

    quantizer: str
    codebook_size: int
    latent_dim: int | None
    reason: str


@dataclass
class SweepGrid:
    """What a sweep compares (the axes) and the one budget every trial gets (``base``).

    ``base`` carries every other TrainConfig field; its values of the axis fields are ignored.
    ``quantizer_options`` holds options per quantizer name (e.g. ``{"vq": {"beta": 0.25}}``).
    """

    quantizers: list[str]
    codebook_sizes: list[int]
    latent_dims: list[int]
    seeds: list[int]
    base: TrainConfig = field(default_factory=TrainConfig)
    quantizer_options: dict[str, dict] = field(default_factory=dict)
    #: Seeds for named quantizers instead of ``seeds`` (e.g. more seeds for the comparison that needs a
    #: confidence interval, SimVQ vs VQ, and one for the rest): same budget, more samples where it matters.
    seeds_per_quantizer: dict[str, list[int]] = field(default_factory=dict)

    def seeds_for(self, quantizer: str) -> list[int]:
        return list(self.seeds_per_quantizer.get(quantizer, self.seeds))

    def validate(self) -> None:
        """Raise ValueError naming the argument for anything no trial could run with."""
        import quantizers

        known = quantizers.available()
        for name, values in (("quantizers", self.quantizers), ("codebook_sizes", self.codebook_sizes),
                             ("latent_dims", self.latent_dims), ("seeds", self.seeds)):
            if not values:
                raise ValueError(f"{name} must list at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice: {list(values)}")
        for name in self.quantizers:
            if name not in known:
                raise ValueError(f"quantizers: unknown quantizer {name!r}; available: {known}")
        for size in self.codebook_sizes:
            if isinstance(size, bool) or not isinstance(size, int) or size < 2:
                raise ValueError(f"codebook_sizes must be integers >= 2; got {size!r}")
        for dim in self.latent_dims:
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise ValueError(f"latent_dims must be integers >= 1; got {dim!r}")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"seeds must be integers >= 0; got {seed!r}")
        for name, seeds in self.seeds_per_quantizer.items():
            if name not in self.quantizers:
                raise ValueError(f"seeds_per_quantizer names quantizer {name!r}, which is not in the grid "
                                 f"{self.quantizers}")
            if not seeds or len(set(seeds)) != len(seeds) or any(
                    isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 for seed in seeds):
                raise ValueError(f"seeds_per_quantizer[{name!r}] must list distinct integers >= 0; got {seeds!r}")
        unknown = sorted(set(self.quantizer_options) - set(self.quantizers))
        if unknown:
            raise ValueError(f"quantizer_options names quantizer(s) {unknown} that are not in the grid "
                             f"{self.quantizers}")
        for name, options in self.quantizer_options.items():
            if not isinstance(options, dict):
                raise ValueError(f"quantizer_options[{name!r}] must be a mapping of option -> value")
            accepted = {p.name for p in quantizers.describe(name)["options"]}
            bad = sorted(set(options) - accepted)
            if bad:
                raise ValueError(f"quantizer_options[{name!r}]: unknown option(s) {bad}; "
                                 f"accepted: {sorted(accepted)}")
        if "levels" in self.quantizer_options.get("fsq", {}):
            raise ValueError("quantizer_options['fsq'] may not set levels: the grid maps each of codebook_sizes "
                             "to the FSQ paper's level list (quantizers.fsq.fsq_levels_for)")
        if self.base.quantizer_options:
            raise ValueError("set quantizer options per quantizer in quantizer_options, not in the base config")

    def budget(self) -> dict[str, object]:
        """The fields every trial shares (data, backbone, budget, evaluation), without the axes."""
        return {k: v for k, v in asdict(self.base).items() if k not in AXES + ("quantizer_options",)}

    def to_dict(self) -> dict:
        return {"quantizers": list(self.quantizers), "codebook_sizes": list(self.codebook_sizes),
                "latent_dims": list(self.latent_dims), "seeds": list(self.seeds),
                "budget": self.budget(), "quantizer_options": dict(self.quantizer_options),
                "seeds_per_quantizer": {k: list(v) for k, v in self.seeds_per_quantizer.items()}}

    @classmethod
    def from_dict(cls, values: dict) -> "SweepGrid":
        allowed = {"quantizers", "codebook_sizes", "latent_dims", "seeds", "budget", "quantizer_options",
                   "seeds_per_quantizer"}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"unknown sweep grid key(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(quantizers=list(values["quantizers"]), codebook_sizes=list(values["codebook_sizes"]),
                   latent_dims=list(values["latent_dims"]), seeds=list(values["seeds"]),
                   base=base_config(values.get("budget", {})),
                   quantizer_options={k: dict(v) for k, v in values.get("quantizer_options", {}).items()},
                   seeds_per_quantizer={k: list(v) for k, v in values.get("seeds_per_quantizer", {}).items()})


def base_config(budget: dict) -> TrainConfig:
    """A TrainConfig from budget fields; the axis fields may not be given here."""
    axes = sorted(set(budget) & set(AXES + ("quantizer_options",)))
    if axes:
        raise ValueError(f"budget may not set {axes}: they are the sweep's axes (quantizers, "
                         "codebook_sizes, latent_dims, seeds) or per-quantizer quantizer_options")
    return TrainConfig.from_dict(dict(budget))


def budget_fields() -> list[str]:
    """TrainConfig fields a sweep's budget may set."""
    return [f.name for f in fields(TrainConfig) if f.name not in AXES + ("quantizer_options",)]


@dataclass
class Expansion:
    trials: list[Trial]
    skipped: list[SkippedCombination]


def own_latent_dim(quantizer: str, codebook_size: int) -> tuple[int, int, str]:
    """For FSQ/LFQ: ``(latent_dim, real_codebook_size, note)`` implied by a requested size.

    Raises ValueError with the reason when no such quantizer has that size.
    """
    if quantizer in ("lfq", "bsq"):  # BSQ (Zhao et al. 2024) binarizes like LFQ, on the unit sphere
        name = quantizer.upper()
        bits = int(round(math.log2(codebook_size)))
        if 2 ** bits != codebook_size:
            lower, upper = 2 ** math.floor(math.log2(codebook_size)), 2 ** math.ceil(math.log2(codebook_size))
            raise ValueError(f"{name} has 2^bits codes (one sign per latent dim), so its codebook size must be "
                             f"a power of two; {codebook_size} is not (nearest: {lower} or {upper})")
        return bits, codebook_size, f"{name} latent dim = log2 K = {bits}"
    if quantizer == "fsq":
        from quantizers.fsq import PAPER_LEVELS, fsq_levels_for

        levels = list(fsq_levels_for(codebook_size))  # raises ValueError for sizes no level list reaches
        real = math.prod(levels)
        note = f"FSQ levels {levels}: K = {real}, latent dim = {len(levels)}"
        if real != codebook_size:
            note += f" (asked {codebook_size})"
        if codebook_size not in PAPER_LEVELS:
            note += "; levels from vqbench's extension, not the FSQ paper's table"
        return len(levels), real, note
    raise ValueError(f"quantizer {quantizer!r} does not set its own latent dim; "
                     f"only {list(OWN_DIM_QUANTIZERS)} do")


def expand_grid(grid: SweepGrid, *, threads: int = 1) -> Expansion:
    """Every trial of ``grid`` in a stable order, plus the combinations skipped and why.

    Order: quantizer, then codebook size, then latent dim, then seed, as listed. Duplicates (FSQ/LFQ
    collapse the latent-dim axis; two sizes can map to one FSQ level list) are kept once. ``threads``:
    torch threads per trial, the sweep's CPUs per trial (not part of a trial's key).
    """
    grid.validate()
    trials: list[Trial] = []
    skipped: list[SkippedCombination] = []
    seen: set[tuple] = set()
    for quantizer in grid.quantizers:
        options = dict(grid.quantizer_options.get(quantizer, {}))
        for size in grid.codebook_sizes:
            if quantizer in OWN_DIM_QUANTIZERS:
                try:
                    dim, real_size, note = own_latent_dim(quantizer, size)
                except ValueError as error:
                    skipped.append(SkippedCombination(quantizer, size, None, str(error)))
                    continue
                dims = [(dim, note)]
            else:
                real_size, dims = size, [(d, "") for d in grid.latent_dims]
            for dim, note in dims:
                identity = (quantizer, real_size, dim)
                if identity in seen:
                    if quantizer == "fsq" and note:
                        skipped.append(SkippedCombination(
                            quantizer, size, None, f"same trial as an earlier size: {note}"))
                    continue
                seen.add(identity)
                for seed in grid.seeds_for(quantizer):
                    config = replace(grid.base, quantizer=quantizer, codebook_size=size, latent_dim=dim,
                                     seed=seed, quantizer_options=dict(options), threads=threads)
                    config.validate()  # a bad budget fails here, before Ray or MLflow start
                    trials.append(Trial(config, real_size, note))
    if not trials:
        raise ValueError("the grid has no runnable trial: " +
                         "; ".join(f"{s.quantizer} K={s.codebook_size}: {s.reason}" for s in skipped))
    return Expansion(trials, skipped)


def parse_int_list(name: str, text: str) -> list[int]:
    """``"256,1024"`` or ``"2^8,2**10"`` -> ``[256, 1024]``; ValueError naming ``name`` otherwise."""
    values = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            if "^" in part or "**" in part:
                base, exponent = part.replace("**", "^").split("^")
                values.append(int(base) ** int(exponent))
            else:
                values.append(int(part))
        except ValueError:
            raise ValueError(f"{name} must be a comma-separated list of integers (2^k allowed); "
                             f"got {text!r}") from None
    if not values:
        raise ValueError(f"{name} must list at least one integer; got {text!r}")
    return values


def override_grid(grid: SweepGrid, *, quantizers: list[str] | None = None,
                  codebook_sizes: list[int] | None = None, latent_dims: list[int] | None = None,
                  seeds: list[int] | None = None, budget: dict | None = None,
                  quantizer_options: dict[str, dict] | None = None) -> SweepGrid:
    """A copy of ``grid`` with the given axes replaced and budget fields updated (None keeps)."""
    base = grid.base
    if budget:
        unknown = sorted(set(budget) - set(budget_fields()))
        if unknown:
            raise ValueError(f"unknown budget field(s) {unknown}; allowed: {budget_fields()}")
        base = replace(base, **budget)
    options = {k: dict(v) for k, v in grid.quantizer_options.items()}
    for name, values in (quantizer_options or {}).items():
        options.setdefault(name, {}).update(values)
    new_quantizers = list(quantizers) if quantizers is not None else list(grid.quantizers)
    # options for a quantizer dropped from the grid by the override no longer apply
    options = {k: v for k, v in options.items() if k in new_quantizers}
    return SweepGrid(
        quantizers=new_quantizers,
        codebook_sizes=list(codebook_sizes) if codebook_sizes is not None else list(grid.codebook_sizes),
        latent_dims=list(latent_dims) if latent_dims is not None else list(grid.latent_dims),
        seeds=list(seeds) if seeds is not None else list(grid.seeds),
        base=base, quantizer_options=options,
        # explicit --seeds apply to every quantizer; otherwise the preset's per-quantizer seeds stay
        seeds_per_quantizer={} if seeds is not None else {
            k: list(v) for k, v in grid.seeds_per_quantizer.items() if k in new_quantizers},
    )
