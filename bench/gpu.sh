#!/usr/bin/env bash
# The CUDA path in one run (under 5 minutes on one GPU): checks that ONNX Runtime has the CUDA
# provider, then measures images/s of both bundled models at batch 1, 16 and 64, in process and
# through a real `dupify worker serve`, both with DUPIFY_INFERENCE__DEVICE=cuda
# (bench/bench_gpu.py). The table goes to stdout and to bench/gpu-results.md (or $OUT/ when set),
# for docs/performance.md.
#
# Prepare the GPU machine first (docs/deployment.md, "The GPU worker"):
#   make install-test
#   .venv/bin/pip uninstall -y onnxruntime onnxruntime-gpu
#   .venv/bin/pip install --no-deps -c constraints.txt onnxruntime-gpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
RESULTS=${OUT:-bench}/gpu-results.md

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import onnxruntime as o, sys; sys.exit('no CUDAExecutionProvider: install onnxruntime-gpu in place of onnxruntime' if 'CUDAExecutionProvider' not in o.get_available_providers() else 0)"
fi
export DUPIFY_INFERENCE__DEVICE="$DEVICE"
timeout 290 "$PY" bench/bench_gpu.py --device "$DEVICE" --seconds "${SECONDS_EACH:-4}" --markdown "$RESULTS"
echo "written: $RESULTS"
