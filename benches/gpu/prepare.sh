#!/usr/bin/env bash
# Run here (the CPU machine) after `make wheel-cuda`: put what the GPU machine
# needs into benches/gpu/carry/ (ignored by git, carried by the device tool):
# the CUDA wheel and the default model's tokenizer (for the random 7B model).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
tokenizer_dir=${TOKENIZER_DIR:-$HOME/.cache/mistralvllm/models/smollm2-135m-instruct-f32-v1}
rm -rf "$here/carry"
mkdir -p "$here/carry/tokenizer"
cp "$repo"/dist/cuda/mistralvllm-*.whl "$here/carry/"
cp "$tokenizer_dir"/tokenizer.json "$tokenizer_dir"/tokenizer_config.json "$here/carry/tokenizer/"
du -sh "$here/carry"
