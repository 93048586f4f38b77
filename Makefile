# The two commands of README.md: `make serve` and `make test`. Both create .venv and install
# everything they need, so they work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FANOUT := $(VENV)/.fanout-built

.PHONY: setup serve test test-fast web chromium lint-imports bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24"
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

# The compiled fan-out core (STUDYROOMS_MEDIA_FAST_PATH): gcc + Python headers, built in place.
# A failed build does not stop `make serve` (auto then forwards in pure Python, with one warning);
# the test suite's compiled-path tests fail loudly instead.
$(FANOUT): $(STAMP) studyrooms/media/fanout.c studyrooms/media/fanout.h studyrooms/media/fanout_build.py
	@if bash scripts/install-build-deps.sh $(BIN)/python && $(BIN)/python -m studyrooms.media.fanout_build; then \
		touch $(FANOUT); \
	else \
		echo "WARNING: the compiled fan-out core did not build: forwarding falls back to pure Python" >&2; \
	fi

setup: $(STAMP) $(FANOUT)

web: setup
	bash scripts/build-web.sh

chromium:
	bash scripts/install-chromium.sh

serve: setup web
	$(BIN)/studyrooms serve $(ARGS)

lint-imports: setup
	$(BIN)/lint-imports

test: setup web chromium
	bash scripts/run-tests.sh $(ARGS)

# Everything but the browser and multi-node tests: the quick loop while developing.
test-fast: setup
	$(BIN)/pytest -q -m "not browser and not multinode" $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks.forwarding $(ARGS)

clean:
	rm -rf $(VENV) web/dist web/node_modules .pytest_cache studyrooms/media/_fanout*.so
