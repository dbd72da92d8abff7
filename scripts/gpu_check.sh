#!/usr/bin/env bash
# Check the GPU-cluster recipe (docs/scale_out.md) on one machine with an NVIDIA GPU, step by step as a
# user runs it: a tracking server, a Ray head that detects the GPUs, a sweep joining it with GPU shares,
# then every trial's run read back from the server: FINISHED, on CUDA, with its artifacts.
#
#   bash scripts/gpu_check.sh          # needs a GPU; about 2 minutes
#   bash scripts/gpu_check.sh --cpu    # the same steps without a GPU (checks this script itself)
#
# Everything runs in a temporary folder and is stopped by process group when the script exits (never
# `ray stop`, which would stop other Rays on the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=$REPO/.venv/bin/python
VQBENCH=$REPO/.venv/bin/vqbench
RAY=$REPO/.venv/bin/ray
MODE=gpu
[ "${1:-}" = "--cpu" ] && MODE=cpu

if [ "$MODE" = gpu ]; then
    command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: not a GPU machine (--cpu checks the steps)"; exit 2; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available:', ok); sys.exit(0 if ok else 1)" \
        || { echo "gpu_check: torch sees no GPU (a CPU-only torch wheel? install the CUDA build)"; exit 1; }
    DEVICE=cuda; GPUS_PER_TRIAL=0.5; RAY_GPUS=()
    BUDGET=(--codebook-sizes 1024,16384 --latent-dims 32 --steps 300 --batch-size 128 --width 64 --eval-samples 512)
else  # the same steps at a size two CPU cores run in a minute
    DEVICE=cpu; GPUS_PER_TRIAL=0; RAY_GPUS=(--num-gpus=0 --num-cpus=2)
    BUDGET=(--codebook-sizes 16,32 --latent-dims 4 --steps 12 --batch-size 8 --width 8 --image-size 16 --eval-samples 32
            --set num_res_blocks=0 --set warmup_steps=2 --set log_every=4 --set probe_every=4 --set dead_code_window=8
            --no-system-metrics)
fi

WORK=$(mktemp -d /tmp/vqgpu.XXXXXX)   # short: Ray's socket paths must fit 107 bytes
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    sleep 3
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    echo "gpu_check: logs in $WORK"
}
trap cleanup EXIT
free_port() { "$PY" -c "from benchmark.tracking.ui import free_port; print(free_port())"; }
wait_for() {  # wait_for FILE TEXT
    for _ in $(seq 1 240); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.5; done
    echo "gpu_check: '$2' never appeared in $1:"; tail -20 "$1"; exit 1
}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} MLFLOW_TRACKING_URI=
unset RAY_ADDRESS

echo "== 1. tracking server (vqbench server --host 0.0.0.0)"
setsid "$VQBENCH" server --host 0.0.0.0 --port "$(free_port)" --backend-store-uri "sqlite:///$WORK/server/mlflow.db" \
    >"$WORK/server.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/server.log" "export MLFLOW_TRACKING_URI="
URI=$(grep -o "export MLFLOW_TRACKING_URI=[^ ]*" "$WORK/server.log" | head -1 | cut -d= -f2)
echo "   $URI"

echo "== 2. Ray head (ray start --head; it detects the GPUs)"
PORT=$(free_port)
setsid "$RAY" start --head --block --port="$PORT" --include-dashboard=false --disable-usage-stats \
    --temp-dir="$WORK/ray" "${RAY_GPUS[@]}" >"$WORK/ray.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/ray.log" "Ray runtime started"
ADDRESS=$("$PY" -c "from benchmark.tracking.server import machine_address; print(machine_address())"):$PORT
echo "   $ADDRESS"

echo "== 3. sweep on the cluster (--address, --gpus-per-trial $GPUS_PER_TRIAL, --device $DEVICE)"
START=$(date +%s)
(cd "$WORK" && "$VQBENCH" sweep --address "$ADDRESS" --tracking-uri "$URI" --name gpu-check --experiment gpu-check \
    --quantizers vq,simvq --seeds 0 "${BUDGET[@]}" --fid-samples 0 --device "$DEVICE" \
    --gpus-per-trial "$GPUS_PER_TRIAL" --storage-path "$WORK/runs")
echo "   sweep took $(( $(date +%s) - START )) s"

echo "== 4. every trial's run on the server: FINISHED, on $DEVICE, with artifacts"
"$PY" - "$URI" "$DEVICE" <<'EOF'
import sys
from mlflow.tracking import MlflowClient
from benchmark.tracking import keys
uri, device = sys.argv[1], sys.argv[2]
client = MlflowClient(uri)
experiment = client.get_experiment_by_name("gpu-check")
runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get(keys.TAG_KIND) == "trial"]
problems = []
for run in runs:
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    print(f"   {run.info.run_name:28s} {run.info.status:9s} device={run.data.tags.get(keys.TAG_DEVICE)} "
          f"samples/s={run.data.metrics.get(keys.COST_SAMPLES_PER_S, float('nan')):.0f} artifacts={sorted(artifacts)}")
    if run.info.status != "FINISHED" or not run.data.tags.get(keys.TAG_DEVICE, "").startswith(device) \
            or "reconstructions.png" not in artifacts:
        problems.append(run.info.run_name)
if len(runs) != 4 or problems:
    sys.exit(f"gpu_check: FAIL: {len(runs)} trial runs, problems: {problems}")
print("gpu_check: PASS")
EOF
