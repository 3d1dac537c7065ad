# Front door: `make demo` runs the main job on embedded defaults, `make test` passes every test
# from a fresh machine. Everything the tests need is installed here, never by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUBS := $(VENV)/fw-stubs
STAMP := $(VENV)/.installed
JOBS ?= 2
# benchmarks/firmware_heap_32bit.py measures the heap on a 32-bit MicroPython: the webassembly
# port, from npm, in build/wasm32.
WASM32_VERSION := 1.29.0-6
WASM32_STAMP := build/wasm32/.installed-$(WASM32_VERSION)

.PHONY: setup demo test lint format bench soak clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v mosquitto >/dev/null && command -v socat >/dev/null || { \
		echo "installing mosquitto and socat (Debian packages)"; \
		apt-get update -qq && apt-get install -y -qq mosquitto socat >/dev/null; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,server]'
	$(BIN)/pip install -q --upgrade --target $(STUBS) micropython-esp32-stubs
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m simulator.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright -p pyrightconfig.firmware.json

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest -n $(JOBS) --durations=15

$(WASM32_STAMP):
	@command -v npm >/dev/null || { \
		echo "npm is missing: benchmarks/firmware_heap_32bit.py needs Node.js 20+ and npm"; exit 1; }
	npm install --prefix build/wasm32 --no-save --no-audit --no-fund \
		@micropython/micropython-webassembly-pyscript@$(WASM32_VERSION)
	touch $@

bench: $(STAMP) $(WASM32_STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
