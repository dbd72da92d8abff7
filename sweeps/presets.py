"""Named sweeps: ``quick`` (the paper's table on a laptop), ``full`` (every method and control),
``mechanism`` (the controls that test the collapse theory), and ``paper`` (the SimVQ paper's scale).

Each preset is a :class:`SweepGrid`: the axes, and one budget that every trial shares. The budget of
each preset is one dict below, so it can be read and tuned in one place. Every choice that trades
science for time is said next to it.
"""
from __future__ import annotations

from .grid import SweepGrid, base_config

#: The SimVQ paper's comparison table (Zhu et al. 2024, arXiv 2411.02038, Table 1): VQGAN, VQGAN-EMA,
#: VQGAN-FC, FSQ, LFQ, VQGAN-LC and SimVQ.
PAPER_TABLE = ["vq", "ema", "fc", "fsq", "lfq", "lc", "simvq"]
#: The collapse fixes people use besides the paper's table.
FIXES = ["restart", "rotation", "ibq", "bsq"]
#: Controls that separate SimVQ's reparameterization from its confounds (issue 12).
CONTROLS = ["vq-simvq-init", "simvq-frozen-w", "simvq-train-c", "simvq-no-bias"]
#: Controls beyond the mechanism preset's: EMA-VQ and the rotation trick started at SimVQ's code scale (at
#: VQ's default U(±1/K) init the rotation scales the encoder's gradient by ||q||/||z||, 1.6e-4 of
#: straight-through's at K = 4096, so rotation-vs-VQ in a short run measures that), and the dense-gradient
#: control without a shared linear map (the decisive experiment's new arm).
MORE_CONTROLS = ["ema-simvq-init", "rotation-simvq-init", "vq-dense-pull"]
ALL_QUANTIZERS = PAPER_TABLE + FIXES + CONTROLS + MORE_CONTROLS

# ---------------------------------------------------------------------------------------------- quick
#: The quick preset's budget: all trials in <= 10 min on 2 CPU cores, Ray start, data build and figures
#: included, on the slower machines of this kind too (measured: README). Every trial gets exactly this
#: (steps x batch_size samples). The backbone is the per-patch MLP (benchmark.models.patch_mlp), trained
#: jointly with the quantizer: the conv backbone of earlier rounds cost 0.31 s a step at K = 4,096 against
#: 0.06-0.07 s for this one (one thread, same run), and at 160 conv steps the sweep took 519-911 s
#: depending on the machine (issue "Faster steps"); this one affords 1.5x the samples in less time. Its
#: token grid, test tokens and uniform ceilings are the conv backbone's (8x8 tokens of 4x4 patches).
QUICK_BUDGET: dict[str, object] = {
    "dataset": "photos",
    "image_size": 32,
    "backbone": "patch-mlp",
    "width": 128,              # the MLP's hidden width
    "num_res_blocks": 1,       # unused by patch-mlp (kept at the default so the config reads the same)
    "num_downsamples": 2,      # 4x4 patches: 32 px -> 8x8 = 64 tokens per image
    "steps": 240,
    "batch_size": 64,
    "lr": 1e-3,
    "warmup_steps": 24,
    "eval_samples": None,      # the whole photos test set: 948 patches, 60,672 tokens >= 10 K at K = 2^12
    "eval_checkpoints": 4,     # utilization at 30, 60, 120 and 240 steps: the budget axis
    "fid_samples": 0,          # rFID on the ~100 images this budget affords reads 310-345 for every
                               # trial (small-sample bias): no signal, so the quick preset skips it
    "log_every": 10,
    "probe_every": 25,
    "dead_code_window": 30,    # <= steps / 8, so consecutive revival values refer to different windows
    "device": "auto",
}
#: The conv backbone's budget of earlier quick sweeps; the mechanism preset keeps it (its committed
#: results were measured with it).
CONV_BUDGET: dict[str, object] = {
    "dataset": "photos", "image_size": 32, "width": 16, "num_res_blocks": 1, "num_downsamples": 2,
    "steps": 160, "batch_size": 64, "lr": 1e-3, "warmup_steps": 16, "eval_samples": None, "eval_checkpoints": 4,
    "fid_samples": 0, "log_every": 10, "probe_every": 25, "dead_code_window": 20, "device": "auto",
}
#: 2^8 ... 2^12: the largest size whose utilization the offline test set measures uncapped (10 test
#: tokens per code); 2^14 would read at most 0.976 for a perfectly uniform quantizer.
QUICK_CODEBOOK_SIZES = [2 ** 8, 2 ** 10, 2 ** 12]
QUICK_LATENT_DIMS = [32]
QUICK_SEEDS = [0]
#: The comparison the quick sweep exists for, SimVQ vs VQ, gets three seeds: a t-interval needs n >= 2,
#: and n = 3 is the smallest at which a paired t-test can reach p < 0.05 with a finite interval worth
#: reading. The other methods get one seed each (their rows say "insufficient seeds").
QUICK_SEEDS_PER_QUANTIZER = {"vq": [0, 1, 2], "simvq": [0, 1, 2]}

# ---------------------------------------------------------------------------------------------- mechanism
#: The mechanism preset: SimVQ, VQ and the four controls at two sizes x three seeds, 5x the quick
#: preset's steps (under an hour on 2 CPU cores, measured: results/mechanism). SimVQ's utilization was
#: still climbing at the end of every budget tried here (K = 2^8: 0.55 at 640 steps, 0.89 at 1,280;
#: K = 2^6: 0.64 at 500, 0.83 at 1,000), so no CPU budget of an hour lets it level off; the smaller size is
#: 2^6, where it comes closest. Each trial's convergence flag says whether it levelled off, and the
#: report says "not converged at this budget" where it did not.
MECHANISM_BUDGET: dict[str, object] = {
    **CONV_BUDGET,
    "steps": 800,
    "warmup_steps": 40,
    "eval_checkpoints": 5,     # 50, 100, 200, 400, 800 steps
    "log_every": 20,
    "probe_every": 50,
    "dead_code_window": 100,
}
MECHANISM_QUANTIZERS = ["vq", "simvq"] + CONTROLS
MECHANISM_CODEBOOK_SIZES = [2 ** 6, 2 ** 10]
MECHANISM_SEEDS = [0, 1, 2]

# ---------------------------------------------------------------------------------------------- paper
#: The paper preset's budget: a GPU machine or cluster (see Zhu et al. 2024, arXiv 2411.02038, Sec. 5 for
#: their scale; this is smaller images, the same sweep shape). Its largest codebook (2^18) needs 2.6
#: million test tokens to be read uncapped: 10,240 test images at 64 px (16x16 tokens each), which the
#: offline photos cannot give, so it names an ImageNet-style folder: pass --data-dir (the folder loader
#: holds out about 10% of the images by path hash, so about 100,000 images). `--dry-run` prints the test
#: tokens and the uniform ceiling per codebook size.
PAPER_BUDGET: dict[str, object] = {
    "dataset": "folder",
    "image_size": 64,
    "width": 128,
    "num_res_blocks": 2,
    "num_downsamples": 2,      # 64 px -> 16x16 = 256 tokens per image
    "steps": 20_000,
    "batch_size": 128,
    "lr": 1e-4,
    "warmup_steps": 0,
    "optimizer": "adam-paper",  # the paper's Adam, betas (0.5, 0.9), constant lr 1e-4
    "eval_samples": None,
    "eval_checkpoints": 5,
    "fid_samples": 10_000,     # >= 2048: rFID comparable across sweeps at this count
    "log_every": 50,
    "probe_every": 200,
    "dead_code_window": 1_000,
    "device": "auto",
}
PAPER_CODEBOOK_SIZES = [2 ** 10, 2 ** 12, 2 ** 14, 2 ** 16, 2 ** 18]
PAPER_LATENT_DIMS = [8, 16, 32, 64, 128]   # FSQ, LFQ and BSQ take their own dims (sweeps.grid)
PAPER_SEEDS = [0, 1, 2]


# ---------------------------------------------------------------------------------------------- audio
#: The paper's methods that apply to audio: VQGAN-LC's codebook is k-means of InceptionV3 image features,
#: so it has no audio counterpart here (the paper's audio table has no LC row either).
AUDIO_TABLE = ["vq", "ema", "fc", "fsq", "lfq", "simvq"]
#: The audio quick preset: the speech corpus synthesized offline by espeak-ng (benchmark.data.speech; 906
#: held-out test clips of 1 s, 4 voices never trained on = 45,300 test tokens at 50 tokens/s), the 1-D
#: codec (hop 320 = 50 tokens/s at 16 kHz), <= 10 min on 2 CPU cores (measured: README).
AUDIO_QUICK_BUDGET: dict[str, object] = {
    "dataset": "speech",
    "sample_rate": 16_000,
    "clip_samples": 16_000,    # 1 s clips: 50 tokens each
    "width": 32,               # channels at the token rate (4, 8, 16, 32 at 4 kHz ... 50 Hz)
    "num_res_blocks": 1,
    "steps": 400,
    "batch_size": 16,          # 800 tokens per step
    "lr": 2e-3,
    "warmup_steps": 20,
    "eval_samples": 400,       # 20,000 test tokens, stratified over the 4 test voices: 19.5 per code at 2^10
    "eval_checkpoints": 4,     # 50, 100, 200, 400 steps
    "fid_samples": 0,          # rFID reads images
    "log_every": 20,
    "probe_every": 25,
    "dead_code_window": 50,    # <= steps / 8
    "device": "auto",
}
AUDIO_QUICK_CODEBOOK_SIZES = [2 ** 8, 2 ** 10]
#: The paper's audio set-up (Sec. 5.2: LibriTTS at 24 kHz in the paper; 16 kHz here, WavTokenizer's 40-75
#: tokens/s range): a folder of LibriTTS (train-clean-100 / test-clean) as ``audio-folder``. Needs --data-dir.
AUDIO_PAPER_BUDGET: dict[str, object] = {
    **AUDIO_QUICK_BUDGET,
    "dataset": "audio-folder",
    "width": 128,
    "num_res_blocks": 2,
    "steps": 20_000,
    "batch_size": 32,
    "lr": 1e-4,
    "warmup_steps": 0,
    "optimizer": "adam-paper",
    "eval_samples": None,
    "eval_checkpoints": 5,
    "log_every": 50,
    "probe_every": 200,
    "dead_code_window": 1_000,
}
AUDIO_PAPER_CODEBOOK_SIZES = [2 ** 10, 2 ** 12, 2 ** 14, 2 ** 16]


def quick() -> SweepGrid:
    return SweepGrid(list(PAPER_TABLE), list(QUICK_CODEBOOK_SIZES), list(QUICK_LATENT_DIMS), list(QUICK_SEEDS),
                     base=base_config(QUICK_BUDGET),
                     seeds_per_quantizer={k: list(v) for k, v in QUICK_SEEDS_PER_QUANTIZER.items()})


def full() -> SweepGrid:
    """The quick preset's sizes and budget with every registered method and control (about 3x longer)."""
    return SweepGrid(list(ALL_QUANTIZERS), list(QUICK_CODEBOOK_SIZES), list(QUICK_LATENT_DIMS), list(QUICK_SEEDS),
                     base=base_config(QUICK_BUDGET),
                     seeds_per_quantizer={k: list(v) for k, v in QUICK_SEEDS_PER_QUANTIZER.items()})


def mechanism() -> SweepGrid:
    return SweepGrid(list(MECHANISM_QUANTIZERS), list(MECHANISM_CODEBOOK_SIZES), list(QUICK_LATENT_DIMS),
                     list(MECHANISM_SEEDS), base=base_config(MECHANISM_BUDGET))


def paper() -> SweepGrid:
    return SweepGrid(list(ALL_QUANTIZERS), list(PAPER_CODEBOOK_SIZES), list(PAPER_LATENT_DIMS),
                     list(PAPER_SEEDS), base=base_config(PAPER_BUDGET))


def audio_quick() -> SweepGrid:
    return SweepGrid(list(AUDIO_TABLE), list(AUDIO_QUICK_CODEBOOK_SIZES), list(QUICK_LATENT_DIMS), list(QUICK_SEEDS),
                     base=base_config(AUDIO_QUICK_BUDGET),
                     seeds_per_quantizer={k: list(v) for k, v in QUICK_SEEDS_PER_QUANTIZER.items()})


def audio_paper() -> SweepGrid:
    """Refused without --data-dir (the audio-folder source needs one): LibriTTS's layout is read as is."""
    return SweepGrid(list(AUDIO_TABLE) + list(FIXES[:2]), list(AUDIO_PAPER_CODEBOOK_SIZES), [8, 32], list(PAPER_SEEDS),
                     base=base_config(AUDIO_PAPER_BUDGET))


PRESETS = {"quick": quick, "full": full, "mechanism": mechanism, "paper": paper, "audio-quick": audio_quick,
           "audio-paper": audio_paper}
#: Presets that are not one sweep but a staged experiment (sweeps.decide); ``vqbench sweep`` dispatches them.
STAGED_PRESETS = ("decide",)


def get_preset(name: str) -> SweepGrid:
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}; got {name!r}")
    return PRESETS[name]()
