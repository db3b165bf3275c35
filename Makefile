# The two commands: `make run` (a whole lifecycle run) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test smoke bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: setup
	$(BIN)/qoeflow run --dag dags/lifecycle.yaml

smoke: setup
	$(BIN)/qoeflow run --dag dags/smoke.yaml

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

bench: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/orchestration.py --lifecycle
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/planner.py
	$(BIN)/python benchmarks/compression.py
	$(BIN)/python benchmarks/allocator.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/caching.py
	$(BIN)/python benchmarks/bandit.py
	$(BIN)/python benchmarks/qos.py
	$(BIN)/python benchmarks/video.py --project benchmarks/work/lifecycle

clean:
	rm -rf .qoeflow data/smoke
