#!/usr/bin/env bash
# Issue 11's device calls, prepared and dry-run on the CPU (DEVICE=cpu), sized to a 15-minute lease: each stage
# is one `run` call under 10 minutes; the first call is the equality check (under a minute) and the speed
# figures, so a short lease still gives them.
#
#   here:    python bench/gpu_pack.py --shared ../shared/data --cifar $CIFAR    # -> gpu_pack/ (ignored, ~44 MiB)
#            bash bench/gpu_wheels.sh                                           # -> .whl/ papermill for the notebooks
#   device:  bash bench/gpu_fast.sh check speed      (carry gpu_pack)          # ~1 + ~6 min
#            bash bench/gpu_fast.sh table             (carry gpu_pack)          # ~6 x 30-60 s on the fast path
#            bash bench/gpu_fast.sh notebooks         (carry gpu_pack .whl)     # the user's papermill line
#
# Stages: check (captured step == eager, bit for bit), speed (bench/speed.py with solo 200-epoch runs of the
# eager, fast, fast-bf16 and bound paths: seconds_200_epochs), fastacc (the fast path's 200-epoch TDE at ratio
# 100, seed 0, against the fp32 runs' 80.8 / 79.9), table (what Table 3 still lacks), notebooks.
source "$(dirname "$0")/gpu_common.sh"
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-200}
FAST="--set fast_step=true --set channels_last=true"

setup() {
  if [ -d .whl ] && [ "${WHEELS:-1}" = 1 ]; then          # WHEELS=0: a dry run here, with the venv's papermill
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  gpu_setup
}

check() {      # the captured step against the same function eager (bit for bit), fp32 contiguous, then the
               # default layout with bf16 (cuBLAS is bit-reproducible across streams only with a fixed workspace)
  CUBLAS_WORKSPACE_CONFIG=:4096:8 $PY bench/fast_paths.py --check --device "$DEVICE" --data-root "$DATA" \
    --epochs "${CHECK_EPOCHS:-2}" | tee "$OUT/check.json"
  CUBLAS_WORKSPACE_CONFIG=:4096:8 $PY bench/fast_paths.py --check --device "$DEVICE" --data-root "$DATA" \
    --epochs 1 --channels-last --bf16 | tee "$OUT/check_cl_bf16.json"
}

speed() {      # rounds (reference input path, lt_kit, bound; channels_last and bf16) + solo whole runs
  $PY bench/speed.py --data-root "$DATA" --device "$DEVICE" --rounds 3 --workers 12 --options channels_last,bf16 \
    --full-epochs "$EPOCHS" --out "$OUT/speed" 2>&1 | tee "$OUT/speed.log" | tail -40
}

acc() {        # one bench/accuracy.py call per group of runs, on the fast path, into $RUNS
  local out=$1; shift
  $PY bench/accuracy.py --data-root "$DATA" --epochs "$EPOCHS" --device "$DEVICE" --runs "$RUNS" \
    --out "$OUT/$out" $FAST "$@" 2>&1 | tee -a "$OUT/table.log" | grep -v '^|' | tail -5
}

fastacc() {    # the fast path keeps the method: TDE at ratio 100 against the fp32 runs (80.8 / 79.9)
  acc fast_r100 --ratios 100 --seeds 0 --heads causal_norm
}

table() {      # what issue 5 left: ratio 10 (seeds 0, 1), ratio 50 seed 1, the softmax baseline at 100 / 50 / 10
  acc table_r10 --ratios 10 --seeds 0 1 --heads causal_norm
  acc table_r50 --ratios 50 --seeds 1 --heads causal_norm
  acc table_softmax --ratios 100 50 10 --seeds 0 --heads linear
  $PY -m lt_kit compare "$RUNS/*" --markdown "$OUT/compare.md" | tail -30
}

notebooks() {  # the user's line on the GPU, then the explorer and direction notebooks on its run dir
  local run=/tmp/nb_run t
  t=$(date +%s)
  $PY -m papermill notebooks/train.ipynb "$OUT/train_out.ipynb" -p dataset cifar10_lt -p data_root "$DATA" \
    -p fast_step True -p channels_last True -p device "$DEVICE" -p run_dir "$run" -p overwrite True \
    ${NB_EPOCHS:+-p epochs $NB_EPOCHS} || return 1
  echo "papermill train: $(( $(date +%s) - t )) s wall" | tee "$OUT/notebooks.txt"
  $PY -m papermill notebooks/tde_explorer.ipynb "$OUT/explorer_out.ipynb" -p run_dir "$run" \
    && $PY -m papermill notebooks/momentum_direction.ipynb "$OUT/direction_out.ipynb" -p run_dir "$run"
  cp "$run/metrics.json" "$OUT/nb_metrics.json"
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(check speed)
setup
for stage in "${stages[@]}"; do
  echo "== $stage at $(elapsed) s"
  $stage || echo "== $stage FAILED (rc $?) at $(elapsed) s" | tee -a "$OUT/failed.txt"
done
echo "all done at $(elapsed) s"
