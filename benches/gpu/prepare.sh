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
# The device tool carries 64 MiB in all: a wheel over it would be cut off there.
limit=$((64 * 1024 * 1024))
for wheel in "$repo"/dist/cuda/mistralvllm-*.whl; do
  size=$(stat -c %s "$wheel")
  if [ "$size" -gt $((limit - 2 * 1024 * 1024)) ]; then
    echo "$wheel: $((size / 1024 / 1024)) MiB, more than can be carried (64 MiB with the tokenizer);" \
      "build it without flash-attn: CUDA_FEATURES=cuda,cudnn make wheel-cuda" >&2
    exit 1
  fi
done
cp "$repo"/dist/cuda/mistralvllm-*.whl "$here/carry/"
cp "$tokenizer_dir"/tokenizer.json "$tokenizer_dir"/tokenizer_config.json "$here/carry/tokenizer/"
du -sh "$here/carry"
