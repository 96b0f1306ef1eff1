# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create .venv (Python 3.11+) and install gradlens with pinned CPU torch 2.13.0 via constraints.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench doctor-bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gradlens demo --force

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check gradlens analyses figures tests benchmarks

# GradStats and its peers per step (1 and 2 threads, 79 M-parameter memory), then the science probes' whole-run cost.
bench: $(STAMP)
	$(BIN)/python -m gradlens.bench; status=$$?; $(BIN)/python benchmarks/bench_probes.py && exit $$status

# The doctor's labelled benchmark: tiny runs with the live doctor on, per-symptom precision/recall, live detection delay, time (docs/doctor.md).
doctor-bench: $(STAMP)
	$(BIN)/python -m benchmarks.doctor

clean:
	rm -rf $(VENV) *.egg-info
