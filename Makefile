# selfalign developer and quick-start targets. Everything installs into ./.venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# llama-cpp-python compiles llama.cpp on first install (about 4-5 minutes on 2 cores)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# the main job: compare alignment programs on the embedded model (no API key, no network)
demo: install
	$(BIN)/selfalign compare

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check selfalign tests bench tools
	$(BIN)/ruff format --check selfalign tests bench tools

bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) dist build .pytest_cache .ruff_cache
