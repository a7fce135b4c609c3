#!/usr/bin/env bash
# Assemble a CUDA toolkit directory (CUDA_HOME) from the nvidia-* CUDA 13 PyPI
# packages installed in a build venv, so the CUDA wheel builds on a machine
# with no system CUDA and no GPU.
#
#   scripts/cuda-home.sh VENV DEST
#
# DEST gets bin/ (nvcc, ptxas), nvvm/, include/ and lib/ (+ lib64 -> lib),
# hard-linked from the packages (nvcc finds its own files relative to its real
# path, so symlinks would not do), the unversioned .so names the linker asks
# for, and a stub libcuda.so: the driver library comes from the GPU machine
# at run time, exactly like the toolkit's own lib64/stubs/libcuda.so.
set -euo pipefail
venv=$1
dest=$2
nvidia=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0] + "/"))')

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/lib"
for pkg in "$nvidia"/*/; do
  for part in bin include lib nvvm; do
    if [ -d "$pkg$part" ]; then
      mkdir -p "$dest.tmp/$part"
      cp -alf "$pkg$part/." "$dest.tmp/$part/"
    fi
  done
done
find "$dest.tmp" -name __pycache__ -prune -exec rm -rf {} +
find "$dest.tmp" -name __init__.py -delete

# nvcc.profile looks for cicc under nvvm/bin; some nvcc wheels put it in bin/.
if [ ! -e "$dest.tmp/nvvm/bin/cicc" ] && [ -e "$dest.tmp/bin/cicc" ]; then
  mkdir -p "$dest.tmp/nvvm/bin"
  ln -f "$dest.tmp/bin/cicc" "$dest.tmp/nvvm/bin/cicc"
fi

cd "$dest.tmp/lib"
for versioned in lib*.so.[0-9]*; do
  plain=${versioned%%.so.*}.so
  [ -e "$plain" ] || ln -s "$versioned" "$plain"
done

# Stub driver: every cu* entry point that cuda.h declares (after its _v2
# renaming macros), SONAME libcuda.so.1 so the real driver is loaded at run time.
echo '#include <cuda.h>' | gcc -E -I "$dest.tmp/include" - \
  | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u \
  | sed 's/.*/void &(void) {}/' > cuda_stub.c
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o libcuda.so cuda_stub.c
rm cuda_stub.c

cd - >/dev/null
ln -s lib "$dest.tmp/lib64"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
"$dest/bin/nvcc" --version | tail -2
