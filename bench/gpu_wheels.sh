#!/usr/bin/env bash
# Wheels for the notebooks stage of bench/gpu_fast.sh: papermill and a Jupyter kernel for the lent GPU machine's
# Python 3.12 (its image has torch, matplotlib and seaborn but no Jupyter; it reaches no registry). Run here,
# where pip reaches PyPI; writes .whl/ (ignored), minus what the device image already holds
# (../.library/device/KINDS.md's package list), so gpu_pack/ + .whl/ stay under the 64 MiB a call carries.
set -euo pipefail
rm -rf .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl papermill ipykernel ipywidgets
# on the device already (its image's package list)
for p in attrs certifi charset_normalizer click idna packaging psutil pygments python_dateutil pyyaml requests \
         tqdm typing_extensions urllib3 tzdata platformdirs; do
  rm -f .whl/"${p}"-*.whl
done
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
du -sh .whl
