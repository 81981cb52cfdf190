#!/usr/bin/env bash
# lt_kit's GPU benchmarks in one script. Copy CIFAR-10 (torchvision's cifar-10-batches-py/) to a folder DIR on
# the GPU machine, then, from the repository root:
#
#   CIFAR=DIR bash bench/gpu/run.sh check speed        # ~1 min + ~6 min on one H100-class GPU
#   CIFAR=DIR bash bench/gpu/run.sh campaign           # the 200-epoch campaign, several rows at once
#   CIFAR=DIR bash bench/gpu/run.sh notebooks          # the papermill line on the GPU, then the two analysis notebooks
#
# Stages:
#   check      the captured fast step equals the same function run eagerly, bit for bit (fp32 contiguous, then
#              channels_last + bf16)
#   speed      bench/speed.py: the three input paths, the hardware options, and solo 200-epoch runs of the eager,
#              fast, fast + bf16 and bound paths (seconds_200_epochs, measured)
#   fastacc    the fast path's own 200-epoch TDE at ratio 100 (seed 0)
#   campaign   bench/campaign.py run --device cuda --jobs $JOBS: the manifest's unfinished rows, recorded under
#              $OUT/campaign_e200 beside a copy of the rows already recorded
#   notebooks  `papermill notebooks/train.ipynb ... -p dataset cifar10_lt` on the fast path, then the explorer and
#              the direction notebook on its run dir
# Results go to $OUT (default bench/out/gpu): JSON, markdown and logs, with machine.txt naming the GPU.
set -uo pipefail
: "${CIFAR:?set CIFAR to the folder holding cifar-10-batches-py}"
OUT=${OUT:-bench/out/gpu}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-200}
JOBS=${JOBS:-3}
RUNS=${RUNS:-bench/out/gpu_runs}
mkdir -p "$OUT"
T0=$(date +%s)
export PYTHONUNBUFFERED=1
elapsed() { echo $(( $(date +%s) - T0 )); }

check() {      # cuBLAS is bit-reproducible across streams only with a fixed workspace
  CUBLAS_WORKSPACE_CONFIG=:4096:8 $PY bench/fast_paths.py --check --device "$DEVICE" --data-root "$CIFAR" \
    --epochs 2 | tee "$OUT/check.json"
  CUBLAS_WORKSPACE_CONFIG=:4096:8 $PY bench/fast_paths.py --check --device "$DEVICE" --data-root "$CIFAR" \
    --epochs 1 --channels-last --bf16 | tee "$OUT/check_cl_bf16.json"
}

speed() {
  $PY bench/speed.py --data-root "$CIFAR" --device "$DEVICE" --rounds 3 --workers 12 \
    --options channels_last,bf16,bf16_channels_last --full-epochs "$EPOCHS" --out "$OUT/speed" 2>&1 \
    | tee "$OUT/speed.log" | tail -40
}

fastacc() {
  $PY bench/accuracy.py --data-root "$CIFAR" --epochs "$EPOCHS" --device "$DEVICE" --runs "$RUNS" \
    --out "$OUT/fast_r100" --ratios 100 --seeds 0 --heads causal_norm --set fast_step=true 2>&1 | tail -20
}

campaign() {   # records into $OUT as each row finishes (a timed-out call keeps them), after the rows already
  # recorded in the tree, which it skips; copy $OUT/campaign_e200 back over bench/results/campaign_e200
  mkdir -p "$OUT/campaign_e200" && cp -rn bench/results/campaign_e200/. "$OUT/campaign_e200/"
  $PY bench/campaign.py run --data-root "$CIFAR" --device "$DEVICE" --jobs "$JOBS" \
    --results "$OUT/campaign_e200" 2>&1 | tee "$OUT/campaign.log"
}

notebooks() {
  local run=$RUNS/notebook_cifar10_lt t
  t=$(date +%s)
  $PY -m papermill notebooks/train.ipynb "$OUT/train_out.ipynb" -p dataset cifar10_lt -p data_root "$CIFAR" \
    -p fast_step True -p device "$DEVICE" -p run_dir "$run" -p overwrite True || return 1
  echo "papermill train: $(( $(date +%s) - t )) s wall" | tee "$OUT/notebooks.txt"
  $PY -m papermill notebooks/tde_explorer.ipynb "$OUT/explorer_out.ipynb" -p run_dir "$run" \
    && $PY -m papermill notebooks/momentum_direction.ipynb "$OUT/direction_out.ipynb" -p run_dir "$run"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
  nproc; $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(check speed)
for stage in "${stages[@]}"; do
  case "$stage" in check|speed|fastacc|campaign|notebooks) ;; *) echo "unknown stage $stage"; exit 2 ;; esac
  echo "== $stage at $(elapsed) s"
  $stage || echo "== $stage FAILED (rc $?) at $(elapsed) s" | tee -a "$OUT/failed.txt"
done
echo "all done at $(elapsed) s"
