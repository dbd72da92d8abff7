"""Side-by-side timing of one training step of the quick preset's trial, today's step vs candidates.

All variants run in ONE process, interleaved (round r runs every variant for a few steps, in a rotated
order), at 1 torch thread; the table reports medians per step and the ratio to today's step measured in
the same rounds. Equivalence: every variant is trained 20 steps from the same seed (same model, same
batches) and its losses and quantizer indices are compared with today's step.

    .venv/bin/python results/step_speed/measure_step.py --quantizers vq simvq --rounds 8

Compile start-up is timed separately (the first step of a compiled variant minus a median step), once with
an empty inductor cache (a fresh worker on a fresh machine) and once more on a second model in the same
process (warm in-process/FX-graph caches: what later trials of one worker pay).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# A cold inductor cache, so the first compile is what a fresh machine pays (set before torch loads).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="vqbench-inductor-"))

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from quantizers import search  # noqa: E402

from benchmark.data.sources import load_dataset
from benchmark.evaluation.modality import get_modality
from benchmark.training.setup import (
    DATA_ORDER_SEED_OFFSET,
    batch_order,
    build_model,
    build_optimizer,
    data_request,
    learning_rate,
)


def quick_config(quantizer: str, codebook_size: int, batch_size: int | None = None):
    """The quick preset's seed-0 trial config for ``quantizer`` at ``codebook_size`` (its vq trial with the
    quantizer and size replaced when the preset has no such trial, e.g. the decide arms), at ``batch_size``."""
    from dataclasses import replace

    from sweeps.grid import expand_grid
    from sweeps.presets import quick

    trials = [t.config for t in expand_grid(quick()).trials if t.config.seed == 0]
    match = [c for c in trials if c.quantizer == quantizer and c.codebook_size == codebook_size]
    config = match[0] if match else replace(next(c for c in trials if c.quantizer == "vq"),
                                            quantizer=quantizer, codebook_size=codebook_size)
    return config if batch_size is None else replace(config, batch_size=batch_size)


def _argmin_merge_cpu(scores, code_start, best, index):
    """quantizers.search._merge_cpu before the grouped argmin (commit 2bf4e4d): argmin over whole rows."""
    block_min = scores.amin(dim=1)
    improved = (block_min < best).nonzero().squeeze(1)
    if improved.numel() == 0:
        return
    best[improved] = block_min[improved]
    index[improved] = scores.index_select(0, improved).argmin(dim=1) + code_start


# ----------------------------------------------------------------------------- the variants
def _base(config, channels):
    model = build_model(config, channels)
    return model, build_optimizer(config, [p for p in model.parameters() if p.requires_grad]), {}


def v_baseline(config, channels):
    return _base(config, channels)


def v_channels_last(config, channels):
    model, opt, _ = _base(config, channels)
    model.encoder.to(memory_format=torch.channels_last)
    model.decoder.to(memory_format=torch.channels_last)
    return model, opt, {"channels_last": True}


def v_no_mkldnn(config, channels):
    model, opt, _ = _base(config, channels)
    return model, opt, {"flags": {"mkldnn": False}}


def v_flush_denormal(config, channels):
    model, opt, _ = _base(config, channels)
    return model, opt, {"flags": {"denormal": True}}


def v_adamw_foreach(config, channels):
    model = build_model(config, channels)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate(1, config), weight_decay=config.weight_decay, foreach=True)
    return model, opt, {}


def v_adamw_fused(config, channels):
    model = build_model(config, channels)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate(1, config), weight_decay=config.weight_decay, fused=True)
    return model, opt, {}


def v_compile_backbone(config, channels):
    model, opt, _ = _base(config, channels)
    model.encoder.compile()   # in place: parameter names and state_dict keys unchanged
    model.decoder.compile()
    return model, opt, {"compiled": True}


def v_compile_model(config, channels):
    model, opt, _ = _base(config, channels)
    model.compile()           # the quantizer too (graph breaks at the finiteness check)
    return model, opt, {"compiled": True}


def v_compile_backbone_cl(config, channels):
    model, opt, _ = _base(config, channels)
    model.encoder.to(memory_format=torch.channels_last)
    model.decoder.to(memory_format=torch.channels_last)
    model.encoder.compile()
    model.decoder.compile()
    return model, opt, {"compiled": True, "channels_last": True}


def v_argmin_merge(config, channels):
    model, opt, _ = _base(config, channels)
    return model, opt, {"flags": {"argmin_merge": True}}


def v_adamw_single(config, channels):
    model, opt, _ = _base(config, channels)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate(1, config), weight_decay=config.weight_decay, foreach=False)
    return model, opt, {}


def v_argmin_merge_single_adamw(config, channels):
    """The step before this round's two changes: whole-row argmin merge, AdamW's default single-tensor loop."""
    model, opt, _ = v_adamw_single(config, channels)
    return model, opt, {"flags": {"argmin_merge": True}}


VARIANTS = {"baseline": v_baseline, "argmin_merge": v_argmin_merge, "adamw_single": v_adamw_single,
            "before_round4": v_argmin_merge_single_adamw, "channels_last": v_channels_last, "mkldnn_off": v_no_mkldnn,
            "flush_denormal": v_flush_denormal, "adamw_foreach": v_adamw_foreach, "adamw_fused": v_adamw_fused,
            "compile_backbone": v_compile_backbone, "compile_model": v_compile_model,
            "compile_backbone_cl": v_compile_backbone_cl}


class Runner:
    """One variant's model, optimizer and batch stream; ``step()`` is the trainer's training step."""

    def __init__(self, name, config, dataset, modality):
        self.name, self.config, self.modality, self.dataset = name, config, modality, dataset
        self.train_images = torch.as_tensor(dataset.train)
        self.model, self.optimizer, self.extra = VARIANTS[name](config, dataset.channels)
        self.model.train()
        self.batches = batch_order(len(self.train_images), config.batch_size, config.seed + DATA_ORDER_SEED_OFFSET)
        self.step_number = 0

    def _flags(self):
        flags = self.extra.get("flags", {})
        old = (torch.backends.mkldnn.enabled, search._merge_cpu)
        if flags.get("argmin_merge"):
            search._merge_cpu = _argmin_merge_cpu
        if "mkldnn" in flags:
            torch.backends.mkldnn.enabled = flags["mkldnn"]
        if flags.get("denormal"):
            torch.set_flush_denormal(True)
        return old

    def _unflags(self, old):
        torch.backends.mkldnn.enabled = old[0]
        search._merge_cpu = old[1]
        torch.set_flush_denormal(False)

    def step(self):
        old = self._flags()
        try:
            self.step_number += 1
            lr = learning_rate(self.step_number, self.config)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            images = self.modality.to_float(self.train_images[next(self.batches)], torch.device("cpu"))
            if self.extra.get("channels_last"):
                images = images.contiguous(memory_format=torch.channels_last)
            output = self.model(images)
            recon = self.modality.reconstruction_loss(output.reconstruction, images, self.dataset)
            loss = recon + output.quantizer.loss
            if not torch.isfinite(loss):
                raise RuntimeError("non-finite")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            return float(loss.detach()), output.quantizer.indices.detach().clone()
        finally:
            self._unflags(old)


def equivalence(names, config, dataset, modality, steps=20):
    """Losses and indices of ``steps`` steps per variant vs the baseline's."""
    reference = Runner("baseline", config, dataset, modality)
    ref = [reference.step() for _ in range(steps)]
    rows = {}
    for name in names:
        if name == "baseline":
            continue
        runner = Runner(name, config, dataset, modality)
        got = [runner.step() for _ in range(steps)]
        loss_diff = max(abs(a[0] - b[0]) for a, b in zip(ref, got))
        rel = max(abs(a[0] - b[0]) / abs(a[0]) for a, b in zip(ref, got))
        exact = all(a[0] == b[0] and torch.equal(a[1], b[1]) for a, b in zip(ref, got))
        match = [float((a[1] == b[1]).float().mean()) for a, b in zip(ref, got)]
        rows[name] = {"bit_identical": exact, "max_abs_loss_diff": loss_diff, "max_rel_loss_diff": rel,
                      "index_match_step20": match[-1], "index_match_min": min(match),
                      "loss20": got[-1][0], "ref_loss20": ref[-1][0]}
    return rows


def timing(names, config, dataset, modality, rounds, steps_per_round, warmup):
    runners, startup = {}, {}
    for name in names:
        started = time.perf_counter()
        runner = Runner(name, config, dataset, modality)
        first = time.perf_counter()
        runner.step()
        startup[name] = {"build": first - started, "first_step": time.perf_counter() - first}
        for _ in range(warmup - 1):
            runner.step()
        runners[name] = runner
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            for _ in range(steps_per_round):
                t0 = time.perf_counter()
                runners[name].step()
                times[name].append(time.perf_counter() - t0)
    # per-round medians, so ratios compare steps taken at the same moment
    return times, startup


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quantizers", nargs="+", default=["vq", "simvq"])
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="override the quick preset's batch (the decide preset trains at 16)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps-per-round", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-equivalence", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = ["baseline"] + [n for n in args.variants if n != "baseline"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"inductor cache {os.environ['TORCHINDUCTOR_CACHE_DIR']}")
    for quantizer in args.quantizers:
        config = quick_config(quantizer, args.codebook_size, args.batch_size)
        dataset = load_dataset(config.dataset, data_request(config))
        modality = get_modality(config.modality())
        times, startup = timing(names, config, dataset, modality, args.rounds, args.steps_per_round, args.warmup)
        base = statistics.median(times["baseline"])
        print(f"\n## {quantizer} K={args.codebook_size} (width {config.width}, batch {config.batch_size}, "
              f"{args.rounds} rounds x {args.steps_per_round} steps, interleaved)\n")
        print("| variant | median s/step | p25 | p75 | vs baseline (median ratio) | per-round ratio median | "
              "first step s (compile) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        k = args.steps_per_round
        for name in names:
            t = sorted(times[name])
            med = statistics.median(t)
            per_round = [statistics.median(times[name][i:i + k]) / statistics.median(times["baseline"][i:i + k])
                         for i in range(0, len(times[name]), k)]
            print(f"| {name} | {med:.4f} | {t[len(t) // 4]:.4f} | {t[3 * len(t) // 4]:.4f} | {med / base:.3f} | "
                  f"{statistics.median(per_round):.3f} | {startup[name]['first_step']:.2f} |")
        compiled = [n for n in names if n.startswith("compile")]
        for name in compiled:
            # a second model in the same process: what the next trial in the same worker pays
            runner = Runner(name, config, dataset, modality)
            t0 = time.perf_counter()
            runner.step()
            second = time.perf_counter() - t0
            print(f"compile start-up {name}: first (cold cache) {startup[name]['first_step'] - base:.1f} s, "
                  f"second model same process {second - base:.1f} s")
        if not args.skip_equivalence:
            print(f"\nequivalence after 20 steps, same seed ({quantizer}):")
            for name, row in equivalence(names, config, dataset, modality).items():
                print(f"  {name}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in row.items()))


if __name__ == "__main__":
    main()
