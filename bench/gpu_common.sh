# Sourced by bench/gpu_run.sh and bench/gpu_fast.sh: the shared preamble of a device call. Sets OUT, T0, PY,
# DATA, RUNS and elapsed(); gpu_setup writes $OUT/machine.txt and unpacks the carried CIFAR pack into $DATA
# (once per machine: a warm machine keeps it).
set -uo pipefail
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
T0=$(date +%s)
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
DATA=${DATA:-/tmp/cifar}
RUNS=${RUNS:-/tmp/runs}
elapsed() { echo $(( $(date +%s) - T0 )); }

gpu_setup() {
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
    nproc; $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  } 2>&1 | tee "$OUT/machine.txt"
  if [ ! -d "$DATA/cifar-10-batches-py" ]; then
    $PY bench/gpu_unpack.py --pack gpu_pack --out "$DATA" --workers "$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))" || exit 1
  fi
  echo "unpacked at $(elapsed) s"
}
