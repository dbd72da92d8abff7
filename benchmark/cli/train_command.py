"""Train one autoencoder with one quantizer under the default small budget and log the run to MLflow.

The run goes to $MLFLOW_TRACKING_URI, else to ./mlflow.db (MLflow's default SQLite store); browse it
with `vqbench ui`. Every value not given keeps the TrainConfig default shown in brackets, so two runs
that differ only in --quantizer, --codebook-size or --latent-dim share the identical budget.

examples:
  vqbench train --quantizer simvq --codebook-size 4096 --latent-dim 32
  vqbench train --quantizer fsq --codebook-size 1000 --option levels=[8,5,5,5] --fid-samples 0
  vqbench train --quantizer vq --codebook-size 1024 --option beta=0.5 --steps 2000 --seed 1
"""
from __future__ import annotations

import argparse

from benchmark.training.config import TrainConfig

#: (flag, TrainConfig field, type, help) for every field settable from the command line.
FIELDS = [
    ("--quantizer", "quantizer", str, "quantizer name (see `vqbench list`)"),
    ("--codebook-size", "codebook_size", int, "codebook size K (FSQ rounds it to a product of levels)"),
    ("--latent-dim", "latent_dim", int, "latent dimension the quantizer sees"),
    ("--dataset", "dataset", str, "photos | fashion-mnist | cifar10 | folder (images); speech | audio-folder (audio)"),
    ("--backbone", "backbone", str, "auto (the modality's: conv2d, codec1d) | conv2d | patch-mlp | codec1d"),
    ("--sample-rate", "sample_rate", int, "audio: samples per second"),
    ("--clip-samples", "clip_samples", int, "audio: samples per clip (a multiple of the codec's hop, 320)"),
    ("--data-dir", "data_dir", str, "where the dataset's files are (needed for 'folder')"),
    ("--image-size", "image_size", int, "image side in pixels"),
    ("--width", "width", int, "backbone channels"),
    ("--num-res-blocks", "num_res_blocks", int, "residual blocks per resolution"),
    ("--num-downsamples", "num_downsamples", int, "stride-2 downsamplings (tokens = (size / 2^n)^2)"),
    ("--steps", "steps", int, "optimizer steps (the budget)"),
    ("--batch-size", "batch_size", int, "images per step"),
    ("--lr", "lr", float, "AdamW learning rate after warm-up"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay"),
    ("--warmup-steps", "warmup_steps", int, "linear learning-rate warm-up steps"),
    ("--seed", "seed", int, "seed of the initialization and the data order"),
    ("--eval-samples", "eval_samples", int, "test images for utilization, PSNR, SSIM (default: all)"),
    ("--eval-checkpoints", "eval_checkpoints", int, "evaluations at 1/2^(n-1), ..., 1/2 and all of the steps"),
    ("--checkpoint-ratio", "checkpoint_ratio", float, "ratio between consecutive checkpoints (default 2)"),
    ("--convergence-window", "convergence_window", int, "checkpoints the slope rule fits (default: all)"),
    ("--validation-fraction", "validation_fraction", float, "evaluate on this fraction of the training set"),
    ("--optimizer", "optimizer", str, "adamw | adam-paper (Adam, betas (0.5, 0.9))"),
    ("--fid-samples", "fid_samples", int, "test images for rFID/rKID; 0 skips them (slow on CPU)"),
    ("--log-every", "log_every", int, "steps between logged training curves"),
    ("--probe-every", "probe_every", int, "steps between collapse probes"),
    ("--dead-code-window", "dead_code_window", int, "steps without use after which a code counts as dead"),
    ("--device", "device", str, "auto | cpu | cuda | cuda:N"),
    ("--threads", "threads", int, "torch CPU threads (default: torch's own choice)"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    for flag, name, kind, help_text in FIELDS:
        parser.add_argument(flag, dest=name, type=kind, default=None, metavar=name.split("_")[-1].upper(),
                            help=f"{help_text} [{getattr(defaults, name)}]")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a quantizer option, repeatable; VALUE is read as YAML (0.5, true, [8,5,5,5])")
    parser.add_argument("--experiment", default="vqbench", help="MLflow experiment name [vqbench]")
    parser.add_argument("--run-name", default=None,
                        help="MLflow run name [e.g. 'simvq K=4096 d=32 seed=0']")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI [$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db]")
    parser.add_argument("--no-system-metrics", action="store_true",
                        help="do not log CPU/memory/GPU usage with the run")
    parser.add_argument("--stop-when-converged", action="store_true",
                        help="stop at the first checkpoint where utilization has levelled off (the slope rule); "
                             "--steps is then the cap, and a trial reaching it is logged as censored")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="a traceback with an error (default: one line)")


def parse_options(pairs: list[str]) -> dict:
    """['beta=0.5', 'levels=[8,5,5,5]'] -> {'beta': 0.5, 'levels': [8, 5, 5, 5]}."""
    import yaml

    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"--option must look like KEY=VALUE (e.g. beta=0.5); got {pair!r}")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError as error:
            raise ValueError(f"--option {key}: cannot read value {value!r}: {error}") from None
    return options


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {name: getattr(args, name) for _, name, _, _ in FIELDS if getattr(args, name) is not None}
    values["quantizer_options"] = parse_options(args.option)
    if args.stop_when_converged:
        values["stop_when_converged"] = True
    return TrainConfig.from_dict(values).validate()


def run(args: argparse.Namespace) -> int:
    from benchmark.training.memory import check_trials_fit
    from benchmark.tracking import keys
    from benchmark.tracking.runs import RunTracking, resolve_tracking_uri
    from benchmark.tracking.store import redact
    from benchmark.training.trainer import train
    from sweeps.measurement import check_data

    config = config_from_args(args)
    # Refused before the store or a run exists: unreadable or too little data, a codebook that cannot fit.
    check_data(config)
    check_trials_fit([config])
    uri = resolve_tracking_uri(args.tracking_uri)
    tracking = RunTracking(tracking_uri=uri, experiment=args.experiment, run_name=args.run_name,
                           log_system_metrics=not args.no_system_metrics)
    result = train(config, tracking=tracking, progress=not args.no_progress)

    print(f"\nrun {result.run_id} in experiment {args.experiment!r}, store {redact(uri)}")
    print(f"browse it: vqbench ui --backend-store-uri {redact(uri)}")
    print("final metrics:")
    shown = [k for k in keys.FINAL + keys.FINAL_OPTIONAL if k in result.metrics]
    shown += [k for k in (keys.TRAIN_LOSS, keys.TRAIN_UTILIZATION, keys.TRAIN_DEAD_CODES,
                          keys.PROBE_DEAD_CODE_REVIVAL, keys.PROBE_DISTRIBUTION_GAP, keys.PROBE_CODEBOOK_RANK)
              if k in result.metrics]
    for key in shown:
        print(f"  {key:32s} {result.metrics[key]:.6g}")
    return 0
