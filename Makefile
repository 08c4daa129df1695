# lungheart-cl: every target creates the environment first if it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= experiments/pretrain_lung_default.yaml
GRID ?= experiments/finetune_grid_default.yaml
ARGS ?=
RUNS ?= runs

.PHONY: setup pretrain finetune test test-slow bench data report paper clean-cache

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

pretrain: $(STAMP)
	$(PY) -m lungheart_cl pretrain --config $(CONFIG) $(ARGS)

# The label-efficiency grid on the newest pretrained encoder (10% and 100% labels, 3 seeds).
finetune: $(STAMP)
	$(PY) -m lungheart_cl sweep $(GRID) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

bench: $(STAMP)
	$(PY) -m lungheart_cl.bench $(ARGS)

# Official archives (needs internet): make data DATASET=icbhi ROOT=data/icbhi
DATASET ?= icbhi
ROOT ?= data/$(DATASET)
data: $(STAMP)
	$(PY) -m lungheart_cl data download --dataset $(DATASET) --root $(ROOT)

# The study's grid (reduced, on the embedded data by default); PAPER=experiments/paper_icbhi.yaml etc. for real data.
PAPER ?= experiments/paper_embedded.yaml
paper: $(STAMP)
	$(PY) -m lungheart_cl sweep $(PAPER) $(ARGS)

report: $(STAMP)
	$(PY) -m lungheart_cl report $(RUNS) $(ARGS)

clean-cache:
	rm -rf cache
