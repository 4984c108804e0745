# One command sets everything up and runs the main job; one sets up and runs the tests.
#   make demo   generate play logs, run the whole pipeline through the TFX CLI, print the result
#   make test   run the test suite

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 1
export PYTHONPATH := $(CURDIR)

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): requirements/lock.txt setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 needed, found " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --no-deps --ignore-requires-python -r requirements/lock.txt --require-hashes
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest tests

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

clean:
	rm -rf $(VENV) playrecall_home
