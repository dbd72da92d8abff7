"""One trial's configuration. A trial is this dataclass in and a dict of metrics out."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainConfig:
    # -- what is compared
    quantizer: str = "vq"
    codebook_size: int = 1024
    latent_dim: int = 32
    quantizer_options: dict = field(default_factory=dict)
    # -- data
    dataset: str = "photos"            # photos | fashion-mnist | cifar10 | folder
    data_dir: str | None = None
    image_size: int = 32
    # -- backbone (identical for every quantizer in a comparison)
    width: int = 64                    # channels at full resolution
    num_res_blocks: int = 1            # residual blocks per resolution
    num_downsamples: int = 2           # 32 px -> 8x8 = 64 tokens per image
    # -- budget (identical for every quantizer in a comparison)
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    seed: int = 0
    # -- evaluation and logging
    eval_samples: int = 512            # test images for utilization, PSNR, SSIM
    fid_samples: int = 256             # test images for rFID/rKID (0 disables them)
    log_every: int = 10
    probe_every: int = 25
    dead_code_window: int = 100
    # -- execution
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    threads: int | None = None         # torch intra-op threads; None leaves torch's default

    def as_params(self) -> dict[str, object]:
        """Flat {name: value} for MLflow params: quantizer options become quantizer_options.<name>."""
        params = {k: v for k, v in asdict(self).items() if k != "quantizer_options"}
        for name, value in sorted(self.quantizer_options.items()):
            params[f"quantizer_options.{name}"] = value
        return params

    def trial_key(self) -> str:
        """Stable short hash of everything that defines the trial (not device or threads)."""
        content = {k: v for k, v in asdict(self).items() if k not in ("device", "threads")}
        blob = json.dumps(content, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)
