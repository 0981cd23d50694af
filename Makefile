# The README's two commands: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format install clean soak

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[edge,train,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/smartbin demo --out demo-output

test: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) demo-output test-artifacts

# Not in CI: runs the daemon for SOAK_MINUTES and reports RSS, open files and outbox size over time.
SOAK_MINUTES ?= 10
soak: $(STAMP)
	$(BIN)/smartbin dataset synth --out soak-output/data --classes 4 --per-class 24 --size 80
	$(BIN)/python -c "from convert.model import write_stand_in_weights as w; w('soak-output/w.weights.h5', 64)"
	$(BIN)/smartbin train --data soak-output/data --out soak-output/run --weights soak-output/w.weights.h5 \
		--img-size 64 --epochs 20 --val-fraction 0.25
	$(BIN)/smartbin convert soak-output/run --out soak-output/bundle --variants int8
	$(BIN)/python tests/soak.py --bundle soak-output/bundle --minutes $(SOAK_MINUTES)
