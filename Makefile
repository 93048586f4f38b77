# The two commands of README.md: `make serve` and `make test`. Both create .venv and install
# everything they need, so they work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup serve test test-fast web chromium coturn lint-imports bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24"
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

web: setup
	bash scripts/build-web.sh

chromium:
	bash scripts/install-chromium.sh

# Debian's coturn for the TURN tests (they start their own turnserver on loopback ports)
coturn:
	bash scripts/install-coturn.sh

serve: setup web
	$(BIN)/studyrooms serve $(ARGS)

lint-imports: setup
	$(BIN)/lint-imports

test: setup web chromium coturn
	bash scripts/run-tests.sh $(ARGS)

# Everything but the browser and multi-node tests: the quick loop while developing.
test-fast: setup coturn
	$(BIN)/pytest -q -m "not browser and not multinode" $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks.forwarding $(ARGS)

clean:
	rm -rf $(VENV) web/dist web/node_modules .pytest_cache
