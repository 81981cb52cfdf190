#!/usr/bin/env bash
# The one command a lent GPU machine runs (prepared here, sized to its lease): unpack the carried CIFAR-10-LT
# pack, train the CIFAR-10-LT table at the full 200-epoch schedule with several runs sharing the GPU, sweep
# alpha over the finished runs, and leave results in $OUT (at most 8 files come back).
#
#   here:   python bench/gpu_pack.py --cifar $CIFAR        # -> gpu_pack/ (ignored, ~44 MiB)
#   device: bash bench/gpu_run.sh      (carry gpu_pack; env: DEADLINE, EPOCHS, JOBS, SPEED_IF_BEFORE)
source "$(dirname "$0")/gpu_common.sh"
JOBS=${JOBS:-100:causal_norm:0 100:causal_norm:1 50:causal_norm:0 10:causal_norm:0 50:causal_norm:1 10:causal_norm:1 100:linear:0 50:linear:0 10:linear:0}
gpu_setup
# shellcheck disable=SC2086
$PY bench/accuracy_parallel.py --data-root "$DATA" --epochs "${EPOCHS:-200}" --deadline "${DEADLINE:-500}" \
    --kept "$DATA/kept_train_indices.npy" --runs "$RUNS" --out "$OUT/accuracy_gpu" --set channels_last=true \
    --job-rate-cap "${JOB_RATE_CAP:-55}" \
    --jobs $JOBS 2>&1 | tee "$OUT/driver.log"
echo "table done at $(elapsed) s"
for d in "$RUNS"/*causal_norm*; do
  [ -f "$d/features.pt" ] && [ -f "$d/metrics.json" ] && $PY bench/alpha_sweep.py "$d"
done > "$OUT/accuracy_gpu_sweep.md" 2>&1
tar czf "$OUT/runs.tgz" --exclude='*.pt' -C "$(dirname "$RUNS")" "$(basename "$RUNS")"
if [ "$(elapsed)" -lt "${SPEED_IF_BEFORE:-470}" ]; then
  timeout $(( ${SPEED_IF_BEFORE:-470} + 90 - $(elapsed) )) \
    $PY bench/speed.py --data-root "$DATA" --device cuda --rounds 3 --workers 12 --out "$OUT/speed" 2>&1 | tail -30
fi
echo "all done at $(elapsed) s"
