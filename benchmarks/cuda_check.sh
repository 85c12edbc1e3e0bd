#!/usr/bin/env bash
# The GPU checks of issue 15 in one short run (≈ 5 minutes on one H200), for a session that is
# lent a machine with CUDA, torch and triton (no install: the source runs from src/):
#
#     bash benchmarks/cuda_check.sh [OUT_DIR]        # OUT_DIR defaults to $OUT, else cuda-check/
#
# 1. the device, torch, triton and the numeric path;
# 2. the tests that run on CUDA: the kernels (tests/test_kernels.py, every product on "cuda"
#    too), the Triton row kernel against its dense float64 reference (tests/test_triton_rows.py),
#    and full RTRL = BPTT, the deterministic rules = their CPU numbers, and the fused torch
#    engine = the learner, all on the device (tests/test_cuda.py);
# 3. the CUDA table (benchmarks/cuda_rows.py): Triton vs pure torch vs a rw pass, and the
#    learner's step at E = 1 and 16.
# Everything goes to OUT_DIR (device.txt, tests.log, cuda_rows.md); commit cuda_rows.md as
# benchmarks/cuda_rows.md and the figures in docs/performance.md.
set -o pipefail
out=${1:-${OUT:-cuda-check}}
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 2
export PYTHONPATH="$here/src:$here/tests${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

$python - <<'EOF' 2>&1 | tee "$out/device.txt" || exit 2
import torch
assert torch.cuda.is_available(), "no CUDA device: run this on a GPU machine"
from sparse_rtrl.transport import kernels, triton_rows
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__,
      "| triton importable:", triton_rows.importable(), "| numeric path:", kernels.numeric_path("cuda"))
EOF

timeout 360 $python -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_triton_rows.py \
    tests/test_cuda.py 2>&1 | tee "$out/tests.log"
tests=$?

timeout 200 $python benchmarks/cuda_rows.py --write "$out/cuda_rows.md" 2>&1 | tee "$out/bench.log"
bench=$?
echo "tests exit $tests, benchmark exit $bench" | tee -a "$out/device.txt"
exit $(( tests || bench ))
