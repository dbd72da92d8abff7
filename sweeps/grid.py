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
from quantizers.own_dims import OWN_DIM_QUANTIZERS, own_latent_dim

#: The grid's axes: the only TrainConfig fields that may differ between the trials of one sweep.
AXES = ("quantizer", "codebook_size", "latent_dim", "seed")
#: Budget fields a grid may set per quantizer (SweepGrid.budget_per_quantizer).
PER_QUANTIZER_FIELDS = ("lr",)


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
        return f"{c.quantizer} K={self.codebook_size} d={c.latent_dim} seed={c.seed}" + (
            f" lr={c.lr:g}" if c.validation_fraction else "")

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
    #: An optional fifth axis: every trial is repeated at each of these learning rates (the decisive
    #: experiment's learning-rate pick). Empty: every trial uses ``base.lr``.
    learning_rates: list[float] = field(default_factory=list)
    #: Budget fields set per quantizer: a declared departure from the identical budget, allowed only for the
    #: fields in :data:`PER_QUANTIZER_FIELDS` (each arm at the learning rate chosen for it on validation data).
    budget_per_quantizer: dict[str, dict] = field(default_factory=dict)

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
        if len(set(self.learning_rates)) != len(self.learning_rates) or any(
                isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 for lr in self.learning_rates):
            raise ValueError(f"learning_rates must list distinct numbers > 0; got {self.learning_rates!r}")
        for name, budget in self.budget_per_quantizer.items():
            if name not in self.quantizers:
                raise ValueError(f"budget_per_quantizer names quantizer {name!r}, which is not in the grid "
                                 f"{self.quantizers}")
            bad = sorted(set(budget) - set(PER_QUANTIZER_FIELDS))
            if bad:
                raise ValueError(f"budget_per_quantizer[{name!r}] may set only {list(PER_QUANTIZER_FIELDS)} "
                                 f"(every other budget field is identical for all trials); got {bad}")
            if self.learning_rates and "lr" in budget:
                raise ValueError("budget_per_quantizer may not set lr when learning_rates is an axis")

    def budget(self) -> dict[str, object]:
        """The fields every trial shares (data, backbone, budget, evaluation), without the axes."""
        return {k: v for k, v in asdict(self.base).items() if k not in AXES + ("quantizer_options",)}

    def to_dict(self) -> dict:
        return {"quantizers": list(self.quantizers), "codebook_sizes": list(self.codebook_sizes),
                "latent_dims": list(self.latent_dims), "seeds": list(self.seeds),
                "budget": self.budget(), "quantizer_options": dict(self.quantizer_options),
                "seeds_per_quantizer": {k: list(v) for k, v in self.seeds_per_quantizer.items()},
                **({"learning_rates": list(self.learning_rates)} if self.learning_rates else {}),
                **({"budget_per_quantizer": {k: dict(v) for k, v in self.budget_per_quantizer.items()}}
                   if self.budget_per_quantizer else {})}

    @classmethod
    def from_dict(cls, values: dict) -> "SweepGrid":
        allowed = {"quantizers", "codebook_sizes", "latent_dims", "seeds", "budget", "quantizer_options",
                   "seeds_per_quantizer", "learning_rates", "budget_per_quantizer"}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"unknown sweep grid key(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(quantizers=list(values["quantizers"]), codebook_sizes=list(values["codebook_sizes"]),
                   latent_dims=list(values["latent_dims"]), seeds=list(values["seeds"]),
                   base=base_config(values.get("budget", {})),
                   quantizer_options={k: dict(v) for k, v in values.get("quantizer_options", {}).items()},
                   seeds_per_quantizer={k: list(v) for k, v in values.get("seeds_per_quantizer", {}).items()},
                   learning_rates=[float(v) for v in values.get("learning_rates", [])],
                   budget_per_quantizer={k: dict(v) for k, v in values.get("budget_per_quantizer", {}).items()})


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
                own_budget = dict(grid.budget_per_quantizer.get(quantizer, {}))
                for lr in grid.learning_rates or [own_budget.get("lr", grid.base.lr)]:
                    for seed in grid.seeds_for(quantizer):
                        config = replace(grid.base, **own_budget, quantizer=quantizer, codebook_size=size,
                                         latent_dim=dim, seed=seed, quantizer_options=dict(options),
                                         threads=threads)
                        config = replace(config, lr=lr)
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
