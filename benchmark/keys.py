"""MLflow names shared by the trainer (writes), the sweeps (write), the UI tests and analysis (read).

Prefixes group the MLflow UI's charts: ``train/`` curves over steps, ``probe/`` collapse-theory probes
over steps, ``eval/`` final test-set metrics, ``cost/`` the realised budget.
"""

# ---- curves, logged with step = optimizer step
TRAIN_LOSS = "train/loss"                      # total = reconstruction + quantizer loss
TRAIN_RECON_LOSS = "train/recon_loss"          # MSE in pixel space
TRAIN_QUANT_LOSS = "train/quant_loss"          # QuantizerOutput.loss; each named term as train/<term>
TRAIN_LR = "train/lr"
TRAIN_UTILIZATION = "train/utilization"        # fraction of K used in the sliding window of steps
TRAIN_PERPLEXITY = "train/perplexity"          # exp(entropy) of code use in the sliding window
TRAIN_DEAD_CODES = "train/dead_code_fraction"  # fraction of K unused in the last `dead_code_window` steps
PROBE_GRADIENT_COVERAGE = "probe/gradient_coverage"     # fraction of effective codes a step moves
PROBE_CODEBOOK_RANK = "probe/codebook_effective_rank"   # exp(entropy of normalised singular values)
PROBE_LATENT_RANK = "probe/latent_effective_rank"       # same, of the encoder outputs z

# ---- final metrics, logged once at the end (step = last step)
EVAL_UTILIZATION = "eval/utilization"
EVAL_PERPLEXITY = "eval/perplexity"
EVAL_MSE = "eval/mse"
EVAL_PSNR = "eval/psnr"
EVAL_SSIM = "eval/ssim"
EVAL_RFID = "eval/rfid"
EVAL_RKID = "eval/rkid"
COST_WALL_TIME = "cost/wall_time_s"
COST_SAMPLES_SEEN = "cost/samples_seen"
COST_SAMPLES_PER_S = "cost/samples_per_s"

CURVES = [TRAIN_LOSS, TRAIN_RECON_LOSS, TRAIN_QUANT_LOSS, TRAIN_LR, TRAIN_UTILIZATION,
          TRAIN_PERPLEXITY, TRAIN_DEAD_CODES, PROBE_GRADIENT_COVERAGE, PROBE_CODEBOOK_RANK,
          PROBE_LATENT_RANK]
FINAL = [EVAL_UTILIZATION, EVAL_PERPLEXITY, EVAL_MSE, EVAL_PSNR, EVAL_SSIM, EVAL_RFID, EVAL_RKID,
         COST_WALL_TIME, COST_SAMPLES_SEEN, COST_SAMPLES_PER_S]

# ---- tags on every trial run (plain names, so the UI's search box can filter: tags.quantizer = 'simvq')
TAG_QUANTIZER = "quantizer"
TAG_CODEBOOK_SIZE = "codebook_size"
TAG_LATENT_DIM = "latent_dim"
TAG_SEED = "seed"
TAG_DATASET = "dataset"
TAG_DEVICE = "device"
TAG_PRESET = "preset"          # set by sweeps
TAG_SWEEP = "sweep"            # the sweep's name, set by sweeps
TAG_TRIAL_KEY = "trial_key"    # stable hash of the trial's config; sweeps use it to resume without duplicates
TAG_GIT_COMMIT = "git_commit"
TAG_KIND = "vqbench.kind"      # "trial" or "sweep"
TAG_VERSION_PREFIX = "version."  # version.torch, version.mlflow, version.ray, version.vqbench

# ---- params: every TrainConfig field under its own name (TrainConfig.as_params()); quantizer options
# as "quantizer_options.<name>". The codebook size the quantizer really has (FSQ rounds to a level
# product) is the param "codebook_size"; the size asked for is "codebook_size_requested".
PARAM_CODEBOOK_SIZE_REQUESTED = "codebook_size_requested"
