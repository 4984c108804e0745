# One command sets everything up and runs the main job; one sets up and runs the tests.
#   make demo   generate play logs, run the whole pipeline through the TFX CLI, print the result
#   make test   run the test suite
#   make image-test  build the pipeline image (podman) and run every Kubeflow task in it (slow; not
#                    part of `make test`): k8s/image_test/

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 1
export PYTHONPATH := $(CURDIR)

.PHONY: install test demo clean image-test

install: $(STAMP)

# The runtime lock (what the pipeline image installs too), then the test and development lock.
$(STAMP): requirements/lock.txt requirements/test-lock.txt setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 needed, found " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --no-deps --ignore-requires-python -r requirements/lock.txt --require-hashes
	$(BIN)/pip install --no-deps --ignore-requires-python -r requirements/test-lock.txt --require-hashes
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

# One worker process per core; a test module runs whole in one worker, so the fixtures its tests
# chain (the end-to-end runs above all) are built once.
TEST_WORKERS ?= auto
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# Builds k8s/Dockerfile with podman on a stand-in base and runs the whole compiled Kubeflow
# pipeline in it, task by task (docs/kubeflow.md, "The image test"). Needs root and apt-get.
image-test: install
	bash k8s/image_test/setup_host.sh
	$(BIN)/python -m k8s.image_test.run_pipeline

clean:
	rm -rf $(VENV) playrecall_home
