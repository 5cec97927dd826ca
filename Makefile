# Two commands on a fresh machine: `make dev` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
HOST   ?= 127.0.0.1
PORT   ?= 8000
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: dev test fuzz check lint typecheck bench clean assets

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,test]'
	$(BIN)/deployer assets --test
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# GraphiQL (and, for the tests, the Compose Specification schema): pinned, hash-checked, into vendor/.
assets: $(STAMP)
	$(BIN)/deployer assets --test

# make dev PORT=8123 HOST=0.0.0.0 FRESH=1 (FRESH: no deployments, empty sandbox world)
dev: $(STAMP)
	@$(BIN)/deployer dev --host $(HOST) --port $(PORT) $(if $(filter-out 0 no false,$(FRESH)),--fresh)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fuzz suite with more examples from a random seed (CI runs it from a fixed seed inside `make test`).
# FUZZ_EXAMPLES=<n> per kind (default 5000), FUZZ_SEED=<int> to replay a run.
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),5000) FUZZ_SEED=$(or $(FUZZ_SEED),random) \
		$(BIN)/python -m pytest tests/test_fuzz.py -p no:cacheprovider --timeout=0 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .deployer vendor
