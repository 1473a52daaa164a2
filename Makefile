# Two commands on a fresh machine (Python 3.11+, pip, Java 17+):
#   make run    the main job on the embedded default (local Spark + local MLflow)
#   make test   the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: run test test-fast lint test-deep bench install java chromium clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "manymodels needs Python 3.10+, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[spark,dev]"
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

java:
	@java -version >/dev/null 2>&1 || { echo "Java 17+ is required by Spark: install a JDK 17 (e.g. apt-get install openjdk-17-jre-headless) and put java on PATH." >&2; exit 1; }

# Headless Chromium for tests/tracking/test_registry_ui.py (the registry page checked as a person sees it):
# Debian's package, installed when missing and we are root; otherwise that test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed (needs root + apt-get): tests/tracking/test_registry_ui.py will skip" >&2

run: install java
	$(BIN)/manymodels main

test: install java chromium
	$(BIN)/python -m pytest -q -ra

# The tiers that need no Spark, no cluster and no subprocess job: unit and MLflow-only tests, about a minute.
test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not spark and not cluster and not slow"

lint: install
	$(BIN)/python -m ruff check src tests bench notebooks

# The property tier (tests/property) with ten times the generated examples, random instead of derandomized.
test-deep: install java
	MM_HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -q -ra tests/property

bench: install java
	$(BIN)/python bench/bench_many_models.py

# Peak driver memory (Python process and JVM) of train, log and score at 5,000 and 20,000 groups.
.PHONY: bench-memory
bench-memory: install java
	$(BIN)/python bench/bench_driver_memory.py

clean:
	rm -rf $(VENV) .manymodels spark-warehouse
