"""One trial's configuration. A trial is this dataclass in and a dict of metrics out."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields


#: Version of :meth:`TrainConfig.trial_key`'s content; bump it when an existing field's default changes.
TRIAL_KEY_VERSION = 2


#: adamw: AdamW with torch's default betas; adam-paper: Adam with betas (0.5, 0.9) and no weight decay,
#: the optimizer of the SimVQ paper's configs (taming-transformers' VQGAN). Set lr=1e-4 and
#: warmup_steps=0 as well for the paper's constant schedule.
OPTIMIZERS = ("adamw", "adam-paper")


@dataclass
class TrainConfig:
    # -- what is compared
    quantizer: str = "vq"
    codebook_size: int = 1024
    latent_dim: int = 32
    quantizer_options: dict = field(default_factory=dict)
    # -- data
    dataset: str = "photos"            # a registered source: photos | fashion-mnist | cifar10 | folder | speech | audio-folder
    data_dir: str | None = None
    image_size: int = 32               # image sources: pixels per side
    sample_rate: int = 16_000          # audio sources: Hz
    clip_samples: int = 16_000         # audio sources: samples per clip (1 s at 16 kHz)
    # -- backbone (identical for every quantizer in a comparison)
    backbone: str = "auto"             # a registered backbone; auto: the dataset modality's default
    width: int = 32                    # channels at every resolution (64 costs ~4x the FLOPs per step)
    num_res_blocks: int = 1            # residual blocks per resolution
    num_downsamples: int = 2           # 32 px -> 8x8 = 64 tokens per image
    # -- budget (identical for every quantizer in a comparison)
    steps: int = 500                   # default budget: `vqbench train` in a few minutes on 2 CPU cores
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    optimizer: str = "adamw"           # adamw | adam-paper (Adam, betas (0.5, 0.9): the SimVQ/VQGAN config)
    seed: int = 0
    #: budget mode: stop at the first checkpoint where utilization has levelled off (the slope rule of
    #: benchmark.evaluation.convergence); ``steps`` is then the cap, and a trial that reaches it without
    #: levelling off is *censored* (logged as such, never counted converged)
    stop_when_converged: bool = False
    convergence_window: int | None = None   # checkpoints the slope rule fits (the last ones); None: all
    # -- evaluation and logging
    eval_samples: int | None = None    # test images for utilization, PSNR, SSIM (None: the whole test set)
    eval_checkpoints: int = 4          # evaluations at 1/r^(n-1), ..., 1/r², 1/r and all of the steps
    checkpoint_ratio: float = 2.0      # r: the ratio between consecutive checkpoints (2: one per doubling)
    validation_fraction: float = 0.0   # > 0: hold out this fraction of the training set and evaluate on it
                                       # instead of the test set (for choosing hyper-parameters)
    fid_samples: int = 128             # test images for rFID/rKID (0 disables them); ~5 images/s on CPU
    log_every: int = 10
    probe_every: int = 25
    usage_window_tokens: int = 131_072  # train/utilization pools the codes of the latest this-many tokens
    dead_code_window: int = 100
    # -- execution
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    threads: int | None = None         # torch intra-op threads; None leaves torch's default

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field (and its allowed values); return self.

        Checks every field that can be checked without data or compute: the quantizer name, the sizes,
        the budget, the cadences, and that ``image_size`` survives ``num_downsamples`` halvings. Quantizer
        options are checked when the trainer builds the quantizer (the registry names unknown options).
        """
        import quantizers
        from quantizers.base import check_choice, check_float, check_int

        check_choice("quantizer", self.quantizer, quantizers.available())
        check_int("codebook_size", self.codebook_size, minimum=2)
        check_int("latent_dim", self.latent_dim, minimum=1)
        if not isinstance(self.quantizer_options, dict) or not all(
            isinstance(k, str) for k in self.quantizer_options
        ):
            raise ValueError(f"quantizer_options must be a dict of name -> value; got {self.quantizer_options!r}")
        from benchmark.data.sources import available_sources, check_image_size, get_source
        from benchmark.models.registry import available_backbones, get_backbone

        check_choice("dataset", self.dataset, available_sources())
        source = get_source(self.dataset)
        if source.needs_data_dir and not self.data_dir:
            raise ValueError(f"data_dir must be set for dataset {self.dataset!r} ({source.description})")
        if self.backbone != "auto":
            check_choice("backbone", self.backbone, available_backbones())
            if get_backbone(self.backbone).modality != source.modality:
                raise ValueError(f"backbone {self.backbone!r} reads {get_backbone(self.backbone).modality} data; "
                                 f"dataset {self.dataset!r} is {source.modality}")
        check_int("width", self.width, minimum=1)
        check_int("num_res_blocks", self.num_res_blocks, minimum=0)
        check_int("num_downsamples", self.num_downsamples, minimum=0)
        if source.modality == "image":
            check_image_size(self.image_size)
            if self.image_size % (2 ** self.num_downsamples):
                raise ValueError(
                    f"image_size must be divisible by 2**num_downsamples = {2 ** self.num_downsamples}; "
                    f"got image_size={self.image_size}, num_downsamples={self.num_downsamples}"
                )
        else:
            check_int("sample_rate", self.sample_rate, minimum=1000)
            check_int("clip_samples", self.clip_samples, minimum=1)
        check_int("steps", self.steps, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_float("lr", self.lr, minimum=0.0, inclusive=False)
        check_float("weight_decay", self.weight_decay, minimum=0.0)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_int("seed", self.seed, minimum=0)
        if self.eval_samples is not None:
            check_int("eval_samples", self.eval_samples, minimum=1)
        check_int("eval_checkpoints", self.eval_checkpoints, minimum=1)
        check_float("checkpoint_ratio", self.checkpoint_ratio, minimum=1.0, inclusive=False)
        check_float("validation_fraction", self.validation_fraction, minimum=0.0, maximum=0.9)
        if not isinstance(self.stop_when_converged, bool):
            raise ValueError(f"stop_when_converged must be true or false; got {self.stop_when_converged!r}")
        if self.convergence_window is not None:
            check_int("convergence_window", self.convergence_window, minimum=3)
        if self.stop_when_converged and self.eval_checkpoints < 3:
            raise ValueError("stop_when_converged needs eval_checkpoints >= 3 (the slope rule fits >= 3 points)")
        check_int("usage_window_tokens", self.usage_window_tokens, minimum=1)
        if check_int("fid_samples", self.fid_samples, minimum=0) == 1:
            raise ValueError("fid_samples must be 0 (no rFID/rKID) or >= 2 (FID needs a covariance); got 1")
        check_int("log_every", self.log_every, minimum=1)
        check_int("probe_every", self.probe_every, minimum=1)
        check_int("dead_code_window", self.dead_code_window, minimum=1)
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {self.device!r}")
        if self.threads is not None:
            check_int("threads", self.threads, minimum=1)
        return self

    def modality(self) -> str:
        """The modality of the configured dataset ("image" or "audio")."""
        from benchmark.data.sources import get_source

        return get_source(self.dataset).modality

    def resolved_backbone(self) -> str:
        """``backbone``, or the default backbone of the dataset's modality when it is "auto"."""
        if self.backbone != "auto":
            return self.backbone
        from benchmark.evaluation.modality import get_modality

        return get_modality(self.modality()).default_backbone

    def as_params(self) -> dict[str, object]:
        """Flat {name: value} for MLflow params: quantizer options become quantizer_options.<name>."""
        params = {k: v for k, v in asdict(self).items() if k != "quantizer_options"}
        for name, value in sorted(self.quantizer_options.items()):
            params[f"quantizer_options.{name}"] = value
        return params

    def trial_key(self) -> str:
        """Stable short hash of what defines the trial: :data:`TRIAL_KEY_VERSION` and the fields whose
        value differs from their default (never device or threads).

        Sweeps find a trial's earlier runs by this key, so it must not change when vqbench does: a field
        added later with a default (the behaviour before the field existed) leaves every existing key
        unchanged. Changing an existing field's default changes what an omitted field means, so it
        must come with a new TRIAL_KEY_VERSION.
        """
        content = {"trial_key_version": TRIAL_KEY_VERSION}
        for f in fields(self):
            if f.name in ("device", "threads"):
                continue
            default = f.default_factory() if f.default is MISSING else f.default
            value = getattr(self, f.name)
            if value != default:
                content[f.name] = value
        blob = json.dumps(content, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)
