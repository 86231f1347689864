#!/usr/bin/env bash
# The CUDA backend on a GPU machine, with no Node.js needed (see issue 7 / docs/architecture.md):
#   1. builds the native tests with CUDA (CMake; Ninja when present),
#   2. adainfer_cuda_tests: every CUDA kernel against the scalar CPU reference kernels, and the CUDA blocks
#      against the CPU blocks on random-weight models,
#   3. adainfer_cuda_tests --bench: matrix-vector GB/s per weight type, prefill matmul, attention, and a whole
#      llama2-7b-geometry model (layer us, pp512 and tg128 tokens/s),
#   4. check_goldens.py: llama.cpp's goldens (../shared/reference) through the CUDA blocks (and the CPU ones),
#   5. where `node` exists: the addon with CUDA (cmake-js) and the JS golden tests with backend 'cuda'.
# Writes everything to $OUT/gpu_run.log when OUT is set (else build/gpu/gpu_run.log). Fits in 8 minutes on an
# H200. Environment: SHARED (default ../shared beside the checkout), CUDA_ARCHS (default: this GPU's, else 90),
# BUILD_DIR (default /tmp/adainfer-gpu-build).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT_DIR=${OUT:-$ROOT/build/gpu}
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu_run.log") 2>&1
SHARED=${SHARED:-$ROOT/../shared}
BUILD=${BUILD_DIR:-/tmp/adainfer-gpu-build}
status=0
step() { echo; echo "=== $* ($(date -u +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
nvcc --version | tail -2
echo "cpu: $(nproc) cores; shared data: $SHARED"
ARCHS=${CUDA_ARCHS:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')}
ARCHS=${ARCHS:-90}

step "build (CUDA architectures $ARCHS)"
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DADAINFER_NODE_ADDON=OFF -DADAINFER_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" >"$OUT_DIR/cmake.log" 2>&1 || { cat "$OUT_DIR/cmake.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" --target adainfer_cuda_tests adainfer_native_tests 2>&1 | tail -5
[ -x "$BUILD/adainfer_cuda_tests" ] || { echo "build failed"; exit 1; }

step "CPU kernel tests (the reference the CUDA kernels are compared with)"
"$BUILD/adainfer_native_tests" | tail -1 || status=1

step "CUDA kernels and blocks against the CPU reference"
timeout 150 "$BUILD/adainfer_cuda_tests"
rc=$?
[ $rc -eq 0 ] || { echo "adainfer_cuda_tests exit code $rc"; status=1; }

step "goldens (llama.cpp) through the CUDA blocks, and the CPU blocks as a control"
timeout 100 python3 "$ROOT/test/gpu/check_goldens.py" --exe "$BUILD/adainfer_cuda_tests" --shared "$SHARED" || status=1

step "benchmark"
timeout 200 "$BUILD/adainfer_cuda_tests" --bench || status=1

if command -v node >/dev/null && [ -d "$ROOT/node_modules" ]; then
  step "JS goldens with backend 'cuda' (node $(node --version))"
  (cd "$ROOT" && npx cmake-js compile --CDADAINFER_CUDA=ON --CDCMAKE_CUDA_ARCHITECTURES="$ARCHS" -O build/Release >/dev/null &&
    npx tsc -p tsconfig.json && ADAINFER_TEST_BACKEND=cuda npx jest dist/test/model/goldens dist/test/model/quant_goldens) ||
    status=1
else
  step "JS goldens: skipped (no node or node_modules on this machine)"
fi

step "done: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
exit $status
