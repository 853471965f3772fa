# Gatemesh: the two commands a newcomer needs are `make up` and `make test`.
# Everything they need is installed from the project's own files (pyproject.toml, package.json).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install lock up test lint gen proto-check docs bench clean images deploy-test

# Installs are reproducible: exact versions from requirements.lock, then the project itself
# without resolving anything again. `make lock` rewrites the lock after a dependency change
# (tests/test_lock.py fails while the lock does not cover pyproject.toml).
$(BIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

lock:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python scripts/lock.py > requirements.lock

node_modules/.installed: package.json
	npm install --no-audit --no-fund --silent
	touch $@

install: $(BIN)/.installed node_modules/.installed

## Run the whole mesh locally (all services and the edge) on embedded defaults.
## `make up CONFIG=gatemesh.yaml` (or GATEMESH_CONFIG in the environment) runs it with a config file.
CONFIG ?= $(GATEMESH_CONFIG)
up: $(BIN)/.installed
	$(BIN)/gatemesh $(if $(CONFIG),--config $(CONFIG) )up

## Install everything and run every check and test (what CI runs).
test: install
	bash scripts/test.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Regenerate Python code and the descriptor set from protos/.
gen: $(BIN)/.installed
	$(BIN)/python scripts/gen_protos.py

## Regenerate docs/configuration.md from the settings classes.
docs: $(BIN)/.installed
	$(BIN)/python scripts/config_reference.py

proto-check: install
	bash scripts/proto_check.sh

## Build the container images (gatemesh:dev, gatemesh-infra:dev) with Docker's engine from
## Debian's packages, on a base made here by debootstrap, from wheels built on this machine.
DOCKER := /usr/bin/docker
images: $(BIN)/.installed
	bash deploy/scripts/docker_up.sh
	bash deploy/scripts/base_image.sh
	bash deploy/scripts/wheels.sh
	$(DOCKER) build --network host -q -f deploy/Dockerfile -t gatemesh:dev .
	$(DOCKER) build --network host -q -f deploy/infra/Dockerfile -t gatemesh-infra:dev .

## Run deploy/compose.yaml for real: paid and streamed calls through the containerized edge,
## exact charges, a container restarted (deploy/scripts/deploy_test.py).
deploy-test: images
	$(BIN)/python deploy/scripts/deploy_test.py

clean:
	rm -rf $(VENV) node_modules .gatemesh
