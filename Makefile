# privstudy: two commands on a fresh machine with Python 3.11:
#   make demo   create .venv, install, run jobs/demo.yaml on built-in data, aggregate
#   make test   install the test extra and run the tests
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint format test-real-data test-slurm venv check-python bench clean-demo

check-python:
	@v=$$($(PYTHON) -c 'import platform; print(platform.python_version())' 2>/dev/null) || { echo "error: '$(PYTHON)' does not run; privstudy needs Python 3.11 (TensorFlow 2.15 has no wheels for 3.12+): install it, or run make PYTHON=/path/to/python3.11 ..." >&2; exit 2; }; \
	case "$$v" in 3.11.*) ;; *) echo "error: '$(PYTHON)' is Python $$v; privstudy needs 3.11 (TensorFlow 2.15 has no wheels for 3.12+): run make PYTHON=/path/to/python3.11 ..." >&2; exit 2;; esac

$(BIN)/privstudy: setup.cfg pyproject.toml | check-python
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

venv: $(BIN)/privstudy

demo: venv
	rm -rf results/demo
	$(BIN)/privstudy sweep jobs/demo.yaml --results results
	$(BIN)/python analysis/aggregate.py results/demo
	@echo
	@echo "demo done: report results/demo/report.md, tables results/demo/tables/, figures results/demo/figures/"

test: venv
	$(BIN)/python -m pytest -m "not real_data and not slurm" $(PYTEST_ARGS)

# ruff: lint rules and formatting (configured in pyproject.toml); `make format` rewrites the files.
LINTED := src tests benchmarks analysis
lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: venv
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

# pytest exits 5 when it selects no test (e.g. no real-data test exists for a kind yet): not a failure.
test-real-data: venv
	$(BIN)/python -m pytest -m real_data $(PYTEST_ARGS); s=$$?; [ $$s -eq 5 ] && exit 0; exit $$s

# Needs a reachable Slurm controller, e.g. `sudo slurm/local-cluster/up.sh && source /tmp/privstudy-slurm/env.sh`.
test-slurm: venv
	$(BIN)/python -m pytest -m slurm $(PYTEST_ARGS)

bench: venv
	$(BIN)/python benchmarks/bench_linprog.py
	$(BIN)/python benchmarks/bench_cnn.py
	$(BIN)/python benchmarks/bench_mia.py
	$(BIN)/python benchmarks/bench_attack_stage.py
	$(BIN)/python benchmarks/bench_dp.py
	$(BIN)/python benchmarks/bench_sisa.py
	$(BIN)/python benchmarks/bench_unlearn.py
	$(BIN)/python benchmarks/bench_mlm.py
