# The README's two set-up commands.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python

.PHONY: install demo test test-fast clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[test]'
	touch $@

install: $(VENV)/.installed

# main job: the full pipeline of the default method on the synthetic mini-VOC (CPU, ~10 min)
demo: install
	$(PY) scripts/run_pipeline.py --config configs/demo/demo_synthetic.yaml

# the whole test suite (what CI runs)
test: install
	$(PY) -m pytest -q

# everything but the end-to-end runs
test-fast: install
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf work_dirs data/synthetic_voc
