#!/usr/bin/env bash
# The float32 checks and speed benchmarks of issue 10, in one command, on whatever accelerator JAX
# finds (written for a single NVIDIA GPU; runs unchanged on CPU, only slower):
#   1. the float32 accuracy tests, slow grid included: E-step within 1e-5 of float64 on digits
#      (K = 4, 12, 32, offset by 1e4, scaled by 1e-4 and 1e4), monotone EM under debug=True,
#      the error bound that picks the fast form, and Fashion-MNIST (raw pixels diag, PCA-50 full)
#      where FASHION_MNIST_DIR or the dataset-fashion-mnist package provides the files;
#   2. benchmarks/bench_em.py: gmm_jax on the accelerator, numpy and scikit-learn on the host's
#      cores, the float32 matmul peak at Precision.HIGHEST (no TF32) on the accelerator;
#   3. benchmarks/bench_restarts.py: 16 restarts at N=20k, D=8, K=8 and 8 at N=100k, D=32, K=32;
#   4. benchmarks/gpu_auto_probe.py: whether e_step's lax.cond applies the error bound's choice
#      on this device (it did not on an H100 with jax 0.11.2; see estep.AUTO_FAST_BACKENDS).
#
# Usage: bash benchmarks/gpu_checks.sh [OUTDIR [STEP...]]
#   OUTDIR: logs and result files (default benchmarks/results/gpu); STEP: any of probe,
#   accuracy, bench_em, restarts (default all four). On one H100: bench_em about 3 minutes,
#   restarts 1; the accuracy tests' two halves took 185 s and over 200 s with 8-12 workers.
#   PYTHON picks the interpreter (default python3), WORKERS the number of pytest workers
#   (default 8).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
shift || true
steps=" ${*:-probe accuracy bench_em restarts} "
mkdir -p "$out"
PY=${PYTHON:-python3}
# several test workers share one GPU: allocate on demand instead of 75% of memory each
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
status=0

step() {
    local name=$1
    shift
    local t0
    t0=$(date +%s)
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $(($(date +%s) - t0)) s"
    [ "$rc" -eq 0 ] || status=1
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
        --format=csv 2>/dev/null || echo "nvidia-smi: not available"
    nproc
    "$PY" -c "import jax, jaxlib, numpy, sklearn; print('jax', jax.__version__, 'jaxlib',
jaxlib.__version__, 'numpy', numpy.__version__, 'sklearn', sklearn.__version__);
print('backend', jax.default_backend(), jax.devices())"
} 2>&1 | tee "$out/machine.log"

if [[ $steps == *" probe "* ]]; then
    step auto_probe timeout 600 "$PY" -m benchmarks.gpu_auto_probe
fi
if [[ $steps == *" accuracy "* ]]; then
    step accuracy_tests timeout 900 "$PY" -m pytest -o addopts="-ra" -q -n "${WORKERS:-8}" --runslow \
        tests/gmm_jax/test_estep.py tests/gmm_jax/test_em.py \
        -k "float32 or error_bound or monotone"
fi
if [[ $steps == *" bench_em "* ]]; then
    step bench_em timeout 280 "$PY" -m benchmarks.bench_em --contenders gmm_jax,numpy,sklearn \
        --repeats 5 --peak-size 8192 --no-plot --out "$out"
fi
if [[ $steps == *" restarts "* ]]; then
    step bench_restarts_20k timeout 300 "$PY" -m benchmarks.bench_restarts --iters 50 \
        --n-init 1,16 --no-sklearn --repeats 3 --no-plot --out "$out"
    step bench_restarts_100k timeout 300 "$PY" -m benchmarks.bench_restarts --n 100000 \
        --d 32 --k 32 --iters 20 --n-init 1,8 --no-loop --no-sklearn --repeats 3 --no-plot \
        --out "$out"
fi
exit $status
