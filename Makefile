# The two commands a newcomer needs: `make run` (install + demo on :5000) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CATALOGS := $(wildcard web/translations/*/LC_MESSAGES/messages.po)
VENDOR := web/static/vendor

.PHONY: run test install lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pybabel -q compile -d web/translations
	touch $(STAMP)

# Translations: the .mo files are built, never committed (recompiled when a .po changes).
web/translations/%/LC_MESSAGES/messages.mo: web/translations/%/LC_MESSAGES/messages.po | $(STAMP)
	$(BIN)/pybabel -q compile -d web/translations -l $*

# bpmn-js (optional): the diagram viewer for the task and designer pages, the designer's modeler with
# its icon font, and the Camunda moddle descriptor (camunda:formKey, assignee... typed in the modeler).
# Without them task pages list the process steps and the designer offers upload instead of drawing.
$(VENDOR)/bpmn-navigated-viewer.production.min.js: package.json
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "note: npm not found: no diagrams (task pages list the steps) and no modeler (upload BPMN instead)"; \
	elif npm install --no-audit --no-fund --loglevel=error && mkdir -p $(VENDOR) && \
	     cp node_modules/bpmn-js/dist/bpmn-navigated-viewer.production.min.js \
	        node_modules/bpmn-js/dist/bpmn-modeler.production.min.js \
	        node_modules/bpmn-js/dist/assets/diagram-js.css node_modules/bpmn-js/dist/assets/bpmn-js.css $(VENDOR)/ && \
	     rm -rf $(VENDOR)/bpmn-font && cp -R node_modules/bpmn-js/dist/assets/bpmn-font $(VENDOR)/ && \
	     cp node_modules/camunda-bpmn-moddle/resources/camunda.json $(VENDOR)/camunda-moddle.json; then \
	  touch $@; echo "bpmn-js viewer and modeler copied to $(VENDOR)/"; \
	else \
	  echo "note: npm install failed: no diagrams (task pages list the steps) and no modeler (upload BPMN instead)"; \
	fi

install: $(STAMP) $(CATALOGS:.po=.mo) $(VENDOR)/bpmn-navigated-viewer.production.min.js

## make run: install into .venv, create the database, deploy processes/, load samples/, serve on :5000
run: install
	$(BIN)/baton demo --host $${HOST:-127.0.0.1} --port $${PORT:-5000}

## make test: install, make sure PostgreSQL is up when this machine has it (and Chromium for the
## browser tests), run the whole suite
test: install
	@bash scripts/ensure-postgres.sh
	@bash scripts/ensure-chromium.sh
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m bench.approval $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache
