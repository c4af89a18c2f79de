# The two commands (see README): `make demo` and `make test`. Both set up .venv first, idempotently.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.molfed-installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180

.PHONY: setup browser demo test lint bench bench-large bench-sites clean

setup: $(STAMP)

# torch is installed first and pinned: torch==2.13.0 is a CPU build on this disk; the project's own requirement
# is a range that 2.13.0 satisfies, so pip never swaps in a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q selenium  # the real-browser test (tests/integration/test_ui_browser.py)
	@$(MAKE) --no-print-directory browser
	$(BIN)/molfed init  # Prefect's database migrations once, into a template new PREFECT_HOMEs start from
	@touch $@

# Debian's headless chromium + chromedriver for the browser test; where they cannot be installed (no apt, not root)
# the test is skipped and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
		|| (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null) \
		|| echo "chromium not installed: the browser test will be skipped"; \
	else echo "no apt-get as root: install chromium and chromium-driver for the browser test"; fi

demo: setup
	PREFECT_HOME=$(CURDIR)/.prefect $(BIN)/molfed demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check molfed tasks flows tests bench
	$(BIN)/mypy

# Every issue-5 target's figure next to its reference, measured side by side (see bench/*.py docstrings).
# Takes several minutes (mostly the 4 fresh-process federation runs of bench/overhead.py and the 6 federations of
# bench/scaling.py).
bench: setup
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/featurize.py
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/throughput.py
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/large.py 20000 --chunk 5000
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/overhead.py --rounds 10 30
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/scaling.py --partners 5 10 20 --rounds 5

# Target 3 at full size: a 1,000,000-molecule library (generated, not committed); tens of minutes.
bench-large: setup
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/large.py 1000000 --workers 2

# Sites mode next to local mode (issue 15's targets): servers and 3 site agents on loopback; ~15 min.
bench-sites: setup
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/sites.py --rounds 10 --repeat 2

clean:
	rm -rf mlruns/mlflow.db mlruns/artifacts .prefect workspaces demo_data
