#!/usr/bin/env bash
# Run on the GPU machine from the repository root (Python with torch and
# transformers, CUDA driver, no cargo, no network):
#
#   bash benches/gpu/run.sh [OUT_DIR]
#
# Installs the carried wheel into the Python that has torch (whose nvidia-*
# CUDA 13 packages the wheel finds next to itself), builds a Mistral-7B-shaped
# random model, runs the CUDA tests, then the benchmark. Results: OUT_DIR
# (default benches/results), named after the GPU.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../results}
mkdir -p "$out"
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$python" -m pip install --quiet --no-deps --no-index --force-reinstall "$here"/carry/mistralvllm-*.whl
"$python" -c "import mistralvllm; print('mistralvllm', mistralvllm.BUILD_FEATURES, mistralvllm.MISTRALRS_VERSION)"
model=${MODEL_DIR:-/tmp/mistral-7b-shaped-random}
[ -f "$model/config.json" ] || "$python" "$here/make_model.py" "$model" --tokenizer "$here/carry/tokenizer"
"$python" "$here/test_cuda.py" "$model" --out "$out"
"$python" "$here/bench_cuda.py" "$model" --out "$out"
