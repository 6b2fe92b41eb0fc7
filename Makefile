# The two commands a newcomer needs: `make run` (install + demo on :5000) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## make run: install into .venv, create the database, deploy processes/, load samples/, serve on :5000
run: install
	$(BIN)/baton demo --host $${HOST:-127.0.0.1} --port $${PORT:-5000}

## make test: install, make sure PostgreSQL is up when this machine has it, run the whole suite
test: install
	@bash scripts/ensure-postgres.sh
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m bench.approval $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache
