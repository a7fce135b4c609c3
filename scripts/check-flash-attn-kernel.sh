#!/usr/bin/env bash
# Compile one of flash-attn's kernel files and its API file exactly as
# candle-flash-attn's build script has cudaforge compile them, with the
# CUTLASS in CUTLASS_DIR: whether that CUTLASS and this toolkit build the
# kernels, in minutes rather than a whole `make wheel-cuda`, and how long one
# file takes (the build compiles 37).
#
#   scripts/check-flash-attn-kernel.sh [KERNEL]   (default flash_fwd_hdim64_fp16_sm80)
#
# Needs nvcc on PATH, CUTLASS_DIR and CUDA_COMPUTE_CAP set and patched/
# prepared: `make check-flash-attn` does all that. Run from the repository root.
set -euo pipefail
kernel=${1:-flash_fwd_hdim64_fp16_sm80}
crate=patched/candle-flash-attn-0.10.2
cap=${CUDA_COMPUTE_CAP:?set CUDA_COMPUTE_CAP, e.g. 90}
cutlass=${CUTLASS_DIR:?set CUTLASS_DIR to a CUTLASS source tree}

# cudaforge's architecture for a plain compute capability (compute_cap.rs,
# auto_suffix): 'a' from 90 up to 120, 'f' above 120.
if [ "$cap" -gt 120 ]; then arch=${cap}f
elif [ "$cap" -ge 90 ]; then arch=${cap}a
else arch=$cap
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
nvcc --version | tail -1
echo "CUTLASS $(sed -n 's/^#define CUTLASS_\(MAJOR\|MINOR\|PATCH\) *\([0-9]*\).*/\2/p' "$cutlass/include/cutlass/version.h" | paste -sd.) from $cutlass"

# In cudaforge's order: its own flags, build.rs's, the CUTLASS include
# directories, its -fPIC, and --threads=2 for flash_api (its nvcc-thread pattern).
for source in "kernels/$kernel.cu" kernels/flash_api.cu; do
  threads=()
  [[ $source == *flash_api* ]] && threads=(--threads=2)
  start=$SECONDS
  (cd "$crate" && nvcc "-gencode=arch=compute_$arch,code=sm_$arch" -c -o "$out/$(basename "$source" .cu).o" \
    --default-stream per-thread \
    -std=c++17 -O3 -U__CUDA_NO_HALF_OPERATORS__ -U__CUDA_NO_HALF_CONVERSIONS__ \
    -U__CUDA_NO_HALF2_OPERATORS__ -U__CUDA_NO_BFLOAT16_CONVERSIONS__ \
    --expt-relaxed-constexpr --expt-extended-lambda --use_fast_math --verbose -DFLASHATTENTION_DISABLE_DROPOUT -Xcompiler -fPIC \
    "-I$cutlass/include" "-I$cutlass/tools/util/include" \
    -Xcompiler -fPIC "${threads[@]}" "$source")
  echo "$source: compiled in $((SECONDS - start)) s for sm_$arch"
done
