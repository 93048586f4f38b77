# The two commands of README.md: `make serve` and `make test`. Both create .venv and install
# everything they need, so they work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FANOUT := $(VENV)/.fanout-built

.PHONY: setup serve test test-fast web chromium coturn netns-tools lint-imports bench clean

# One progress line per phase on stderr; the installers' output goes to a log file, shown (its
# tail) only when a step fails.
INSTALL_LOG := $(VENV)/install.log
WEB_LOG := web/build.log

$(STAMP): requirements.lock pyproject.toml
	@echo "studyrooms: installing Python packages into $(VENV) (a minute or two the first time; log: $(INSTALL_LOG))..." >&2
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@{ $(BIN)/pip install -q --upgrade "pip>=24" && $(BIN)/pip install -q -r requirements.lock \
	   && $(BIN)/pip install -q --no-deps -e . ; } > $(INSTALL_LOG) 2>&1 \
	 || { tail -n 30 $(INSTALL_LOG) >&2; echo "studyrooms: installing Python packages failed (full log: $(INSTALL_LOG))" >&2; exit 1; }
	@touch $(STAMP)

# The compiled fan-out core (STUDYROOMS_MEDIA_FAST_PATH): gcc + Python headers, built in place.
# A failed build does not stop `make serve` (auto then forwards in pure Python, with one warning);
# the test suite's compiled-path tests fail loudly instead.
$(FANOUT): $(STAMP) studyrooms/media/fanout.c studyrooms/media/ingress.c studyrooms/media/fanout.h studyrooms/media/fanout_build.py
	@if bash scripts/install-build-deps.sh $(BIN)/python && $(BIN)/python -m studyrooms.media.fanout_build; then \
		touch $(FANOUT); \
	else \
		echo "WARNING: the compiled fan-out core did not build: forwarding falls back to pure Python" >&2; \
	fi

setup: $(STAMP) $(FANOUT)

web: setup
	@echo "studyrooms: building the web page (log: $(WEB_LOG))..." >&2
	@bash scripts/build-web.sh > $(WEB_LOG) 2>&1 \
	 || { tail -n 30 $(WEB_LOG) >&2; echo "studyrooms: building the web page failed (full log: $(WEB_LOG))" >&2; exit 1; }

chromium:
	bash scripts/install-chromium.sh

# Debian's coturn for the TURN tests (they start their own turnserver on loopback ports)
coturn:
	bash scripts/install-coturn.sh

# Debian's iproute2 (ip, tc) for the shaped-link browser test (its own netns behind tc tbf)
netns-tools:
	bash scripts/install-netns-tools.sh

serve: setup web
	@$(BIN)/studyrooms serve $(ARGS)

lint-imports: setup
	$(BIN)/lint-imports

test: setup web chromium coturn netns-tools
	bash scripts/run-tests.sh $(ARGS)

# Everything but the browser and multi-node tests: the quick loop while developing.
test-fast: setup coturn
	$(BIN)/pytest -q -m "not browser and not multinode" $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks.forwarding $(ARGS)

clean:
	rm -rf $(VENV) web/dist web/node_modules .pytest_cache studyrooms/media/_fanout*.so
