#!/usr/bin/env bash
# The checks to run on the day a GPU machine is lent (never in CI), ~10 minutes in all:
#
#     benchmarks/gpu.sh
#
# 1. benchmarks/roofline.py --quick on the GPU: the graph steps, JMF steps and full ranking against the card's
#    own matmul rate and bandwidth (results/roofline_gpu.*; its JSON records the card's device_kind);
# 2. one DisenCDR run (10 epochs, one validation) and one CDRIB run (5 epochs, one validation) through the
#    cold-start benchmark, for their wall time and a sanity check of the metrics (results/roofline_gpu_<model>.*,
#    on the roofline page: short runs, not the cold-start tables).
# Assumes README's set-up (pip install -e ".[dev]") plus a CUDA jax (pip install -U "jax[cuda12]"); installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export JMF_DATA_DIR="${JMF_DATA_DIR:-$(cd .. && pwd)/shared/data}"

backend="$("$PY" -c 'import jax; print(jax.default_backend())')"
if [[ "$backend" != "gpu" ]]; then
    echo "gpu.sh: jax's backend is '$backend', not gpu: install a CUDA jax first (pip install -U \"jax[cuda12]\")" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c 'import jax; print("jax", jax.__version__, [d.device_kind for d in jax.devices()])'

timeout 270 "$PY" benchmarks/roofline.py --quick --name roofline_gpu
timeout 150 "$PY" benchmarks/cold_start.py --tasks amazon-phone --models disencdr --seeds 0 \
    --name roofline_gpu_disencdr --out /tmp/jmf_gpu_runs --override model.epochs=10
timeout 150 "$PY" benchmarks/cold_start.py --tasks cdrib-sport --models cdrib --seeds 0 \
    --name roofline_gpu_cdrib --out /tmp/jmf_gpu_runs --override model.epochs=5
