# The two commands of the README, plus helpers. Each creates the venv first.
VENV  ?= .venv
PY    := $(VENV)/bin/python
CORES ?= 2
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv demo test lint dry-run clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

## demo: the whole pipeline on the bundled digits data (~4 min on 2 CPU cores)
demo: venv
	snakemake --cores $(CORES) --configfile config/demo.yaml
	@echo; cat results/digits/report/comparison.md

## test: the whole test suite (CPU; GPU tests skip without CUDA)
test: venv
	$(PY) -m pytest

lint: venv
	snakemake --lint
	snakemake --lint --configfile config/demo.yaml

dry-run: venv
	snakemake -n
	snakemake -n --configfile config/demo.yaml

clean:
	rm -rf results logs .snakemake
